r"""The memcached load client: a closed loop of gets and sets, every reply checked.

Each of ``connections`` connections owns its own slice of the key space
(``k0`` to ``k999`` by default; connection *c* has every key whose number
is *c* modulo ``connections``). It first stores every key it owns, then
sends, one request at a time, a fixed mix of ``get <key>`` and
``set <key> <flags> 0 <bytes>`` (``set_ratio`` of them sets, in a shuffled
order that repeats every 4,096 requests) to keys of its slice chosen at
random. Each value is 32 to 100 bytes and unique: it starts with its key,
the run's ``nonce`` and the connection's count of sets.

Since no two connections touch the same key and each has one request in
flight, the client knows exactly what every reply must be, and compares
each one with it byte for byte: ``STORED\r\n`` for a set;
``VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n`` with the last value
stored, or ``END\r\n`` for a key never stored, for a get. The first
difference fails the run with one line that shows both. After the warm-up
the client measures for ``duration`` seconds; then it stops sending, waits
for the replies in flight, half-closes every connection and requires the
server to close in turn without sending a byte more.

It is built on `tornado_echo.bench.client`'s parts, so it busy-polls, and
reports its load, as the echo client does: an asyncio `~asyncio.Protocol`
(a `~tornado_echo.bench.client.ClientConnection`), on uvloop when it is
installed, whose loop never sleeps (`~tornado_echo.bench.client.Spinner`),
and the share of the loop's time spent on turns that handled a reply.

Run by `tornado_echo.bench.kv` as ``python -m tornado_echo.bench.kv_client``;
it prints one JSON object (`KVClientResult`, or ``{"error": ...}`` with exit
status 1) on stdout.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import string
import sys
import time
from collections.abc import Sequence

from tornado_echo.bench.client import (
    BenchError,
    ClientConnection,
    RunState,
    client_parser,
    print_result,
)

__all__ = [
    "MAX_VALUE",
    "MIN_VALUE",
    "KVClientResult",
    "closed_loop",
    "expected_get",
    "key_slices",
    "main",
]

#: The shortest and longest value stored.
MIN_VALUE = 32
MAX_VALUE = 100

#: What a get of a key that holds nothing returns.
MISS = b"END\r\n"
STORED = b"STORED\r\n"

# The mix each connection repeats: long enough that the share of sets is
# within 1/4096 of the one asked for, short enough to build in a moment.
_PLAN = 4096

# Value lengths each connection rotates through; prime, so that they do
# not line up with the plan.
_LENGTHS = 251

# memcached's flags are 32 bits; these stay small so every reply is short.
_FLAGS_MASK = 0xFFFF

# Storing every key: a healthy server on loopback needs milliseconds.
_LOAD_TIMEOUT = 10.0

# How much of a request or reply a failure shows.
_SHOWN = 160


@dataclasses.dataclass(frozen=True)
class KVClientResult:
    """What one closed-loop run of gets and sets measured and verified."""

    connections: int
    keys: int
    set_ratio: float
    loop: str
    #: Requests completed inside the measurement window, and of which kind.
    requests: int
    gets: int
    sets: int
    elapsed: float
    p50_us: float
    p99_us: float
    #: The share of the loop's time spent on turns that handled a reply, as
    #: measured (the report clamps it to 0.0 to 1.0).
    client_busy: float
    #: The share of the window the busy-polling client was not running.
    client_preempted: float
    #: The server's CPU seconds over the window, if its pid was given.
    server_cpu: float | None
    #: Requests sent and replies verified over the whole run (the stores
    #: before the warm-up included); always equal in a result.
    sent: int
    verified: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.elapsed

    @property
    def server_cpu_per_request_us(self) -> float | None:
        """Server CPU time per request, in µs."""
        if self.server_cpu is None or not self.requests:
            return None
        return self.server_cpu / self.requests * 1e6

    def to_json(self) -> dict[str, object]:
        """Every field and the derived rates, ready for `json.dumps`."""
        return {
            **dataclasses.asdict(self),
            "rate": self.rate,
            "server_cpu_per_request_us": self.server_cpu_per_request_us,
        }


def key_slices(keys: int, connections: int) -> list[list[bytes]]:
    """The keys each connection owns: every ``connections``-th, by number.

    >>> key_slices(5, 2)
    [[b'k0', b'k2', b'k4'], [b'k1', b'k3']]
    """
    names = [b"k%d" % number for number in range(keys)]
    return [names[first::connections] for first in range(connections)]


def expected_get(key: bytes, flags: int, value: bytes) -> bytes:
    r"""The whole reply to ``get <key>`` once ``value`` is stored under it.

    >>> expected_get(b"k1", 7, b"abc")
    b'VALUE k1 7 3\r\nabc\r\nEND\r\n'
    """
    return b"VALUE %b %d %d\r\n%b\r\nEND\r\n" % (key, flags, len(value), value)


def _shown(data: bytes) -> str:
    r"""``repr(data)``, its middle elided if it is long.

    >>> _shown(b"END\r\n")
    "b'END\\r\\n'"
    """
    text = repr(data)
    if len(text) <= _SHOWN:
        return text
    half = _SHOWN // 2
    return f"{text[:half]}...({len(text) - _SHOWN} more)...{text[-half:]}"


class _Run(RunState):
    """A run that first stores every key, then counts gets and sets apart."""

    def __init__(self, connections: int, keys: int, nonce: int) -> None:
        super().__init__(connections)
        self.keys = keys
        self.nonce = nonce
        self.all_loaded: asyncio.Future[None] = (
            asyncio.get_running_loop().create_future()
        )
        self._loaded = 0
        #: The measured replies, by kind.
        self.gets = 0
        self.sets = 0

    def fail(self, message: str) -> None:
        super().fail(message)
        # Wake the preload's wait at once instead of at its timeout.
        if self.failure is not None and not self.all_loaded.done():
            self.all_loaded.set_exception(self.failure)

    def connection_loaded(self) -> None:
        self._loaded += 1
        if self._loaded == self.connections and not self.all_loaded.done():
            self.all_loaded.set_result(None)

    async def warm_up(self, seconds: float) -> None:
        """Wait until every key is stored, then warm up for ``seconds``."""
        try:
            async with asyncio.timeout(_LOAD_TIMEOUT):
                await self.all_loaded
        except TimeoutError:
            raise BenchError(
                f"storing the {self.keys:,} keys took more than {_LOAD_TIMEOUT:g} s"
            ) from None
        await self.sleep(seconds)


class _KVConnection(ClientConnection, asyncio.Protocol):
    """One connection of the closed loop, and its model of its keys."""

    run: _Run

    def __init__(
        self, run: _Run, keys: list[bytes], set_ratio: float, rng: random.Random
    ) -> None:
        super().__init__(run)
        self._keys = keys
        self._get_requests = {key: b"get %b\r\n" % key for key in keys}
        #: What a get of each key must return: the reply to what was stored.
        self._holds: dict[bytes, bytes] = {}
        sets = round(set_ratio * _PLAN)
        kinds = [True] * sets + [False] * (_PLAN - sets)
        rng.shuffle(kinds)
        self._plan = [(is_set, rng.choice(keys)) for is_set in kinds]
        self._step = 0
        self._lengths = [rng.randint(MIN_VALUE, MAX_VALUE) for _ in range(_LENGTHS)]
        self._filler = "".join(rng.choices(string.ascii_letters, k=MAX_VALUE)).encode()
        self._stored = 0  # sets sent, which numbers each value
        self._loading = 0  # the next key to store before the mix starts
        self._loaded = False
        # The request in flight: its key, the reply it must get, and for a
        # set, the get reply its key must give once it is stored.
        self._key = b""
        self._expected = b""
        self._stores: bytes | None = None
        self._set_line = b""
        self._partial = b""

    def send_next(self) -> None:
        if self._loading < len(self._keys):
            self._send_set(self._keys[self._loading])
            self._loading += 1
            return
        is_set, key = self._plan[self._step]
        self._step = (self._step + 1) % _PLAN
        if is_set:
            self._send_set(key)
        else:
            self._send_get(key)

    def _send_set(self, key: bytes) -> None:
        number = self._stored
        self._stored += 1
        length = self._lengths[number % _LENGTHS]
        value = (b"%b.%d.%d." % (key, self.run.nonce, number) + self._filler)[:length]
        flags = number & _FLAGS_MASK
        self._set_line = b"set %b %d 0 %d" % (key, flags, length)
        self._stores = expected_get(key, flags, value)
        self._send(key, STORED, self._set_line + b"\r\n" + value + b"\r\n")

    def _send_get(self, key: bytes) -> None:
        self._stores = None
        self._send(key, self._holds.get(key, MISS), self._get_requests[key])

    def _send(self, key: bytes, expected: bytes, request: bytes) -> None:
        self._key = key
        self._expected = expected
        self.send(request)

    def _request_line(self) -> str:
        line = b"get " + self._key if self._stores is None else self._set_line
        return line.decode("ascii", "replace")

    def data_received(self, data: bytes) -> None:
        run = self.run
        if not self.in_flight:
            run.fail(
                f"the server sent {_shown(data)} after the reply to "
                f"{self._request_line()!r}, which nobody asked for"
            )
            return
        if self._partial:
            data = self._partial + data
        expected = self._expected
        if data != expected:
            if len(data) < len(expected) and expected.startswith(data):
                self._partial = data
                return
            run.fail(
                f"the reply to {self._request_line()!r} differed: expected "
                f"{_shown(expected)}, got {_shown(data)}"
            )
            return
        now = time.perf_counter_ns()
        self._partial = b""
        if self._stores is not None:
            self._holds[self._key] = self._stores
        if run.measuring:
            if self._stores is None:
                run.gets += 1
            else:
                run.sets += 1
        if not self._loaded and self._loading == len(self._keys):
            self._loaded = True
            run.connection_loaded()
        self.replied(now)

    def eof_received(self) -> bool:
        if self.in_flight:
            self.run.fail(
                f"the server closed the connection before replying to "
                f"{self._request_line()!r}"
            )
        elif self.run.sending:
            self.run.fail("the server closed the connection")
        return False


async def closed_loop(
    port: int,
    *,
    connections: int,
    keys: int,
    set_ratio: float,
    warmup: float,
    duration: float,
    server_pid: int | None = None,
    nonce: int = 0,
) -> KVClientResult:
    """One run against the memcached-protocol server on ``127.0.0.1:port``.

    Raises `~tornado_echo.bench.client.BenchError` if any reply is not what
    the server must answer, or the server stalls or closes.
    """
    if not 1 <= connections <= keys:
        raise ValueError("connections must be at least 1 and at most keys")
    if not 0.0 <= set_ratio <= 1.0 or warmup < 0 or duration <= 0:
        raise ValueError("set_ratio must be within 0 and 1, and duration > 0")
    run = _Run(connections, keys, nonce)
    conns = [
        _KVConnection(run, owned, set_ratio, random.Random(f"{nonce}/{index}"))
        for index, owned in enumerate(key_slices(keys, connections))
    ]
    window = await run.drive(
        conns, port, warmup=warmup, duration=duration, server_pid=server_pid
    )
    return KVClientResult(
        connections=connections,
        keys=keys,
        set_ratio=set_ratio,
        requests=run.measured,
        gets=run.gets,
        sets=run.sets,
        client_busy=window.client_busy,
        client_preempted=window.preempted,
        sent=run.sent,
        verified=run.replies,
        **window.result_fields(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = client_parser(
        "python -m tornado_echo.bench.kv_client",
        "One closed loop of memcached gets and sets against 127.0.0.1:PORT, "
        "every reply checked; prints the result as JSON.",
        warmup=0.3,
        duration=1.0,
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--set-ratio", type=float, default=0.1)
    parser.add_argument("--nonce", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= args.keys:
        parser.error("--connections must be at least 1 and at most --keys")
    if not 0.0 <= args.set_ratio <= 1.0:
        parser.error("--set-ratio must be within 0 and 1")
    if args.warmup < 0 or args.duration <= 0:
        parser.error("--warmup must be at least 0 and --duration more than 0")
    return print_result(
        args, closed_loop, keys=args.keys, set_ratio=args.set_ratio, nonce=args.nonce
    )


if __name__ == "__main__":
    sys.exit(main())
