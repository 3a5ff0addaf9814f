"""The benchmark's bar chart, as a PNG.

One group of bars per message size, one bar per server, at one connection
count; a bar's height is the server's ratio to `.REFERENCE`, with a line at
1.0 and whiskers from the lowest to the highest repeat's ratio.

matplotlib is optional (the package itself needs only Tornado); without it
`write_chart` says so on stderr and writes nothing.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import sys
from pathlib import Path

from tornado_echo.bench.report import Report, Row, size_label
from tornado_echo.bench.servers import REFERENCE

__all__ = ["write_chart"]

# Peers in cool colours, ours in warm ones; uvloop variants are hatched.
_PEER_COLOURS = ("#4c72b0", "#8172b3", "#64b5cd", "#8c8c8c")
_OUR_COLOURS = ("#dd8452", "#c44e52", "#55a868", "#937860", "#da8bc3", "#ccb974")


def write_chart(report: Report, path: Path, connections: int) -> bool:
    """Draw the rows at ``connections`` connections into ``path``.

    Returns whether a chart was written: not without matplotlib, nor
    without a row that has a ratio.
    """
    rows = [
        row
        for row in report.rows()
        if row.connections == connections and row.ratio is not None
    ]
    if not rows:
        return False
    try:
        # Optional: the ignore keeps mypy quiet where it is not installed.
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print(
            "bench: matplotlib is not installed, so no chart was drawn "
            "(pip install 'tornado_echo[bench]')",
            file=sys.stderr,
        )
        return False
    # No display is needed, nor wanted on a server or in CI.
    matplotlib.use("Agg")
    from matplotlib import pyplot  # type: ignore[import-not-found, unused-ignore]

    sizes = sorted({row.size for row in rows})
    names = [c.name for c in report.servers if any(r.server == c.name for r in rows)]
    colours = _colours(report, names)
    by_key = {(row.size, row.server): row for row in rows}

    fig, ax = pyplot.subplots(figsize=(12, 6), dpi=110)
    width = 0.8 / max(len(names), 1)
    labelled: set[str] = set()
    for group, size in enumerate(sizes):
        present = [name for name in names if (size, name) in by_key]
        # Centre each group's bars, however many servers it has.
        start = group - width * (len(present) - 1) / 2
        for i, name in enumerate(present):
            row = by_key[(size, name)]
            assert row.ratio is not None
            x = start + i * width
            ax.bar(
                x,
                row.ratio,
                width * 0.92,
                color=colours[name],
                hatch="//" if name.endswith("(uvloop)") else None,
                edgecolor="white",
                label=None if name in labelled else name,
                yerr=_whiskers(row),
                capsize=2,
                ecolor="#333333",
                error_kw={"elinewidth": 0.8},
            )
            labelled.add(name)
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
    ax.set_xticks(range(len(sizes)), [size_label(size) for size in sizes])
    ax.set_xlabel("message size (whiskers: the lowest and the highest repeat)")
    ax.set_ylabel(f"round trips/s ÷ {REFERENCE} (higher is better)")
    # Room for the tallest whisker and its label.
    top = max(max(row.ratios, default=row.ratio or 0.0) for row in rows)
    ax.set_ylim(0, top * 1.15 + 0.1)
    repeats = report.settings.get("repeat")
    ax.set_title(
        f"Echo round trips per second relative to {REFERENCE} (asyncio loop), "
        f"{connections} connections, median of {repeats} repeat(s)\n"
        f"{report.caption()}",
        fontsize=10,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot.close(fig)
    return True


def _colours(report: Report, names: list[str]) -> dict[str, str]:
    """The same colour for a server on either loop; cool for peers, warm for ours."""
    kinds: dict[str, str] = {}
    peers = ours = 0
    out = {}
    for config in report.servers:
        if config.name not in names:
            continue
        kind = config.kind.name
        if kind not in kinds:
            if config.ours:
                kinds[kind] = _OUR_COLOURS[ours % len(_OUR_COLOURS)]
                ours += 1
            else:
                kinds[kind] = _PEER_COLOURS[peers % len(_PEER_COLOURS)]
                peers += 1
        out[config.name] = kinds[kind]
    return out


def _whiskers(row: Row) -> list[list[float]] | None:
    """From the lowest to the highest repeat's ratio, around the median."""
    if row.ratio is None or len(row.ratios) < 2:
        return None
    return [[row.ratio - min(row.ratios)], [max(row.ratios) - row.ratio]]
