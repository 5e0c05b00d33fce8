"""The run report's charts: matplotlib figures rendered to inline SVG text (no pyplot, no browser).

Why matplotlib (see README, "Dependency notes"): it renders offline to plain SVG, with the text kept
as text (``svg.fonttype = none``), so a chart is a few tens of KB, readable, printable and searchable;
it is one well-kept wheel with no browser or JavaScript runtime. The figures are built with the
object-oriented ``Figure`` API (no global pyplot state), so charts can be drawn from any thread.

Every function takes already aggregated numbers (a dozen months, a few dozen programs): never a
payload. Amounts are dollars (float); ``None``/NaN points are not drawn.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

# Colours: expenses stand out (dark blue), the baseline is the reference (grey, dashed), the plan
# is the promise (orange). Appropriated (light) against spent (dark) for the all-bonds bars.
EXPENSES_COLOR = "#1f4e79"
BASELINE_COLOR = "#7f7f7f"
PLANNED_COLOR = "#d9822b"
APPROPRIATED_COLOR = "#c9d9ea"
SPENT_COLOR = "#1f4e79"

_RC = {
    "svg.fonttype": "none",  # text stays text: small, selectable, rendered by the browser's fonts
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#999999",
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.frameon": False,
    "legend.fontsize": 8,
}
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_COMMENTS = re.compile(r"<!--.*?-->", re.S)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def dollars(value: float, _pos: object = None) -> str:
    """Short dollar text for an axis tick: $0, $950, $12K, $1.5M, $2B (negative: −$12K)."""
    sign = "\u2212" if value < 0 else ""
    amount = abs(float(value))
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if amount >= limit:
            text = f"{amount / limit:.1f}".rstrip("0").rstrip(".")
            return f"{sign}${text}{suffix}"
    return f"{sign}${amount:.0f}"


def month_ticks(months: Sequence[str]) -> list[str]:
    """'YYYY MM' labels → tick texts: the month's short name, with the year under October and January."""
    ticks = []
    for index, label in enumerate(months):
        year, month = label.split()
        name = _MONTHS[int(month) - 1]
        ticks.append(f"{name}\n{year}" if index == 0 or month == "01" else name)
    return ticks


def cumulative_chart(
    key: str,
    title: str,
    months: Sequence[str],
    expenses: Sequence[float | None],
    baseline: Sequence[float | None],
    planned: Sequence[float | None],
    *,
    size: tuple[float, float] = (7.2, 3.0),
    legend: bool = True,
) -> str:
    """Cumulative Expenses against Baseline and Planned by month: inline SVG text.

    ``key`` makes the SVG's internal ids unique on the page (several SVGs share one document).
    """
    with _rc(key):
        small = size[0] < 5
        figure = _figure(size, left=0.6 if small else 0.75, bottom=0.42, top=0.3 if small else 0.38)
        axes = figure.subplots()
        _draw_cumulative(axes, title, months, expenses, baseline, planned, small=small, legend=legend)
        return _svg(figure)


def _draw_cumulative(axes, title, months, expenses, baseline, planned, *, small: bool, legend: bool) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    x = np.arange(len(months))
    for values, label, color, style, width in (
        (baseline, "Baseline", BASELINE_COLOR, (0, (5, 3)), 1.6),
        (planned, "Planned", PLANNED_COLOR, "-", 1.6),
        (expenses, "Expenses", EXPENSES_COLOR, "-", 2.4),
    ):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        if np.isfinite(y).any():
            axes.plot(
                x,
                y,
                label=label,
                color=color,
                linestyle=style,
                linewidth=width,
                marker=None if small else "o",
                markersize=2.5,
            )
    axes.set_title(title, fontsize=9 if small else None)
    ticks = month_ticks(months)
    shown = [i for i in x if not small or i % 3 == 0]  # small charts: Oct, Jan, Apr, Jul
    axes.set_xticks(shown, [ticks[i] for i in shown])
    axes.yaxis.set_major_locator(MaxNLocator(3 if small else 5))
    axes.set_xlim(-0.4, len(months) - 0.6)
    axes.yaxis.set_major_formatter(FuncFormatter(dollars))
    axes.set_ylim(bottom=min(0.0, axes.get_ylim()[0]))
    axes.tick_params(axis="x", labelsize=7 if small else 8, length=0)
    if legend:
        axes.legend(loc="upper left", ncols=3)


