"""The benchmark's bar charts, as PNGs.

`write_chart`: one group of bars per message size, one bar per byte-echo
server, at one connection count. `write_line_chart`: one group per line
point (line length, connections, pipelined or not), one bar per line
server, ours and the peers. In both a bar's height is the server's ratio to
`.REFERENCE`, with a line at 1.0 and whiskers from the lowest to the
highest repeat's ratio.

The legend sits beside the plot in two titled groups, tornado_echo's own
servers (warm colours) and their peers (cool ones), one entry per kind of
server: a kind keeps its colour on either loop, and its uvloop bars are
hatched. In each group of bars the peers come first, and ours stand on a
shade, the same as their legend's. A client-bound row's bar
(`.CLIENT_BOUND`) has a triangle at its foot, since its height is a floor,
not a ceiling; a third small group of the legend says so, and what the
hatching and the dashed line mean.

matplotlib is optional (the package itself needs only Tornado); without it
`write_chart` says so on stderr and writes nothing, and so does
`write_line_chart`.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from tornado_echo.bench.report import Report, Row, point_label, size_label
from tornado_echo.bench.servers import REFERENCE

__all__ = ["write_chart", "write_line_chart"]

# Peers in cool colours, ours in warm ones; enough that the line chart's
# five peers and the byte chart's three each get their own.
_PEER_COLOURS = (
    "#4c72b0", "#8172b3", "#64b5cd", "#8c8c8c", "#2a7f7f", "#1d3461", "#9aa6d6",
)  # fmt: skip
_OUR_COLOURS = ("#dd8452", "#c44e52", "#55a868", "#937860", "#da8bc3", "#ccb974")

_OURS_TITLE = "tornado_echo"
_PEERS_TITLE = "peers"
_CLIENT_BOUND_LABEL = "client-bound: a floor, not a ceiling"
_UVLOOP_LABEL = "hatched: on uvloop"
_UVLOOP_HATCH = "//"
_OURS_SHADE = "#f6ebe1"
_CLIENT_BOUND_MARKER = "^"


@dataclasses.dataclass(frozen=True)
class _BarStyle:
    """How one server's bars look, and where it goes in the legend."""

    #: The legend entry: the kind's name, shared by its runs on either loop.
    label: str
    colour: str
    ours: bool
    hatch: str | None


def _bar_styles(report: Report, names: Collection[str]) -> dict[str, _BarStyle]:
    """The style of each server in ``names``, in the report's server order.

    A kind has one colour on either loop (cool for peers, warm for ours),
    and its runs on uvloop are hatched.
    """
    colours: dict[str, str] = {}
    peers = ours = 0
    styles = {}
    for config in report.servers:
        if config.name not in names:
            continue
        kind = config.kind.name
        if kind not in colours:
            if config.ours:
                colours[kind] = _OUR_COLOURS[ours % len(_OUR_COLOURS)]
                ours += 1
            else:
                colours[kind] = _PEER_COLOURS[peers % len(_PEER_COLOURS)]
                peers += 1
        styles[config.name] = _BarStyle(
            label=kind,
            colour=colours[kind],
            ours=config.ours,
            hatch=None if config.loop == "asyncio" else _UVLOOP_HATCH,
        )
    return styles


def _legend_groups(
    styles: dict[str, _BarStyle],
) -> list[tuple[str, list[tuple[str, str]]]]:
    """``(title, [(label, colour), ...])``: ours, then the peers; none empty."""
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for title, ours in ((_OURS_TITLE, True), (_PEERS_TITLE, False)):
        entries = {s.label: s.colour for s in styles.values() if s.ours == ours}
        if entries:
            groups.append((title, list(entries.items())))
    return groups


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """A chart drawn in memory, and the artists a reader tells apart."""

    #: A `matplotlib.figure.Figure` (typed loosely: matplotlib is optional).
    figure: Any
    #: (group, server) -> that bar's `~matplotlib.patches.Rectangle`; the
    #: group is the size, or in the line chart (size, connections, pipeline).
    bars: dict[tuple[Any, str], Any]
    #: (group, server) -> the marker at the foot of a client-bound bar.
    client_bound: dict[tuple[Any, str], Any]
    #: The legends, top to bottom: ours, peers, then what marks mean.
    legends: list[Any]


@dataclasses.dataclass(frozen=True)
class _Chart:
    """What one chart shows: its rows, in groups of bars, and its words."""

    rows: list[Row]
    #: The groups, left to right, each with the label under its bars.
    groups: list[tuple[Any, str]]
    #: The group a row's bar is in.
    group: Callable[[Row], Any]
    title: str
    xlabel: str


