"""examples/kv_server.py against the real memcached, byte for byte.

One scripted conversation (`STEPS`) is played against a fresh ``memcached``
subprocess and against the server under test; every step's reply must be
identical, except the few steps in `EXEMPT`. The server under test is
pluggable (`TARGETS`): ``memcached`` plays the script against a second fresh
memcached, which checks that the harness and the script are deterministic;
``kv_server`` plays it against ``KVServer``.

Replies are delimited without timing: each step is followed, in the same
write, by `SYNC`, a ``set`` and a ``get`` of a reserved key with a marker
value, and the step's reply is everything before `SYNC_REPLY`. The sync
``set`` is stored again after every step, so a step that flushes or deletes
everything cannot break it; the price is that every step also uses one cas
unique, identically on both sides. A server that closes the connection
after a step (``quit``, an overlong line) is recorded as `CLOSED` and the
script continues on a new connection; a step without a complete reply within
`STEP_TIMEOUT` is recorded as `NO_REPLY`, and the script continues the same
way, so one bad step shows as one difference rather than a hang.

Run this module as a script (``python tests/test_kv_memcached_diff.py``) to
print the real memcached's transcript of the script.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _proc
import pytest
from conftest import Start, load_example

pytestmark = _proc.needs_tool("memcached", "memcached")

kv = load_example("kv_server")

HOST = "127.0.0.1"

#: The flags every memcached runs with: loopback only, no UDP, memcached's
#: default 64 MiB of memory and 1 MiB items, one worker thread, and no
#: background LRU threads. Those take brief references to items, and incr or
#: decr rewrites a number in place (space-padded) only if nothing else holds
#: the item: with them, whether a shorter number came back padded varied from
#: run to run (about one run in three).
MEMCACHED_FLAGS = (
    *("-l", HOST, "-U", "0", "-m", "64", "-I", "1m", "-t", "1"),
    *("-o", "no_lru_crawler,no_lru_maintainer"),
)

#: The most one step may take, reply included, before it counts as NO_REPLY.
STEP_TIMEOUT = 5.0

# No "-" in it: see the wrap-around steps at the start of STEPS.
SYNC_VALUE = b"sync:9f4c1e0b.end.of.step"
SYNC = b"set __sync__ 0 0 %d\r\n%s\r\nget __sync__\r\n" % (len(SYNC_VALUE), SYNC_VALUE)
SYNC_REPLY = b"STORED\r\nVALUE __sync__ 0 %d\r\n%s\r\nEND\r\n" % (
    len(SYNC_VALUE),
    SYNC_VALUE,
)
#: Appended to a step's reply when the server closed the connection after it.
CLOSED = b"<closed by server>"
#: Appended to a step's reply when the sync reply did not arrive in time.
NO_REPLY = b"<no complete reply>"

#: In a step, stands for the cas unique of the last item in the latest reply
#: that had one, so the script need not hard-code how a server counts.
LAST_CAS = b"LAST_CAS"
UNIQUE = re.compile(rb"^VALUE [^ ]+ \d+ \d+ (\d+)\r$", re.MULTILINE)


# --- the script --------------------------------------------------------------


def store(command: str, value: bytes) -> bytes:
    """``command`` (a storage command line, length included) and its data block."""
    return command.encode() + b"\r\n" + value + b"\r\n"


def pattern(size: int) -> bytes:
    """``size`` bytes of a value that has ``\\r\\n`` inside it."""
    unit = b"0123456789abcdef\r\n"
    return (unit * (size // len(unit) + 1))[:size]


K250 = b"k" * 250  # the longest key memcached accepts
K251 = b"k" * 251  # one byte too long
# memcached's -I limit counts the item's header, key and flags too, so a value
# just under 1 MiB is already too large; the example counts the same way.
# For key "a": 1,048,516 bytes with flags 0, and 4 fewer with flags.
LARGEST = 1024 * 1024 - (48 + 8 + 1 + 1 + 2)
V100K = pattern(100 * 1024)
V500K = pattern(500 * 1024)
V600K = pattern(600 * 1024)
V2M = pattern(2 * 1024 * 1024)
MANY_KEYS = b" ".join(b"m%d" % i for i in range(300))  # about 1.5 KB of keys

STEPS: list[bytes] = [
    # -- incr wraps at 2**64 -------------------------------------------------------
    # First, on fresh memory: to parse a number of 2**63 or more, memcached
    # 1.6 looks for a "-" with strchr(), which reads past the end of the value
    # into whatever the memory after it holds; a stale "-" there makes it
    # answer "non-numeric". Fresh memory is zeros, so here the answers are
    # the intended ones, and no later step makes a number that large.
    store("set w 0 0 1", b"0"),
    b"incr w 18446744073709551615\r\n",
    b"incr w 1\r\n",
    b"get w\r\n",
    b"decr w 18446744073709551615\r\n",
    # -- set, get, gets, flags ------------------------------------------------
    b"get a\r\n",
    store("set a 0 0 5", b"hello"),
    b"get a\r\n",
    b"gets a\r\n",
    store("set a 42 0 5", b"world"),
    b"gets a\r\n",
    store("set f 4294967295 0 1", b"x"),
    b"get f\r\n",
    # Flags are 32 bits; memcached truncates 2**32 to 0 rather than refusing it.
    store("set f 4294967296 0 1", b"x"),
    b"get f\r\n",
    store("set f -1 0 1", b"x"),
    store("set f abc 0 1", b"x"),
    store("set e 0 0 0", b""),
    b"get e\r\n",
    store("set bin 7 0 11", b"a\r\nb\x00c\xff d\r\n"),
    b"get bin\r\n",
    store("set a 0 0 3 noreply", b"new"),
    b"get a\r\n",
    # An extra token that is not "noreply" is ignored.
    store("set a 0 0 3 foo", b"old"),
    b"get a\r\n",
    # -- exptime: none of these needs time to pass -----------------------------
    store("set x 1 100 2", b"rx"),  # relative, in the future
    b"get x\r\n",
    store("set x 2 -1 2", b"nx"),  # negative: expired at once
    b"get x\r\n",
    store("set x 3 2000000000 2", b"ax"),  # absolute, in 2033
    b"get x\r\n",
    store("set x 4 1000000000 2", b"px"),  # absolute, in 2001: expired
    b"get x\r\n",
    store("set x 5 abc 2", b"bx"),
    store("set x 6 0 2 noreply", b"zx"),
    b"gets x\r\n",
    # -- add, replace, append, prepend -------------------------------------------
    store("add a 0 0 1", b"n"),
    store("add a 0 0 1 noreply", b"n"),
    store("add fresh 9 0 3", b"new"),
    store("add fresh2 9 100 3 noreply", b"new"),
    store("add x 10 -1 3", b"neg"),  # an add that stores an expired item
    b"get fresh fresh2 x\r\n",
    store("replace missing 0 0 1", b"r"),
    store("replace missing 0 0 1 noreply", b"r"),
    store("replace a 5 0 7", b"replace"),
    store("replace a 6 100 8 noreply", b"replaced"),
    b"gets a missing\r\n",
    store("append a 99 -1 4", b"-end"),  # flags and exptime are ignored
    store("prepend a 99 -1 6", b"start-"),
    store("append missing 0 0 1", b"z"),
    store("prepend missing 0 0 1", b"z"),
    store("append a 0 0 1 noreply", b"!"),
    store("prepend a 0 0 1 noreply", b"<"),
    store("append missing 0 0 1 noreply", b"z"),
    b"gets a\r\n",
    # -- cas ---------------------------------------------------------------------
    store("set c 3 0 1", b"1"),
    b"gets c\r\n",
    store("cas c 0 0 1 1", b"2"),  # a stale unique
    store("cas missing 0 0 1 1", b"2"),
    store("cas c 0 0 1 abc", b"2"),
    store("cas c 0 0 1 -1", b"2"),
    store("cas c 0 0 1", b"2"),  # no unique
    store("cas c 0 0 1 1 2", b"2"),  # a token too many
    b"gets c\r\n",
    # LAST_CAS stands for the unique in the latest gets reply on this connection.
    store("cas c 4 0 1 LAST_CAS", b"2"),
    b"gets c\r\n",
    store("cas c 5 0 1 LAST_CAS noreply", b"3"),
    store("cas c 5 0 1 LAST_CAS noreply", b"4"),  # EXISTS, silently
    store("cas missing 0 0 1 1 noreply", b"4"),
    b"gets c\r\n",
    # -- multi-key get, gets, gat, gats, touch ---------------------------------
    b"get a c missing a e c a\r\n",
    b"gets missing c a c\r\n",
    b"get " + MANY_KEYS + b" a\r\n",
    b"gets " + MANY_KEYS + b" c\r\n",
    b"  get   a   c  \r\n",  # runs of spaces
    b"get c\n",  # a bare "\n" ends a command line too
    b"GET c\r\n",  # commands are case-sensitive
    b"gat 100 a c missing\r\n",
    b"gats 0 c a\r\n",
    b"gat 100\r\n",
    b"gat\r\n",
    b"gat abc a\r\n",
    b"gats -1 c\r\n",  # returns the item, then it has expired
    b"get c\r\n",
    b"touch a 100\r\n",
    b"touch missing 100\r\n",
    b"touch a 0 noreply\r\n",
    b"touch missing 0 noreply\r\n",
    b"touch a abc\r\n",
    b"touch a\r\n",
    b"touch a 100 2\r\n",
    b"gets a\r\n",
    store("set t 0 0 1", b"t"),
    b"touch t -1\r\n",
    b"get t\r\n",
    # -- delete ----------------------------------------------------------------------
    b"delete a\r\n",
    b"delete a\r\n",
    store("set d 0 0 1", b"d"),
    b"delete d 0\r\n",
    b"delete d 0\r\n",
    b"delete d 10\r\n",
    store("set d 0 0 1", b"d"),
    b"delete d noreply\r\n",
    b"delete d noreply\r\n",
    store("set d 0 0 1", b"d"),
    b"delete d 0 noreply\r\n",
    b"get d\r\n",
    b"delete d 0 0\r\n",
    b"delete\r\n",
    b"delete a b c d\r\n",
    # -- incr, decr ------------------------------------------------------------------
    b"incr n 1\r\n",
    b"decr n 1\r\n",
    store("set n 5 0 1", b"9"),
    b"incr n 1\r\n",  # grows to two digits
    b"gets n\r\n",
    b"incr n 0\r\n",
    b"decr n 1\r\n",
    b"gets n\r\n",
    b"decr n 95\r\n",  # memcached shortens a number in place: space-padded
    b"gets n\r\n",
    b"incr n 41\r\n",
    b"get n\r\n",
    b"decr n 1000\r\n",  # clamps at 0
    b"get n\r\n",
    b"incr n 18446744073709551616\r\n",
    b"incr n -1\r\n",
    b"incr n abc\r\n",
    b"decr n 1x\r\n",
    b"incr n\r\n",
    b"incr n 1 2\r\n",
    b"incr n 5 noreply\r\n",
    b"decr n 2 noreply\r\n",
    b"incr missing 1 noreply\r\n",
    b"incr n abc noreply\r\n",
    b"get n\r\n",
    store("set s 0 0 3", b"abc"),
    b"incr s 1\r\n",
    b"decr s 1 noreply\r\n",
    store("set s 0 0 2", b"-5"),
    b"incr s 1\r\n",
    store("set s 0 0 20", b"18446744073709551616"),
    b"incr s 1\r\n",
    store("set s 0 0 3", b" 7 "),
    b"incr s 1\r\n",
    b"get s\r\n",
    # -- flush_all, verbosity, version ------------------------------------------------
    store("set g1 0 0 1", b"1"),
    store("set g2 0 0 1", b"2"),
    b"flush_all\r\n",
    b"get g1 g2 n\r\n",
    store("set g1 0 0 1", b"1"),
    b"flush_all 0\r\n",
    b"get g1\r\n",
    store("set g1 0 0 1", b"1"),
    b"flush_all noreply\r\n",
    b"get g1\r\n",
    store("set g1 0 0 1", b"1"),
    b"flush_all -1\r\n",
    b"get g1\r\n",
    b"flush_all 0 noreply\r\n",
    b"flush_all abc\r\n",
    store("set g1 0 0 1", b"1"),
    b"gets g1\r\n",
    b"verbosity 1\r\n",
    b"verbosity 0 noreply\r\n",
    b"verbosity\r\n",
    b"verbosity abc\r\n",
    b"verbosity 0 0\r\n",
    b"version\r\n",
    b"stats\r\n",
    # -- malformed commands --------------------------------------------------------
    b"bogus\r\n",
    b"bogus with args\r\n",
    b"\r\n",
    b"get\r\n",
    b"gets\r\n",
    b"set\r\n",
    b"set k 0 0\r\n",
    store("set k 0 0 1 noreply extra", b"v"),  # too many tokens: data is a command
    b"add k 0\r\n",
    b"replace k\r\n",
    b"append k 0 0\r\n",
    b"prepend k 0 0\r\n",
    store("set k 0 0 abc", b"v"),
    store("set k 0 0 5x", b"hello"),
    store("set k 0 0 -1", b"v"),
    b"set k 0 0 -1\r\n",
    b"get k\r\n",
    # -- key length ------------------------------------------------------------------
    store("set " + K250.decode() + " 0 0 1", b"v"),
    b"get " + K250 + b"\r\n",
    b"delete " + K250 + b"\r\n",
    store("set " + K251.decode() + " 0 0 5", b"hello"),  # is "hello" swallowed?
    store("set " + K251.decode() + " 0 0 5 noreply", b"hello"),
    b"get " + K251 + b"\r\n",
    b"get a " + K251 + b" c\r\n",
    store("set v 0 0 1", b"v"),
    b"get v " + K251 + b"\r\n",  # a good key before the bad one
    b"delete " + K251 + b"\r\n",
    b"incr " + K251 + b" 1\r\n",
    b"touch " + K251 + b" 1\r\n",
    # -- bad data blocks -------------------------------------------------------------
    store("set k 0 0 3", b"abcde"),  # block longer than announced
    b"get k\r\n",
    store("set k 0 0 3 noreply", b"abcde"),
    # Shorter than announced: the block takes "ge" of the next line.
    store("set k 0 0 5", b"abc") + b"get k\r\n",
    b"get k\r\n",
    store("set k 0 0 3", b"abc"),
    store("set k 0 0 3", b"xyz\nX"),  # ends in "\n" but not "\r\n"
    b"get k\r\n",
    # -- large values ----------------------------------------------------------------
    store(f"set big1 1 0 {len(V100K)}", V100K),
    b"get big1\r\n",
    store(f"set big2 2 0 {len(V500K)}", V500K),
    b"gets big2\r\n",
    store(f"append big2 0 0 {len(V600K)}", V600K),  # the sum is too large
    b"get big2\r\n",
    store(f"set big1 0 0 {len(V2M)}", V2M),  # too large: and the old big1?
    b"get big1\r\n",
    store(f"add big2 0 0 {len(V2M)}", V2M),
    b"get big2\r\n",
    store(f"set big3 0 0 {len(V2M)} noreply", V2M),
    b"get big3\r\n",
    # -- the item size limit, to the byte ---------------------------------------
    store(f"set a 0 0 {LARGEST}", pattern(LARGEST)),
    b"get a\r\n",
    store(f"set a 0 0 {LARGEST + 1}", pattern(LARGEST + 1)),
    b"get a\r\n",
    store(f"set a 7 0 {LARGEST - 4}", pattern(LARGEST - 4)),
    b"gets a\r\n",
    store(f"set a 7 0 {LARGEST - 3}", pattern(LARGEST - 3)),
    store(f"set a 7 0 {LARGEST - 5}", pattern(LARGEST - 5)),
    store("append a 0 0 1", b"+"),  # exactly full again, with a's flags
    store("append a 0 0 1", b"+"),  # one byte too many
    b"get a\r\n",
    # -- long lines, quit ------------------------------------------------------------
    b"set " + b"k" * 3000 + b" 0 0 1\r\nv\r\n",
    b"bogus" + b"x" * 3000 + b"\r\n",
    b"get " + b"k" * 20000 + b"\r\n",  # one 20 KB key
    b"bogus" + b"x" * 20000 + b"\r\n",
    # A line that starts with more than 100 spaces is no get, however long.
    b" " * 100 + b"get " + b" ".join([b"m1"] * 6000) + b"\r\n",
    b" " * 101 + b"get " + b" ".join([b"m1"] * 6000) + b"\r\n",
    # What looks like HTTP is hung up on.
    b"GET / HTTP/1.1\r\n",
    # A NUL ends a command line.
    store("set z 0 0 1", b"z"),
    b"get z\x00junk\r\n",
    # A length above INT_MAX - 2 is a bad command line, not a too-large item.
    b"set k 0 0 2147483646\r\n",
    b"get c\r\n",
    b"quit\r\n",
    b"get c\r\n",
    b"quit extra\r\n",
    b"get c\r\n",
]

#: Steps whose replies may differ, each with a pattern both replies must match.
EXEMPT: dict[bytes, re.Pattern[bytes]] = {
    # Each server names its own version ...
    b"version\r\n": re.compile(rb"VERSION [^\r\n ]+\r\n"),
    # ... and reports its own statistics (pid, uptime, memory), with its own
    # choice of them.
    b"stats\r\n": re.compile(rb"(STAT [^ \r\n]+ [^\r\n]*\r\n)+END\r\n"),
}


# --- talking to a server ----------------------------------------------------


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, step: bytes
) -> tuple[bytes, bool]:
    """Send ``step`` and `SYNC`; return the step's reply and whether it is still open."""
    received = bytearray()
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            writer.write(step + SYNC)
            await writer.drain()
            while (end := received.find(SYNC_REPLY)) < 0:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    return bytes(received) + CLOSED, False
                received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return bytes(received) + CLOSED, False
    except TimeoutError:
        return bytes(received) + NO_REPLY, False
    after = received[end + len(SYNC_REPLY) :]
    if after:  # nothing was asked after the sync: show it, start afresh
        return bytes(received[:end]) + b"<after the sync:>" + after, False
    return bytes(received[:end]), True


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(STEP_TIMEOUT):
            await writer.wait_closed()


