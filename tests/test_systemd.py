"""systemd socket activation (`listen_fds`) and readiness notification (`notify`).

`listen_fds` is tested in child processes, because it adopts fds 3, 4, ...
of the process that calls it. The children are started two ways: by the
real ``systemd-socket-activate`` (Debian's ``systemd`` package; those tests
are skipped without it), and by `inheriting`, which hands the child sockets
made here and sets ``LISTEN_*`` itself, for the cases the tool cannot make.
Both run `CHILD`, which reports what it got on one stderr line, then echoes
one line on each socket. Every wait is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _proc import PYTHON, TIMEOUT, ServerProcess, needs_tool

import tornado_echo
from tornado_echo.systemd import ActivationError, listen_fds, notify

ACTIVATOR = shutil.which("systemd-socket-activate")

needs_activator = needs_tool("systemd-socket-activate", "systemd")

#: Where the child imports tornado_echo from: the tree under test.
SOURCE_ROOT = str(Path(tornado_echo.__file__).resolve().parent.parent)

#: Run as ``python -c CHILD CONFIG``. It moves the fds listed in CONFIG's
#: "move" to 3, 4, ... and fills in ``LISTEN_PID=self`` (so `inheriting` can
#: act like an activator), calls `listen_fds`, prints ``REPORT {json}`` or
#: ``ERROR {json}`` on stderr, and echoes one line on each socket it got.
CHILD = r"""
import fcntl, json, os, socket, sys

config = json.loads(sys.argv[1])
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in config["move"]]
for fd in config["move"]:
    os.close(fd)
for target, fd in enumerate(moved, 3):
    os.dup2(fd, target)
    os.close(fd)
if os.environ.get("LISTEN_PID") == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())

from tornado_echo.systemd import ActivationError, listen_fds

def fd_state(fd):
    try:
        return {"open": True, "inheritable": os.get_inheritable(fd)}
    except OSError:
        return {"open": False, "inheritable": None}

def state():
    return {
        "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
        "fds": {fd: fd_state(fd) for fd in (3, 4)},
    }

try:
    pairs = listen_fds(unset_environment=not config["keep_env"])
except ActivationError as e:
    print("ERROR", json.dumps({"message": str(e), **state()}), file=sys.stderr)
    sys.exit(3)
sockets = [
    {
        "name": name,
        "fd": sock.fileno(),
        "family": sock.family.name,
        "type": sock.type.name,
        "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1,
        "blocking": sock.getblocking(),
        "inheritable": sock.get_inheritable(),
        "address": sock.getsockname(),
    }
    for name, sock in pairs
]
print("REPORT", json.dumps({"sockets": sockets, **state()}), file=sys.stderr)
sys.stderr.flush()
for _, sock in pairs:
    sock.settimeout(float(config["timeout"]))
    conn, _ = sock.accept()
    with conn:
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1024)
            if not chunk:
                break
            line += chunk
        conn.sendall(line)
    sock.close()
"""


def child_command(move: Sequence[int] = (), keep_env: bool = False) -> list[str]:
    config = {"move": list(move), "keep_env": keep_env, "timeout": TIMEOUT}
    return [*PYTHON, "-c", CHILD, json.dumps(config)]


def parse_outcome(stderr: str) -> tuple[str, dict[str, Any]]:
    """``("REPORT", ...)`` or ``("ERROR", ...)`` from the child's stderr."""
    for line in stderr.splitlines():
        kind, _, payload = line.partition(" ")
        if kind in ("REPORT", "ERROR"):
            return kind, json.loads(payload)
    raise AssertionError(f"the child printed no REPORT or ERROR line:\n{stderr}")


def report(stderr: str) -> dict[str, Any]:
    kind, outcome = parse_outcome(stderr)
    assert kind == "REPORT", f"listen_fds raised in the child: {outcome}"
    return outcome


def error(stderr: str) -> dict[str, Any]:
    kind, outcome = parse_outcome(stderr)
    assert kind == "ERROR", f"listen_fds did not raise in the child: {outcome}"
    return outcome


def summary(outcome: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(s["name"], s["fd"], s["family"]) for s in outcome["sockets"]]


