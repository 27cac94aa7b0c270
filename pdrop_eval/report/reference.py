"""The paper's published rows (task card `reference`) beside the row of this run that measures the same method.

Task cards name methods the way the paper's table does ("vanilla", "FastV K2 R50", "PDrop λ0.5"); this module
reads those names and finds our matching schedule, so "paper vs this run" needs no hand-kept mapping.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pdrop_eval.methods.registry import METHODS
from pdrop_eval.report.load import Run

REFERENCE_COLUMNS = [
    "run",
    "task",
    "paper_model",
    "our_model",
    "paper_metric",
    "paper_method",
    "paper_tflops",
    "paper_score",
    "schedule",
    "tflops_paper",
    "primary",
    "ours_minus_paper",
    "source",
]


def reference_frame(runs: list[Run], frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task, published row); our columns are NaN/empty where no schedule matches."""
    rows = []
    for run in runs:
        num_layers = (run.info.get("model") or {}).get("num_layers")
        for task, card in run.tasks.items():
            reference = card.get("reference") if isinstance(card, dict) else None
            if not reference:
                continue
            ours = frame[(frame["run"] == run.name) & (frame["task"] == task)]
            for paper in reference.get("rows") or []:
                match = match_method(str(paper.get("method", "")), ours, num_layers)
                score = _float(paper.get("score"))
                primary = math.nan if match is None else match["primary"]
                rows.append({
                    "run": run.name,
                    "task": task,
                    "paper_model": reference.get("model", ""),
                    "our_model": str((run.info.get("model") or {}).get("name", "")),
                    "paper_metric": reference.get("metric", ""),
                    "paper_method": paper.get("method", ""),
                    "paper_tflops": _float(paper.get("tflops")),
                    "paper_score": score,
                    "schedule": "" if match is None else match["schedule"],
                    "tflops_paper": math.nan if match is None else match["tflops_paper"],
                    "primary": primary,
                    "ours_minus_paper": primary - score,
                    "source": reference.get("source", ""),
                })
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def match_method(method: str, rows: pd.DataFrame, num_layers: int | None) -> pd.Series | None:
    """Our row for a paper method name, or None: each registered method reads the names of its own paper rows
    (`PruningMethod.paper_rows`), best match first."""
    name = method.strip().lower()
    for cls in METHODS.values():
        candidates = cls.paper_rows(name, rows, num_layers)
        if candidates is not None:
            return None if candidates.empty else candidates.iloc[0]
    return None


def paper_method(method: str) -> str | None:
    """The registered method a paper's row name measures ("FastV K2 R50" → "fastv"), or None."""
    empty = pd.DataFrame(columns=["method", "lam", "layers", "ratios", "positions"])
    name = method.strip().lower()
    return next((cls.name for cls in METHODS.values() if cls.paper_rows(name, empty, None) is not None), None)


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