def write_chart(report: Report, path: Path, connections: int) -> bool:
    """Draw the byte-echo rows at ``connections`` connections into ``path``.

    Returns whether a chart was written: not without matplotlib, nor
    without a row that has a ratio.
    """
    return _write(report, _byte_chart(report, connections), path)


def write_line_chart(report: Report, path: Path) -> bool:
    """Draw the line servers' rows, at every line point, into ``path``.

    Returns whether a chart was written: not without matplotlib, nor
    without a line server's row that has a ratio.

    .. versionadded:: 0.3.0
    """
    return _write(report, _line_chart(report), path)


def _write(report: Report, chart: _Chart, path: Path) -> bool:
    if not chart.rows:
        return False
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "bench: matplotlib is not installed, so no chart was drawn "
            "(pip install 'tornado_echo[bench]')",
            file=sys.stderr,
        )
        return False
    drawn = _draw_chart(report, chart)
    path.parent.mkdir(parents=True, exist_ok=True)
    # "tight" grows the image to hold the legends beside the plot.
    drawn.figure.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return True


def _rows(report: Report, connections: int) -> list[Row]:
    """The byte-echo rows at ``connections`` that have a ratio."""
    return [
        row
        for row in report.rows()
        if row.connections == connections
        and row.ratio is not None
        and not row.lines
        and row.pipeline == 1
    ]


def _byte_chart(report: Report, connections: int) -> _Chart:
    rows = _rows(report, connections)
    if all(row.server == REFERENCE for row in rows):
        rows = []  # its bars, all at 1.0, compare nothing (--servers lineserver)
    return _Chart(
        rows=rows,
        groups=[(size, size_label(size)) for size in sorted({r.size for r in rows})],
        group=lambda row: row.size,
        title=(
            f"Echo round trips per second relative to {REFERENCE} (asyncio loop), "
            f"{connections} connections, "
            f"median of {report.settings.get('repeat')} repeat(s)"
        ),
        xlabel="message size (whiskers: the lowest and the highest repeat)",
    )


def _line_chart(report: Report) -> _Chart:
    rows = [row for row in report.rows() if row.lines and row.ratio is not None]
    drawn = {(row.size, row.connections, row.pipeline) for row in rows}
    groups = []
    # In the order the points were run.
    for point in report.points():
        if point in drawn:
            size, connections, pipeline = point
            per_write = " per write" if pipeline > 1 else ""
            label = f"{point_label(size, pipeline)}{per_write}\n× {connections}"
            groups.append((point, label))
    return _Chart(
        rows=rows,
        groups=groups,
        group=lambda row: (row.size, row.connections, row.pipeline),
        title=(
            f"Line echo round trips per second relative to {REFERENCE} "
            f"(asyncio loop), median of {report.settings.get('repeat')} repeat(s)"
        ),
        xlabel="line × connections (whiskers: the lowest and the highest repeat)",
    )


def _draw(report: Report, connections: int) -> _Drawn:
    """The byte-echo chart, in memory; matplotlib must be installed."""
    return _draw_chart(report, _byte_chart(report, connections))


def _draw_lines(report: Report) -> _Drawn:
    """The line-protocol chart, in memory; matplotlib must be installed."""
    return _draw_chart(report, _line_chart(report))


