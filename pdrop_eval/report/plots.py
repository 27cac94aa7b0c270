"""The sweep plot: a task's primary metric against TFLOPs, one colour and marker per method, each method's points
joined over its λ values or budgets, single settings as markers, the paper's points hollow.

Drawn on a bare matplotlib `Figure` (no pyplot), so no global backend state is touched and nothing needs closing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.transforms import offset_copy

from pdrop_eval.methods.registry import method_colour, method_marker
from pdrop_eval.report.reference import paper_method
from pdrop_eval.report.table import TFLOPS_CONVENTIONS, method_curves
from pdrop_eval.store import atomic_path

_MARKER_SIZE = {"*": 15, "D": 8, "X": 10, "o": 7}
_LINE_STYLES = ("-", "--", ":", "-.")
# Point labels (λ, budget) of alternate curves go below and above their points, so neighbouring curves' labels
# (several layer schedules, methods or runs with similar costs) do not print over each other.
_POINT_LABEL_OFFSETS = ((5, -11), (5, 5))
_HALO = [patheffects.withStroke(linewidth=2.5, foreground="white")]
# A paper point shares our axis only when both are on the paper's scale and within this factor of each other.
_SAME_SCALE = 2.0


def plot_task(rows: pd.DataFrame, reference: pd.DataFrame, convention: str, out_path: Path, task: str) -> Path:
    """Write the plot for one task's rows (one or several runs) and its published reference rows."""
    fig = task_figure(rows, reference, convention, task)
    with atomic_path(out_path) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    return out_path


def task_figure(rows: pd.DataFrame, reference: pd.DataFrame, convention: str, task: str) -> Figure:
    x = f"tflops_{convention}"
    metric = rows["primary_metric"].iloc[0]
    unit = rows["primary_unit"].iloc[0]
    fig = Figure(figsize=(9.5, 5.2))
    ax = fig.add_subplot()
    curves = method_curves(rows, x)
    joined = [(float(cx), float(cy)) for c in curves.values() if len(c) > 1 for cx, cy in zip(c[x], c["primary"])]
    placed: list[tuple[float, float]] = []
    drawn: dict[str, int] = {}
    for i, (label, curve) in enumerate(curves.items()):
        method = curve["method"].iloc[0]
        colour, marker = method_colour(method), method_marker(method)
        size = _MARKER_SIZE.get(marker, 8)
        style = _LINE_STYLES[drawn.get(method, 0) % len(_LINE_STYLES)]  # a method's second curve: same colour
        drawn[method] = drawn.get(method, 0) + 1
        if len(curve) == 1:
            point = curve.iloc[0]
            transform = _beside_earlier(ax, fig, placed, joined, rows, point, x)
            ax.plot([point[x]], [point["primary"]], linestyle="none", marker=marker, ms=size, color=colour,
                    label=label, transform=transform, zorder=4, clip_on=False)
            _error_bars(ax, curve, x, colour, transform)
            continue
        ax.plot(curve[x], curve["primary"], marker=marker, ms=size, linestyle=style, color=colour, label=label,
                clip_on=False)
        _error_bars(ax, curve, x, colour)
        offset = _POINT_LABEL_OFFSETS[i % len(_POINT_LABEL_OFFSETS)]
        for _, point in curve.iterrows():
            text = _point_label(point)
            if text:
                # A label below a point on the axis floor would print over the tick labels.
                at = _POINT_LABEL_OFFSETS[1] if point["primary"] <= rows["primary"].min() else offset
                ax.annotate(text, (point[x], point["primary"]), xytext=at, zorder=5, textcoords="offset points",
                            fontsize=8, color=colour, path_effects=_HALO)
    handles, labels = ax.get_legend_handles_labels()
    paper = reference[reference["task"] == task].drop_duplicates(["paper_method"])
    if not paper.empty:
        paper_ax = ax if _same_scale(rows, paper, x) else _paper_axis(ax, paper)
        for _, point in paper.iterrows():
            marker = method_marker(paper_method(point["paper_method"]) or "")
            handle, = paper_ax.plot([point["paper_tflops"]], [point["paper_score"]], linestyle="none", marker=marker,
                                    ms=1.5 * _MARKER_SIZE.get(marker, 8), markerfacecolor="none", markeredgewidth=1.6,
                                    color="0.25")
            handles.append(handle)
            labels.append(f"paper ({point['paper_model']}): {point['paper_method']}")
    ax.set_xlabel(f"TFLOPs per sample, {convention} convention ({TFLOPS_CONVENTIONS[convention]})")
    # Tiny models cost thousandths of a TFLOP: plain ticks would print 0.0006, 0.0008… into one another.
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_title(f"{task}: {metric} vs TFLOPs — higher and further left is better")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    _keep_y_in_range(ax, rows, unit)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _same_scale(rows: pd.DataFrame, paper: pd.DataFrame, x: str) -> bool:
    """Our TFLOPs and the paper's share an axis only when they measure the same thing at a similar size."""
    ours, theirs = rows[x].max(), paper["paper_tflops"].max()
    return x == "tflops_paper" and ours > 0 and theirs > 0 and 1 / _SAME_SCALE <= ours / theirs <= _SAME_SCALE


