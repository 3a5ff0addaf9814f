"""A loopback benchmark of tornado_echo's servers against their peers.

``python -m tornado_echo.bench`` (``pip install 'tornado_echo[bench]'`` for
the progress bar, the charts, uvloop and the line-protocol peers) measures,
on 127.0.0.1:

**Round trips per second in a closed loop.** Each of N connections sends a
message, waits for its whole echo, checks every byte and sends the next
(`tornado_echo.bench.client`). Our servers (``tornado-echo --impl stream``
and ``compat``, with and without ``--lines``, and a `.LineServer`) run
next to the echo a competent user would write with asyncio or plain
Tornado (`tornado_echo.bench.baselines`), on asyncio's loop and, for some,
on uvloop. The default run covers 64 B, 1 KiB and 16 KiB messages over 10
connections and 1 KiB over 100; it also reports p50/p99 latency, MiB/s,
the server's CPU time per round trip, and how busy the client was.

**Line protocols.** Our line servers (``stream --lines``, ``compat
--lines``, ``lineserver``) next to the line echo each peer's documentation
shows (`tornado_echo.bench.line_peers`: asyncio streams' ``readline`` on
asyncio's loop and on uvloop, Twisted's ``LineReceiver``, AnyIO on asyncio
and on Trio, gevent's ``StreamServer``), in the same interleaved runs: 64 B
and 1 KiB lines over 10 connections, 64 B over 100, and pipelined writes of
16 lines of 64 B whose 16 echoes the client awaits. A table of their own
gives each one's ratio to the reference, to ``asyncio-readline`` on the
same loop, and the server's CPU time per line. A peer whose framework is
not installed is skipped, with one line that says so.

**Memory per idle connection.** A fresh server is sent 10,000 connections
that each echo once, and its RSS growth is divided by their number: every
byte server, and ``lineserver`` next to the line peers.

**Under pressure** (`tornado_echo.bench.pressure`), what the closed loop
does not show: *fairness*, a light client's round trips of one 64-byte
line while 16 connections keep the server's pipes full, its p99 as a
multiple of compat's in the same repeat; *bulk*, one connection's echoed
MiB/s as a multiple of the reference's, and the server's CPU time per MiB;
and *stuck*, the memory a fresh server holds for 200 clients that send
1 MiB each and never read, and whether it comes back once they leave.

**Why ratios.** Absolute rates depend on the machine, its load, and the
interpreter's build; a server's rate divided by that of asyncio's own
Protocol echo (the cheapest echo asyncio offers) in the same repeat
depends far less on them, so results from different machines and days can
be compared. The report leads with that ratio; it is the median over
repeats, and runs are interleaved so a slow moment hits every server alike.

To keep the comparison about the servers rather than the harness, each
server is pinned to one CPU and the client to the other, the client
busy-polls rather than sleeps (a wakeup across cores costs more than a
round trip), runs where the client was the bottleneck are flagged, so are
rows whose measurements look unreliable (``noisy``: something else had the
client's core, or the repeats disagree), and servers start with glibc's
malloc tuned so that asyncio's 256 KiB reads do not map and unmap memory
every time (`tornado_echo.bench.servers` explains this;
``--glibc-malloc-defaults`` turns it off).

::

    python -m tornado_echo.bench                    # the full run, ~12 minutes
    python -m tornado_echo.bench --smoke            # about a minute; what CI runs
    python -m tornado_echo.bench --servers stream,compat --sizes 1k --repeat 5
    python -m tornado_echo.bench --servers 'lineserver,stream --lines,gevent' \
        --line-sizes 64 --pressure none --idle 0    # a few line servers
    python -m tornado_echo.bench --redraw bench-results/results.json  # no runs

It writes ``results.json`` (every run, the machine, the versions and the
settings), ``results.md``, ``results.txt``, ``chart.png`` (byte echo) and
``chart-lines.png`` (line protocols) to ``--out``
(``bench-results/``), prints the Markdown tables, and exits 1 if any run
failed to verify, a server stopped answering or ``--time-limit`` passed.
``--redraw`` writes the tables and the charts again from a ``results.json``,
measuring nothing.

Modules: `~tornado_echo.bench.servers` (configurations and their
processes), `~tornado_echo.bench.workloads` (closed loop, idle, and the
pressure workloads), `~tornado_echo.bench.plan` (which runs, in which
order), `~tornado_echo.bench.report`, `~tornado_echo.bench.chart`,
`~tornado_echo.bench.progress`, `~tornado_echo.bench.cli`,
`~tornado_echo.bench.client`, `~tornado_echo.bench.pressure`,
`~tornado_echo.bench.baselines`, `~tornado_echo.bench.line_peers`, and
`~tornado_echo.bench.kv` with its load client `~tornado_echo.bench.kv_client`
(``python -m tornado_echo.bench.kv``: examples/kv_server.py against a real
memcached).

.. versionadded:: 0.3.0
"""