async def transcript(port: int, steps: Sequence[bytes] = STEPS) -> list[bytes]:
    """Each step's reply from the server on 127.0.0.1:``port``."""
    replies: list[bytes] = []
    writer: asyncio.StreamWriter | None = None
    last_cas = b"0"
    try:
        for step in steps:
            if writer is None:
                async with asyncio.timeout(STEP_TIMEOUT):
                    reader, writer = await asyncio.open_connection(
                        HOST, port, limit=8 * 1024 * 1024
                    )
            request = step.replace(LAST_CAS, last_cas)
            reply, still_open = await exchange(reader, writer, request)
            replies.append(reply)
            if uniques := UNIQUE.findall(reply):
                last_cas = uniques[-1]
            if not still_open:
                await hang_up(writer)
                writer = None
    finally:
        if writer is not None:
            await hang_up(writer)
    return replies


# --- memcached -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_memcached(log: Path) -> Iterator[int]:
    """A fresh memcached on a free loopback port; yields the port, kills it after.

    Its output goes to ``log``. A port taken between choosing and binding it
    is retried on another.
    """
    argv = ["memcached", *MEMCACHED_FLAGS]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        argv += ["-u", pwd.getpwuid(0).pw_name]
    for _ in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if wait_accepting(proc, port):
                yield port
                return
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(_proc.TIMEOUT)
    raise AssertionError(f"memcached did not start: {log.read_text(errors='replace')}")