def assert_served_properly(outcome: dict[str, Any]) -> None:
    """Every socket is a listening stream socket, non-blocking, close-on-exec."""
    for sock in outcome["sockets"]:
        assert sock["type"] == "SOCK_STREAM"
        assert sock["listening"], sock
        assert not sock["blocking"], sock
        assert not sock["inheritable"], sock
    assert outcome["env_left"] == []


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for AF_UNIX paths (pytest's tmp_path can pass 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="te-sd-") as path:
        yield Path(path)


def connect(address: str | tuple[str, int]) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        line += chunk
    return line


def free_port() -> int:
    """A loopback port that was free a moment ago (it may be taken again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the real systemd-socket-activate ---------------------------------------


@contextlib.contextmanager
def activator(
    listen: Sequence[str], *options: str, move_ports: bool = False
) -> Iterator[tuple[ServerProcess, list[str]]]:
    """Run CHILD under systemd-socket-activate, listening on ``listen``.

    Yields once the tool says it listens on every address (it execs the
    child only when the first connection or datagram arrives), with the
    addresses; ``"tcp"`` in ``listen`` becomes a free ``127.0.0.1:PORT``.
    Picking a free port races with other processes, so that is retried.
    """
    assert ACTIVATOR is not None
    for attempt in range(3):
        addresses = [f"127.0.0.1:{free_port()}" if a == "tcp" else a for a in listen]
        argv = [
            ACTIVATOR,
            *(f"--listen={address}" for address in addresses),
            *options,
            # It passes the child only PATH, HOME, TERM and USER, and what -E names.
            f"--setenv=PYTHONPATH={SOURCE_ROOT}",
            *child_command(),
        ]
        proc = ServerProcess(argv)
        try:
            try:
                for fd in range(3, 3 + len(addresses)):
                    proc.wait_for_line(rf"^Listening on .* as {fd}\.$")
            except AssertionError:
                if attempt < 2 and "Address already in use" in "\n".join(proc.lines):
                    continue
                raise
            yield proc, addresses
            return
        finally:
            proc.close()
    raise AssertionError("unreachable")


def tcp(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@needs_activator
def test_activator_unix_socket_arrives_named_listening_and_echoes(
    socket_dir: Path,
) -> None:
    path = str(socket_dir / "echo.sock")
    with activator([path], "--fdname=echo") as (proc, _):
        with connect(path) as client:  # the first connection starts the child
            outcome = report(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
            client.sendall(b"through the inherited socket\n")
            assert read_line(client) == b"through the inherited socket\n"
        assert proc.wait() == 0, proc.stderr()
    assert summary(outcome) == [("echo", 3, "AF_UNIX")]
    assert outcome["sockets"][0]["address"] == path
    assert_served_properly(outcome)


@needs_activator
def test_activator_tcp_socket_arrives_and_echoes() -> None:
    with activator(["tcp"], "--fdname=echo") as (proc, [address]):
        with connect(tcp(address)) as client:
            outcome = report(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
            client.sendall(b"over tcp\n")
            assert read_line(client) == b"over tcp\n"
        assert proc.wait() == 0, proc.stderr()
    assert summary(outcome) == [("echo", 3, "AF_INET")]
    assert tuple(outcome["sockets"][0]["address"]) == tcp(address)
    assert_served_properly(outcome)


@needs_activator
def test_activator_names_line_up_with_fds_in_listen_order(socket_dir: Path) -> None:
    # One --fdname per -l; "--fdname=first:second" says the same.
    path = str(socket_dir / "first.sock")
    with activator([path, "tcp"], "--fdname=first", "--fdname=second") as (
        proc,
        [_, address],
    ):
        with connect(path) as first, connect(tcp(address)) as second:
            outcome = report(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
            first.sendall(b"one\n")
            second.sendall(b"two\n")
            assert read_line(first) == b"one\n"
            assert read_line(second) == b"two\n"
        assert proc.wait() == 0, proc.stderr()
    assert summary(outcome) == [("first", 3, "AF_UNIX"), ("second", 4, "AF_INET")]
    assert_served_properly(outcome)


@needs_activator
def test_activator_without_fdname_names_every_socket_unknown(
    socket_dir: Path,
) -> None:
    paths = [str(socket_dir / "a.sock"), str(socket_dir / "b.sock")]
    with activator(paths) as (proc, _):
        with connect(paths[0]) as a, connect(paths[1]) as b:
            outcome = report(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
            a.sendall(b"a\n")
            b.sendall(b"b\n")
            assert (read_line(a), read_line(b)) == (b"a\n", b"b\n")
        assert proc.wait() == 0, proc.stderr()
    assert summary(outcome) == [("unknown", 3, "AF_UNIX"), ("unknown", 4, "AF_UNIX")]


@needs_activator
def test_activator_datagram_socket_is_rejected_with_advice(socket_dir: Path) -> None:
    path = str(socket_dir / "dgram.sock")
    with activator([path], "--datagram", "--fdname=echo") as (proc, _):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"wake up\n", path)  # starts the child
        outcome = error(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
        assert proc.wait() == 3, proc.stderr()
    assert outcome["message"] == (
        "socket-activated fd 3 ('echo') is not a listening stream socket "
        "(it is a datagram socket); use ListenStream= with Accept=no in the "
        ".socket unit."
    )
    assert outcome["env_left"] == []


@needs_activator
def test_activator_accept_mode_connection_is_rejected_with_advice(
    socket_dir: Path,
) -> None:
    path = str(socket_dir / "accept.sock")
    # --accept is Accept=yes: each connection goes to a new child as fd 3.
    with activator([path], "--accept") as (proc, _), connect(path):
        outcome = error(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
    assert outcome["message"] == (
        "socket-activated fd 3 ('unknown') is not a listening stream socket "
        "(it is a connected stream socket, as Accept=yes passes); use "
        "ListenStream= with Accept=no in the .socket unit."
    )


@needs_activator
def test_activator_with_more_names_than_sockets_is_rejected(socket_dir: Path) -> None:
    # The tool only warns about this, and passes LISTEN_FDNAMES=a:b anyway.
    path = str(socket_dir / "names.sock")
    with activator([path], "--fdname=a:b") as (proc, _):
        with connect(path):
            outcome = error(proc.wait_for_line(r"^(REPORT|ERROR) ").string)
        assert proc.wait() == 3, proc.stderr()
    assert outcome["message"] == (
        "LISTEN_FDNAMES='a:b' has 2 name(s) for 1 socket(s); "
        "give the activator exactly one name per socket."
    )
    assert outcome["env_left"] == []


# --- sockets handed over by hand --------------------------------------------


def inheriting(
    fds: Sequence[int], keep_env: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run CHILD with ``fds`` moved to 3, 4, ... and ``env`` added.

    ``LISTEN_PID="self"`` becomes the child's own pid, as an activator sets it.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    environ["PYTHONPATH"] = SOURCE_ROOT
    proc = subprocess.Popen(
        child_command(move=fds, keep_env=keep_env),
        env=environ | env,
        pass_fds=fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@contextlib.contextmanager
def listener(
    family: socket.AddressFamily, socket_dir: Path
) -> Iterator[tuple[socket.socket, Any]]:
    """A listening socket of ``family`` and the address to connect to."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if family == socket.AF_UNIX:
            sock.bind(str(socket_dir / f"{uuid.uuid4().hex[:8]}.sock"))
        else:
            sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock, sock.getsockname()


def test_inherited_sockets_come_back_in_fd_order_with_names_and_echo(
    socket_dir: Path,
) -> None:
    with (
        listener(socket.AF_UNIX, socket_dir) as (unix, unix_address),
        listener(socket.AF_INET, socket_dir) as (inet, inet_address),
        # Connected before the child starts: they wait in the backlogs.
        connect(unix_address) as first,
        connect(inet_address) as second,
    ):
        first.sendall(b"one\n")
        second.sendall(b"two\n")
        result = inheriting(
            [unix.fileno(), inet.fileno()],
            LISTEN_PID="self",
            LISTEN_FDS="2",
            LISTEN_FDNAMES="first:second",
        )
        assert result.returncode == 0, result.stderr
        assert (read_line(first), read_line(second)) == (b"one\n", b"two\n")
    outcome = report(result.stderr)
    assert summary(outcome) == [("first", 3, "AF_UNIX"), ("second", 4, "AF_INET")]
    assert_served_properly(outcome)


def test_sockets_without_fdnames_are_named_unknown(socket_dir: Path) -> None:
    with (
        listener(socket.AF_INET, socket_dir) as (sock, address),
        connect(address) as client,
    ):
        client.sendall(b"x\n")
        result = inheriting([sock.fileno()], LISTEN_PID="self", LISTEN_FDS="1")
        assert result.returncode == 0, result.stderr
        assert read_line(client) == b"x\n"
    assert summary(report(result.stderr)) == [("unknown", 3, "AF_INET")]


def test_sockets_for_another_pid_are_left_alone_and_variables_unset(
    socket_dir: Path,
) -> None:
    with listener(socket.AF_INET, socket_dir) as (sock, _):
        # As if inherited from an activated parent that did not unset them.
        result = inheriting(
            [sock.fileno()],
            LISTEN_PID=str(os.getpid()),
            LISTEN_FDS="1",
            LISTEN_FDNAMES="echo",
        )
    assert result.returncode == 0, result.stderr
    outcome = report(result.stderr)
    assert outcome["sockets"] == []
    assert outcome["env_left"] == []
    assert outcome["fds"]["3"] == {"open": True, "inheritable": True}


def test_without_listen_pid_no_sockets_are_taken(socket_dir: Path) -> None:
    with listener(socket.AF_INET, socket_dir) as (sock, _):
        result = inheriting([sock.fileno()], LISTEN_FDS="1")
    outcome = report(result.stderr)
    assert outcome["sockets"] == []
    assert outcome["fds"]["3"] == {"open": True, "inheritable": True}


def test_unset_environment_false_keeps_the_variables(socket_dir: Path) -> None:
    with (
        listener(socket.AF_INET, socket_dir) as (sock, address),
        connect(address) as client,
    ):
        client.sendall(b"x\n")
        result = inheriting(
            [sock.fileno()],
            keep_env=True,
            LISTEN_PID="self",
            LISTEN_FDS="1",
            LISTEN_FDNAMES="echo",
        )
        assert read_line(client) == b"x\n"
    outcome = report(result.stderr)
    assert summary(outcome) == [("echo", 3, "AF_INET")]
    assert outcome["env_left"] == ["LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID"]


@contextlib.contextmanager
def not_listening(kind: str) -> Iterator[int]:
    """An fd of ``kind`` that a stream server cannot accept connections on."""
    with contextlib.ExitStack() as stack:
        if kind == "pipe":
            read_end, write_end = os.pipe()
            stack.callback(os.close, read_end)
            stack.callback(os.close, write_end)
            yield read_end
            return
        if kind == "udp":
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", 0))
        elif kind == "seqpacket":
            sock = stack.enter_context(
                socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            )
            sock.bind("")  # autobind: an abstract address
            sock.listen()
        elif kind == "unbound tcp":
            sock = stack.enter_context(socket.socket())
        else:
            assert kind == "connected stream"
            sock, peer = socket.socketpair()
            stack.enter_context(sock)
            stack.enter_context(peer)
        yield sock.fileno()


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("udp", "it is a datagram socket"),
        ("seqpacket", "it is a sequential-packet socket"),
        ("unbound tcp", "it is a stream socket that is not listening"),
        ("connected stream", "it is a connected stream socket, as Accept=yes passes"),
        ("pipe", "it is not a socket"),
    ],
)
def test_fd_that_is_not_a_listening_stream_socket_is_rejected_with_advice(
    kind: str, problem: str
) -> None:
    with not_listening(kind) as fd:
        result = inheriting(
            [fd], LISTEN_PID="self", LISTEN_FDS="1", LISTEN_FDNAMES="echo"
        )
    assert result.returncode == 3, result.stderr
    outcome = error(result.stderr)
    assert outcome["message"] == (
        f"socket-activated fd 3 ('echo') is not a listening stream socket "
        f"({problem}); use ListenStream= with Accept=no in the .socket unit."
    )
    assert outcome["env_left"] == []
    # Left open for the caller, as found; only close-on-exec is set.
    assert outcome["fds"]["3"] == {"open": True, "inheritable": False}