def spent_bars(
    key: str,
    title: str,
    labels: Sequence[str],
    spent: Sequence[float],
    appropriated: Sequence[float | None],
) -> str:
    """Horizontal bars, one per label (top to bottom): appropriated (wide, light) with spent
    (narrow, dark) over it."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    with _rc(key):
        n = max(len(labels), 1)
        width = 10.5
        left = min(3.5, 0.25 + 0.068 * max((len(label) for label in labels), default=4))
        figure = _figure((width, 0.85 + 0.27 * n), left=left, bottom=0.35, top=0.5)
        axes = figure.subplots()
        y = np.arange(len(labels))[::-1]
        appropriated_values = np.array([np.nan if v is None else v for v in appropriated], dtype=float)
        axes.barh(y, np.nan_to_num(appropriated_values), height=0.78, color=APPROPRIATED_COLOR, label="Appropriated")
        axes.barh(y, np.asarray(spent, dtype=float), height=0.4, color=SPENT_COLOR, label="Spent")
        axes.set_yticks(y, list(labels))
        axes.set_title(title)
        axes.grid(axis="x")
        axes.grid(axis="y", visible=False)
        axes.xaxis.set_major_locator(MaxNLocator(6))
        axes.xaxis.set_major_formatter(FuncFormatter(dollars))
        axes.tick_params(axis="y", length=0)
        axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, borderaxespad=0.1)
        axes.set_ylim(-0.6, len(labels) - 0.4)
        return _svg(figure)


def _figure(size: tuple[float, float], *, left: float, bottom: float, top: float, right: float = 0.15):
    """A figure with fixed margins in inches (cheaper than a layout engine, which draws twice)."""
    from matplotlib.figure import Figure

    width, height = size
    figure = Figure(figsize=size)
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return figure


def _rc(key: str):
    """The report's style; ``svg.hashsalt`` = key makes the SVG's clip-path and marker ids unique per chart."""
    import matplotlib

    return matplotlib.rc_context({**_RC, "svg.hashsalt": key})


def _svg(figure) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, no comments, no metadata."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = _COMMENTS.sub("", _PROLOG.sub("", buffer.getvalue(), count=1))
    # Let CSS size the chart: keep the viewBox, drop the fixed width/height in pt.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1).strip()


def small_cumulative_charts(
    key: str,
    months: Sequence[str],
    charts: Sequence[tuple[str, Sequence[float | None], Sequence[float | None], Sequence[float | None]]],
    *,
    size: tuple[float, float] = (3.6, 2.3),
) -> list[str]:
    """``cumulative_chart`` for many (title, expenses, baseline, planned) at once, small and without
    legend: one figure is drawn again with new data (far cheaper than a new figure per chart)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    out: list[str] = []
    with _rc(key):
        figure = _figure(size, left=0.6, bottom=0.42, top=0.3)
        axes = figure.subplots()
        x = np.arange(len(months))
        lines = {
            name: axes.plot(x, np.zeros(len(months)), label=name, color=color, linestyle=style, linewidth=width)[0]
            for name, color, style, width in (
                ("Baseline", BASELINE_COLOR, (0, (5, 3)), 1.6),
                ("Planned", PLANNED_COLOR, "-", 1.6),
                ("Expenses", EXPENSES_COLOR, "-", 2.4),
            )
        }
        ticks = month_ticks(months)
        shown = [i for i in x if i % 3 == 0]
        axes.set_xticks(shown, [ticks[i] for i in shown])
        axes.set_xlim(-0.4, len(months) - 0.6)
        axes.yaxis.set_major_locator(MaxNLocator(3))
        axes.yaxis.set_major_formatter(FuncFormatter(dollars))
        axes.tick_params(axis="x", labelsize=7, length=0)
        title = axes.set_title("", fontsize=9)
        for index, (text, expenses, baseline, planned) in enumerate(charts):
            for name, values in (("Baseline", baseline), ("Planned", planned), ("Expenses", expenses)):
                lines[name].set_ydata(np.array([np.nan if v is None else v for v in values], dtype=float))
            title.set_text(text)
            finite = np.array([v for v in (*expenses, *baseline, *planned) if v is not None and np.isfinite(v)])
            low, high = (min(0.0, finite.min()), max(finite.max(), 1.0)) if len(finite) else (0.0, 1.0)
            axes.set_ylim(low - 0.02 * (high - low), high + 0.05 * (high - low))
            with _rc(f"{key}-{index}"):
                out.append(_svg(figure))
    return out


class Spec(NamedTuple):
    """One chart to draw: the name of a drawing function of this module and its arguments
    (plain JSON values, so a spec can go to another process)."""

    function: str
    args: tuple
    kwargs: dict[str, Any] | None = None


DRAWERS = {"cumulative_chart", "small_cumulative_charts", "spent_bars"}


def draw(specs: Sequence[Spec]) -> list[Any]:
    """Each spec's result (SVG text, or a list of them), in order."""
    results = []
    for spec in specs:
        function, args, kwargs = spec
        if function not in DRAWERS:
            raise ValueError(f"unknown chart function {function!r}")
        results.append(globals()[function](*args, **(kwargs or {})))
    return results


def main() -> int:
    """``python -m bond_reporting.charts``: the chart worker. Imports the chart library at once
    (while the caller is still reading tables), then reads one line of JSON specs from stdin and
    writes the JSON list of results to stdout. Empty input (the run failed before): exit 0."""
    # The point of importing here: the library loads while the caller is still busy.
    import matplotlib.backends.backend_svg
    import matplotlib.figure
    import matplotlib.ticker  # noqa: F401

    text = sys.stdin.readline()
    if not text.strip():
        return 0
    specs = [Spec(f, tuple(a), k) for f, a, k in json.loads(text)]
    json.dump(draw(specs), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
