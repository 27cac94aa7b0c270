"""Results as one tidy table: a row per run × task × schedule, the numbers every other view is drawn from.

The spreadsheet, the plots and the Pareto tables all read this frame, so a value (a Δ, a TFLOPs figure) is
computed once and cannot disagree between the xlsx and the HTML.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pdrop_eval.methods.registry import METHODS, describe_row, display_name
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
        "budget": math.nan,
        "image_tokens_per_layer": "",
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
        budget=_number(schedule.get("budget")),
        image_tokens_per_layer=layer_profile(result.get("image_tokens_per_layer")),
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


def method_curves(frame: pd.DataFrame, x: str = "tflops_paper") -> dict[str, pd.DataFrame]:
    """Every method's rows joined into curves, each sorted by cost: one per run × method × layer list × position
    mode, so PDrop's λ values and another method's budgets each draw one line, and two runs or two layer lists are
    never joined. Keyed by a legend label: "PDrop at layers 8-16-24 (λ varies)", "DivPrune (budget varies)", or
    the row's own name where a curve is a single point."""
    several_runs = frame["run"].nunique() > 1
    curves = {}
    for (run, method, layers, positions), rows in frame.groupby(
        ["run", "method", "layers", "positions"], sort=False
    ):
        if len(rows) == 1:
            label = describe_row(rows.iloc[0])
        else:
            varies = "λ varies" if rows["lam"].notna().all() else "budget varies"
            at = f" at layers {layers}" if "-" in layers else ""  # a drop at one layer is in each point's name
            label = f"{display_name(method)}{at} ({varies})"
            default = METHODS[method].default_positions if method in METHODS else "compact"
            if positions and positions != default:
                label += f" ({positions} positions)"
        if several_runs:
            label += f" [{run}]"
        curves[label] = rows.sort_values(x)
    return curves


def budget_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Methods side by side at each budget they were run for (`--methods … --budget …`): one row per budget,
    per method its primary and both TFLOPs, so equal budgets read as (nearly) matched cost."""
    budgeted = frame.dropna(subset=["budget"])
    rows = []
    for (run, budget), group in budgeted.groupby(["run", "budget"], sort=False):
        for _, row in group.iterrows():
            rows.append({
                "run": run,
                "budget": budget,
                "method": display_name(row["method"]),
                "schedule": row["schedule"],
                "retained_tokens": row["retained_tokens"],
                "tflops_paper": row["tflops_paper"],
                "tflops_exact": row["tflops_exact"],
                "primary": row["primary"],
                "prefill_ms": row["prefill_ms"],
            })
    columns = ["run", "budget", "method", "schedule", "retained_tokens", "tflops_paper", "tflops_exact", "primary",
               "prefill_ms"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["run", "budget", "tflops_paper"], ascending=[True, False, True], kind="stable")


def layer_profile(counts: Any) -> str:
    """Image tokens per LLM layer as runs: "576×2, 166×30" (means over samples, one decimal where not whole)."""
    if not isinstance(counts, list) or not counts:
        return ""
    runs: list[list] = []
    for value in counts:
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return ", ".join(f"{value:.4g}×{length}" for value, length in runs)


def readable_schedule(row: pd.Series) -> str:
    """What a legend or caption calls a schedule ("random drop at 8-16-24, keep 50%/25%/12.5%", not its label):
    the method's own `describe`."""
    return describe_row(row)