def test_bad_second_socket_is_named_and_both_fds_stay_open(socket_dir: Path) -> None:
    with (
        listener(socket.AF_INET, socket_dir) as (good, _),
        not_listening("udp") as bad,
    ):
        result = inheriting(
            [good.fileno(), bad],
            LISTEN_PID="self",
            LISTEN_FDS="2",
            LISTEN_FDNAMES="good:bad",
        )
    outcome = error(result.stderr)
    assert "fd 4 ('bad') is not a listening stream socket" in outcome["message"]
    assert outcome["fds"]["3"]["open"] and outcome["fds"]["4"]["open"]


def test_fewer_fds_than_listen_fds_says_which_is_missing(socket_dir: Path) -> None:
    with listener(socket.AF_INET, socket_dir) as (sock, _):
        result = inheriting([sock.fileno()], LISTEN_PID="self", LISTEN_FDS="2")
    outcome = error(result.stderr)
    assert outcome["message"] == (
        "LISTEN_FDS=2 but fd 4 is not open; "
        "the activator must pass that many sockets, from fd 3 on."
    )
    assert outcome["env_left"] == []


# --- the environment, in this process ----------------------------------------
# Each of these fails before fds are touched, so they cannot take this
# process's fd 3.


@pytest.fixture
def no_activation(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_outside_systemd_there_are_no_sockets(
    no_activation: pytest.MonkeyPatch,
) -> None:
    assert listen_fds() == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LISTEN_PID": "abc", "LISTEN_FDS": "1"},
            "LISTEN_PID='abc' is not a process id",
        ),
        ({"LISTEN_PID": "0", "LISTEN_FDS": "1"}, "LISTEN_PID='0' is not a process id"),
        ({"LISTEN_FDS": "x"}, "LISTEN_FDS='x' is not a positive number of sockets"),
        ({"LISTEN_FDS": "0"}, "LISTEN_FDS='0' is not a positive number of sockets"),
        ({"LISTEN_FDS": "-1"}, "LISTEN_FDS='-1' is not a positive number of sockets"),
        ({"LISTEN_FDS": " 1"}, "LISTEN_FDS=' 1' is not a positive number of sockets"),
        (
            {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
            "LISTEN_FDNAMES='a:b' has 2 name(s) for 1 socket(s)",
        ),
        (
            {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"},
            "LISTEN_FDNAMES='a' has 1 name(s) for 2 socket(s)",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_FDNAMES": ""},
            "LISTEN_FDNAMES='' has 0 name(s) for 1 socket(s)",
        ),
    ],
)
def test_malformed_variables_raise_one_sentence_and_are_still_unset(
    no_activation: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    no_activation.setenv("LISTEN_PID", str(os.getpid()))
    for name, value in env.items():
        no_activation.setenv(name, value)
    with pytest.raises(ActivationError) as caught:
        listen_fds()
    text = str(caught.value)
    assert text.startswith(message)
    assert text.endswith(".") and "\n" not in text
    assert not any(name.startswith("LISTEN_") for name in os.environ)


# --- notify -------------------------------------------------------------------


@contextlib.contextmanager
def receiver(address: str) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(TIMEOUT)
        yield sock


def test_notify_sends_the_states_as_one_datagram_to_a_socket_path(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(socket_dir / "notify")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1", "STATUS=x") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=x"


def test_notify_reaches_an_abstract_socket_named_with_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"tornado-echo-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_notify_encodes_states_as_utf8(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(socket_dir / "notify")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("STATUS=serving naïvely") is True
        assert sock.recv(4096) == "STATUS=serving naïvely".encode()


def test_notify_keeps_notify_socket_so_stopping_can_follow_ready(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(socket_dir / "notify")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1") is True
        assert notify("STOPPING=1") is True
        assert os.environ["NOTIFY_SOCKET"] == path
        assert [sock.recv(4096), sock.recv(4096)] == [b"READY=1", b"STOPPING=1"]


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_notify_outside_systemd_returns_false_quietly(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    with caplog.at_level(logging.DEBUG):
        assert notify("READY=1") is False
    assert caplog.records == []


def test_notify_to_a_missing_socket_logs_one_warning_and_returns_false(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(socket_dir / "gone")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with caplog.at_level(logging.DEBUG):
        assert notify("STOPPING=1") is False
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("tornado_echo", logging.WARNING)
    ]
    assert path in caplog.records[0].getMessage()
