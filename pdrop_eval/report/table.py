"""Results as one tidy table: a row per run × task × schedule, the numbers every other view is drawn from.

The spreadsheet, the plots and the Pareto tables all read this frame, so a value (a Δ, a TFLOPs figure) is
computed once and cannot disagree between the xlsx and the HTML.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pdrop_eval.report.load import Run
from pdrop_eval.report.significance import significance_frame

# Leading key segments that hold counts (n, POPE's confusion cells), shown as integers rather than percentages.
COUNT_PREFIXES = frozenset({"n", "tp", "fp", "tn", "fn"})
# TFLOPs conventions (REFERENCE §2): name → what it counts; the table column is f"tflops_{name}".
TFLOPS_CONVENTIONS = {
    "paper": "image tokens in the LLM, multiply-accumulates",
    "exact": "every FLOP that ran, prefill and decode",
}
_NUMERIC_FIELDS = (
    "n",
    "failed",
    "primary",
    "tflops_paper",
    "tflops_exact",
    "retained_tokens",
    "prefill_ms",
    "decode_ms_per_token",
    "samples_per_s",
)


def results_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per result of every run, in run order then the order each run wrote them, with Δ vs vanilla and
    its significance (confidence intervals, paired test, agreement: `significance.SIGNIFICANCE_COLUMNS`)."""
    rows = [_row(run, result) for run in runs for result in run.results]
    frame = pd.DataFrame(rows, columns=list(_row_template()))
    frame["delta_vs_vanilla"] = _delta_vs_vanilla(frame)
    return frame.join(significance_frame(runs, frame))


def _row_template() -> dict[str, Any]:
    return {
        "run": "",
        "task": "",
        "schedule": "",
        "method": "",
        "lam": math.nan,
        "layers": "",
        "ratios": (),
        "positions": "",
        "primary_metric": "",
        "primary_unit": "%",
        **{f: math.nan for f in _NUMERIC_FIELDS},
        "metrics": {},
        "predictions": "",
        "run_dir": "",
    }


def _row(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    schedule = result["schedule"]
    row = _row_template()
    row.update(
        run=run.name,
        task=result["task"],
        schedule=schedule["label"],
        method=schedule["method"],
        lam=_number(schedule.get("lam")),
        layers="-".join(str(v) for v in schedule["layers"]),
        ratios=tuple(_number(v) for v in schedule["ratios"]),
        positions=schedule.get("positions") or "",
        primary_metric=result["primary_metric"],
        primary_unit=result.get("primary_unit") or "%",
        metrics={k: _number(v) for k, v in result["metrics"].items()},
        predictions=result.get("predictions") or "",
        run_dir=str(run.directory),
    )
    row.update({f: _number(result.get(f)) for f in _NUMERIC_FIELDS})
    return row


def _number(value: Any) -> float:
    """JSON null (and anything non-numeric a scorer left) becomes NaN so columns stay numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _delta_vs_vanilla(frame: pd.DataFrame) -> pd.Series:
    """Primary minus the vanilla primary of the same run and task; NaN where that run has no vanilla row."""
    vanilla = frame[frame["method"] == "vanilla"].drop_duplicates(["run", "task"]).set_index(["run", "task"])
    base = [vanilla["primary"].get((r, t), math.nan) for r, t in zip(frame["run"], frame["task"])]
    return frame["primary"] - pd.Series(base, index=frame.index, dtype=float)


def is_count_key(key: str) -> bool:
    return key.split("/", 1)[0] in COUNT_PREFIXES


def metric_keys(frame: pd.DataFrame) -> list[str]:
    """Every metric key in the rows, headline keys (no '/') first, then sub-metrics in the scorer's order."""
    keys: dict[str, None] = {}
    for metrics in frame["metrics"]:
        keys.update(dict.fromkeys(metrics))
    return sorted(keys, key=lambda k: "/" in k)


def headline_keys(frame: pd.DataFrame) -> list[str]:
    """Top-level metric keys other than the sample count: what a Summary row shows beside the primary."""
    return [k for k in metric_keys(frame) if "/" not in k and k != "n"]


def pareto_front(frame: pd.DataFrame, x: str = "tflops_paper") -> pd.DataFrame:
    """Rows no other row beats: none has a primary at least as high for at most the TFLOPs, better in one.

    Sorted by cost, so the table reads as "what each extra TFLOP buys".
    """
    rows = frame.dropna(subset=["primary", x])
    cost, score = rows[x].to_numpy(), rows["primary"].to_numpy()
    keep = [
        not any((cost <= c) & (score >= s) & ((cost < c) | (score > s)))
        for c, s in zip(cost, score)
    ]
    # Positional selection keeps the columns when nothing is left (every primary NaN, e.g. MME cut by --limit).
    kept = rows.iloc[[i for i, k in enumerate(keep) if k]]
    return kept.sort_values([x, "primary"], ascending=[True, False])


def pdrop_curves(frame: pd.DataFrame, x: str = "tflops_paper") -> dict[str, pd.DataFrame]:
    """PDrop rows grouped into one curve per layer schedule (and position mode), each sorted by cost.

    Keyed by a legend label such as "PDrop 8-16-24" ("… original positions" when not the default compact);
    a merged report also separates runs so two runs' curves are never joined into one line.
    """
    pdrop = frame[frame["method"] == "pdrop"]
    several_runs = frame["run"].nunique() > 1
    curves = {}
    for (run, layers, positions), rows in pdrop.groupby(["run", "layers", "positions"], sort=False):
        label = f"PDrop at layers {layers} (λ varies)"
        if positions and positions != "compact":
            label += f" ({positions} positions)"
        if several_runs:
            label += f" [{run}]"
        curves[label] = rows.sort_values(x)
    return curves


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.3g}%"


def readable_schedule(row: pd.Series) -> str:
    """What a legend or caption calls a schedule: "random drop at 8-16-24, keep 50%/25%/12.5%", not its file label."""
    method, layers, ratios = row["method"], row["layers"], tuple(row["ratios"])
    keep = "/".join(_percent(r) for r in ratios)
    if method == "vanilla":
        name = "vanilla (all image tokens)"
    elif method == "fastv":
        name = f"FastV after layer {layers}, drop {_percent(1 - ratios[0])}" if ratios else "FastV"
    elif method == "random":
        name = f"random drop at {layers}, keep {keep}"
    elif method == "pdrop" and not math.isnan(row["lam"]):
        name = f"PDrop λ{round(row['lam'], 3):g} at {layers}"
    else:
        name = f"{method} at {layers}, keep {keep}"
    default = "original" if method == "fastv" else "compact"
    if row["positions"] and row["positions"] != default and method != "vanilla":
        name += f" ({row['positions']} positions)"
    return name
