"""The paper's published rows (task card `reference`) beside the row of this run that measures the same method.

Task cards name methods the way the paper's table does ("vanilla", "FastV K2 R50", "PDrop λ0.5"); this module
reads those names and finds our matching schedule, so "paper vs this run" needs no hand-kept mapping.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from pdrop_eval.report.load import Run

_FASTV = re.compile(r"fastv\D*k\s*(\d+)\D*r\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PDROP = re.compile(r"pdrop\D*(?:λ|lambda|lam)\s*=?\s*(\d*\.?\d+)", re.IGNORECASE)
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
    """Our row for a paper method name, or None. PDrop prefers the paper's layer split (L/4, L/2, 3L/4)."""
    name = method.strip().lower()
    if name == "vanilla":
        candidates = rows[rows["method"] == "vanilla"]
    elif fastv := _FASTV.search(name):
        keep = 1.0 - float(fastv.group(2)) / 100.0
        candidates = rows[
            (rows["method"] == "fastv")
            & (rows["layers"] == fastv.group(1))
            & rows["ratios"].map(lambda r: len(r) == 1 and math.isclose(r[0], keep, abs_tol=1e-6))
        ]
    elif pdrop := _PDROP.search(name):
        lam = float(pdrop.group(1))
        candidates = rows[(rows["method"] == "pdrop") & rows["lam"].map(lambda v: math.isclose(v, lam, abs_tol=1e-6))]
        ranked = sorted((row for _, row in candidates.iterrows()), key=lambda row: _pdrop_rank(row, num_layers))
        return ranked[0] if ranked else None
    else:
        return None
    return None if candidates.empty else candidates.iloc[0]


def _pdrop_rank(row: pd.Series, num_layers: int | None) -> tuple[bool, bool]:
    paper_split = num_layers and "-".join(str(num_layers * q // 4) for q in (1, 2, 3))
    return (row["layers"] != paper_split, row["positions"] not in ("compact", ""))


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