def _draw_chart(report: Report, chart: _Chart) -> _Drawn:
    """``chart``, in memory; matplotlib must be installed."""
    # A bare Figure on the Agg canvas: no pyplot, so no display is needed
    # (nor wanted on a server or in CI) and no global state is left behind.
    from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found, unused-ignore]
        FigureCanvasAgg,
    )
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    rows = chart.rows
    groups = [group for group, _ in chart.groups]
    styles = _bar_styles(report, {row.server for row in rows})
    # Peers on the left of each group and ours on the right (stable, so in
    # the report's order within each), as the legend lists them.
    names = sorted(
        (c.name for c in report.servers if any(r.server == c.name for r in rows)),
        key=lambda name: styles[name].ours,
    )
    by_key = {(chart.group(row), row.server): row for row in rows}
    # Room for the tallest whisker and its label.
    top = max(max(row.ratios, default=row.ratio or 0.0) for row in rows) * 1.15 + 0.1

    fig = Figure(figsize=(11, 6), dpi=110)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Fixed margins, so the legends can be stacked in axes coordinates.
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.1)
    width = 0.8 / max(len(names), 1)
    bars: dict[tuple[Any, str], Any] = {}
    floors: dict[tuple[Any, str], Any] = {}
    for index, group in enumerate(groups):
        present = [name for name in names if (group, name) in by_key]
        # Centre each group's bars, however many servers it has.
        start = index - width * (len(present) - 1) / 2
        ours = [start + i * width for i, n in enumerate(present) if styles[n].ours]
        if ours:
            # Ours stand on a shade, the same as their legend's.
            ax.axvspan(
                min(ours) - width / 2, max(ours) + width / 2,
                color=_OURS_SHADE, linewidth=0, zorder=0,
            )  # fmt: skip
        for i, name in enumerate(present):
            row = by_key[(group, name)]
            assert row.ratio is not None
            style = styles[name]
            x = start + i * width
            container = ax.bar(
                x,
                row.ratio,
                width * 0.92,
                color=style.colour,
                hatch=style.hatch,
                edgecolor="white",
                yerr=_whiskers(row),
                capsize=2,
                ecolor="#333333",
                error_kw={"elinewidth": 0.8},
            )
            bars[(group, name)] = container.patches[0]
            if row.client_bound:
                # At the foot, clear of the whisker and the label on top.
                (floors[(group, name)],) = ax.plot(
                    [x], [top * 0.025], _CLIENT_BOUND_MARKER, color="black",
                    markersize=7, markeredgecolor="white", markeredgewidth=0.5,
                )  # fmt: skip
            # Above the whisker, where the two cannot overlap.
            ax.annotate(
                f"{row.ratio:.2f}",
                (x, max(row.ratios, default=row.ratio)),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(groups)), [label for _, label in chart.groups])
    ax.set_xlabel(chart.xlabel)
    ax.set_ylabel(f"round trips/s ÷ {REFERENCE} (higher is better)")
    ax.set_ylim(0, top)
    ax.set_title(f"{chart.title}\n{report.caption()}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    legends = _legends(
        ax,
        canvas,
        styles,
        hatched=any(s.hatch for s in styles.values()),
        client_bound=bool(floors),
    )
    return _Drawn(fig, bars, floors, legends)


def _legends(
    ax: Any,
    canvas: Any,
    styles: dict[str, _BarStyle],
    *,
    hatched: bool,
    client_bound: bool,
) -> list[Any]:
    """The legend groups, stacked top down to the right of the plot."""
    from matplotlib.legend import Legend  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.lines import Line2D  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.patches import Patch  # type: ignore[import-not-found, unused-ignore]

    groups: list[tuple[str, list[Any], list[str]]] = [
        (
            title,
            [Patch(color=colour) for _, colour in entries],
            [label for label, _ in entries],
        )
        for title, entries in _legend_groups(styles)
    ]
    marks: list[tuple[Any, str]] = [
        (
            Line2D([], [], color="black", linewidth=1, linestyle="--"),
            f"1.0: {REFERENCE}",
        )
    ]
    if hatched:
        marks.append(
            (
                Patch(facecolor="#bbbbbb", edgecolor="white", hatch=_UVLOOP_HATCH),
                _UVLOOP_LABEL,
            )
        )
    if client_bound:
        marks.append(
            (
                Line2D(
                    [], [], linestyle="", marker=_CLIENT_BOUND_MARKER, color="black"
                ),
                _CLIENT_BOUND_LABEL,
            )
        )
    groups.append(("", [h for h, _ in marks], [label for _, label in marks]))
    renderer = canvas.get_renderer()
    inverse = ax.transAxes.inverted()
    legends = []
    y = 1.0
    for title, handles, labels in groups:
        shaded = title == _OURS_TITLE
        legend = Legend(
            ax, handles, labels, title=title or None, loc="upper left",
            bbox_to_anchor=(1.02, y), borderaxespad=0.0, fontsize=8,
            title_fontproperties={"weight": "bold", "size": 9},
            alignment="left", frameon=shaded, facecolor=_OURS_SHADE,
            edgecolor="none", framealpha=1.0, fancybox=False,
        )  # fmt: skip
        ax.add_artist(legend)
        # add_artist clips to the plot, and these legends are beside it.
        legend.set_clip_on(False)
        legends.append(legend)
        y = legend.get_window_extent(renderer).transformed(inverse).y0 - 0.04
    return legends


def _whiskers(row: Row) -> list[list[float]] | None:
    """From the lowest to the highest repeat's ratio, around the median."""
    if row.ratio is None or len(row.ratios) < 2:
        return None
    return [[row.ratio - min(row.ratios)], [max(row.ratios) - row.ratio]]