def wait_accepting(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Wait until ``proc`` accepts connections on ``port``; False if it exited."""
    deadline = time.monotonic() + _proc.TIMEOUT
    while proc.poll() is None:
        try:
            socket.create_connection((HOST, port), timeout=1.0).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"memcached not accepting on port {port} in {_proc.TIMEOUT}s"
                ) from None
            time.sleep(0.01)
    return False


@pytest.fixture
def memcached(tmp_path: Path) -> Iterator[Callable[[], int]]:
    """``memcached()`` starts a fresh memcached and returns its port.

    Every one started is killed when the test ends.
    """
    with contextlib.ExitStack() as stack:
        started = 0

        def start() -> int:
            nonlocal started
            started += 1
            log = tmp_path / f"memcached-{started}.log"
            return stack.enter_context(running_memcached(log))

        yield start


# --- the comparison ------------------------------------------------------------


def kv_server() -> Any:
    """The `KVServer` of examples/kv_server.py, with memcached's limits."""
    # The absolute exptimes in the script are real Unix times, as memcached's.
    return kv.KVServer(max_item_size=1024 * 1024, clock=time.time)


TARGETS = ["memcached", "kv_server"]


def short(data: bytes, limit: int = 300) -> str:
    """``repr(data)``, its middle elided if it is long."""
    if len(data) <= limit:
        return repr(data)
    half = limit // 2
    return f"{data[:half]!r} ...({len(data) - limit} bytes)... {data[-half:]!r}"


def differences(expected: list[bytes], got: list[bytes]) -> list[str]:
    """A description of every step whose replies differ."""
    found = []
    for number, (step, want, have) in enumerate(zip(STEPS, expected, got, strict=True)):
        exempt = EXEMPT.get(step)
        if exempt is not None:
            if exempt.fullmatch(want) and exempt.fullmatch(have):
                continue
        elif want == have:
            continue
        found.append(
            f"step {number}: {short(step)}\n"
            f"  memcached: {short(want)}\n"
            f"  got:       {short(have)}"
        )
    return found


@pytest.mark.parametrize("target", TARGETS)
async def test_replies_are_memcacheds_byte_for_byte(
    target: str, memcached: Callable[[], int], start: Start
) -> None:
    expected = await transcript(memcached())
    # See the wrap-around steps: this memcached read a stale "-".
    assert expected[STEPS.index(b"incr w 1\r\n")] == b"0\r\n", "memcached's own bug"
    if target == "memcached":
        port = memcached()
    else:
        port = await start(kv_server())
    got = await transcript(port)
    found = differences(expected, got)
    assert not found, f"{len(found)} of {len(STEPS)} steps differ:\n" + "\n".join(
        found[:20]
    )


def test_the_script_ends_on_an_open_connection_and_covers_every_exemption() -> None:
    # A final step that closes would hide whether its close was clean.
    assert STEPS[-1] == b"get c\r\n"
    assert set(EXEMPT) <= set(STEPS)


def main() -> None:
    """Print the real memcached's transcript of the script."""
    if shutil.which("memcached") is None:
        sys.exit("memcached is not installed")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_memcached(Path(tmp) / "memcached.log") as port,
    ):
        replies = asyncio.run(transcript(port))
    print(f"memcached {' '.join(MEMCACHED_FLAGS)}, fresh, on one connection")
    print(f"until it closes. Each step was followed by {SYNC!r},")
    print(f"whose reply {SYNC_REPLY!r} is not shown.")
    print(f"{LAST_CAS!r} stands for the unique in the latest reply with one;")
    print("long requests and replies are shown with their middles elided.\n")
    for number, (step, reply) in enumerate(zip(STEPS, replies, strict=True)):
        print(f"--- step {number}\n>>> {short(step, 600)}\n<<< {short(reply, 600)}\n")


if __name__ == "__main__":
    main()