def _paper_axis(ax: Axes, paper: pd.DataFrame) -> Axes:
    """A top x axis for the paper's points when our model's TFLOPs are on another scale (a tiny demo model)."""
    top = ax.twiny()
    model = paper["paper_model"].iloc[0] or "the paper's model"
    top.set_xlabel(f"paper's TFLOPs ({model}, paper convention) — hollow markers", fontsize=9)
    return top


def _point_label(point: pd.Series) -> str:
    """What a point on a curve is labelled with: its λ on a PDrop curve, else the budget it was chosen for."""
    if pd.notna(point["lam"]):
        return f"λ{round(point['lam'], 3):g}"
    return f"{point['budget']:g}" if pd.notna(point["budget"]) else ""


def _error_bars(ax: Axes, points: pd.DataFrame, x: str, colour: str, transform=None) -> None:
    """The 95% interval of each point as a vertical bar (nothing where no interval could be computed)."""
    kept = points.dropna(subset=["ci_low", "ci_high", "primary"]) if "ci_low" in points else points.iloc[0:0]
    if kept.empty:
        return
    primary = kept["primary"].astype(float)
    below = (primary - kept["ci_low"].astype(float)).clip(lower=0)
    above = (kept["ci_high"].astype(float) - primary).clip(lower=0)
    ax.errorbar(kept[x].astype(float), primary, yerr=[below, above], fmt="none", ecolor=colour, elinewidth=1,
                capsize=3, alpha=0.7, transform=transform if transform is not None else ax.transData)


def _beside_earlier(ax: Axes, fig: Figure, placed: list[tuple[float, float]], joined: list[tuple[float, float]],
                    rows: pd.DataFrame, point: pd.Series, x: str):
    """A single marker that would land on an earlier one or on a curve's point (within 1% of the axes' spans: a
    0.1% TFLOPs difference is invisible) is shifted sideways by a few points per clash so each stays visible; the
    data values are unchanged."""
    span_x = float(rows[x].max() - rows[x].min()) or abs(float(rows[x].max())) or 1.0
    span_y = max(float(rows["primary"].max() - rows["primary"].min()), 10.0)
    here = (float(point[x]), float(point["primary"]))
    taken = [*placed, *joined]
    clashes = sum(abs(cx - here[0]) <= 0.01 * span_x and abs(cy - here[1]) <= 0.01 * span_y for cx, cy in taken)
    placed.append(here)
    return offset_copy(ax.transData, fig=fig, x=9 * clashes, y=0, units="points") if clashes else ax.transData


def _keep_y_in_range(ax: Axes, rows: pd.DataFrame, unit: str) -> None:
    """Scores are never negative: never show the axis below 0, nor a percentage far above 100, even when every
    score ties."""
    values = pd.concat([rows["primary"], rows.get("ci_low", rows["primary"]), rows.get("ci_high", rows["primary"])])
    values = values.dropna().astype(float)
    if values.empty:
        return
    low, high = ax.get_ylim()
    if values.min() >= 0:
        low = max(low, 0.0)
    if unit == "%" and values.max() <= 100:
        high = min(high, 100.0 + 0.05 * (high - low))
    if high - low < 1:
        centre = values.mean()
        low, high = max(0.0, centre - 5), max(0.0, centre - 5) + 10
    ax.set_ylim(low, high)
