"""What a reader must know before trusting a comparison: another model than the paper's, a partial task, runs made
under different settings. Said once in the report and on the console, each as one sentence naming what differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.report.load import Run

# Settings that change the numbers: runs that differ in one of them are not points of one sweep.
_COMPARED_SETTINGS = ("model", "dtype", "max_new_tokens", "prompt_suffix", "scorer", "n")


@dataclass(frozen=True)
class Caveat:
    """One warning; `task` is None for the whole report."""

    task: str | None
    text: str


def model_key(name: str) -> str:
    """'llava-hf/llava-1.5-7b-hf', '/ckpt/llava-1.5-7b' and 'LLaVA-1.5-7B' all name one model."""
    base = Path(str(name).rstrip("/")).name.lower()
    return re.sub(r"-hf$", "", base)


def _task_size(run: Run, task: str) -> int | None:
    """The task's full size: as recorded in metrics.json, else from its built-in card."""
    card = run.tasks.get(task) if isinstance(run.tasks.get(task), dict) else {}
    if isinstance(card.get("size"), int):
        return card["size"]
    from pdrop_eval.registry import get_task

    try:
        return get_task(task).size
    except PdropEvalError:
        return None


def run_settings(run: Run, task: str, rows: pd.DataFrame) -> dict[str, Any]:
    """The settings of one run for one task that decide whether its scores compare with another run's."""
    card = run.tasks.get(task) if isinstance(run.tasks.get(task), dict) else {}
    settings = run.info.get("settings") or {}
    model = run.info.get("model") or {}
    sizes = sorted({int(n) for n in rows["n"].dropna()})
    return {
        "model": model.get("name"),
        "dtype": model.get("dtype"),
        "max_new_tokens": card.get("max_new_tokens", settings.get("max_new_tokens")),
        "prompt_suffix": card.get("prompt_suffix"),
        "scorer": settings.get("scorer", "native"),
        "n": sizes[0] if len(sizes) == 1 else sizes,
    }


def paper_model_caveats(runs: list[Run]) -> list[Caveat]:
    """A run on another model than the one the task card's published numbers are for."""
    out = []
    for run in runs:
        ours = str((run.info.get("model") or {}).get("name", ""))
        for task, card in run.tasks.items():
            reference = card.get("reference") if isinstance(card, dict) else None
            if not reference or not reference.get("model"):
                continue
            if model_key(ours) != model_key(reference["model"]):
                out.append(
                    Caveat(
                        task,
                        (
                            f"run {run.name} evaluated {ours}, but the paper's {task} numbers are for {reference['model']}: "
                            "'ours − paper' compares two different models, not a reproduction"
                        ),
                    )
                )
    return out


def partial_task_caveats(runs: list[Run], frame: pd.DataFrame) -> list[Caveat]:
    """Scores on fewer samples than the task has (--limit, or a data file holding part of it)."""
    out = []
    for run in runs:
        for task, rows in frame[frame["run"] == run.name].groupby("task", sort=False):
            size = _task_size(run, str(task))
            n = rows["n"].dropna()
            if size and len(n) and n.max() < size:
                out.append(
                    Caveat(
                        str(task),
                        (
                            f"run {run.name} scored {task} on n={int(n.max()):,} of its {size:,} samples "
                            f"({int(n.max()) / size:.1%}): not comparable with full-set numbers such as the paper's"
                        ),
                    )
                )
    return out


def incompatible_runs(runs: list[Run], frame: pd.DataFrame) -> dict[str, list[str]]:
    """Per task measured by several runs, the settings that differ between them (empty when they agree)."""
    out: dict[str, list[str]] = {}
    for task, rows in frame.groupby("task", sort=False):
        by_run = {
            run.name: run_settings(run, str(task), rows[rows["run"] == run.name])
            for run in runs
            if (rows["run"] == run.name).any()
        }
        if len(by_run) < 2:
            continue
        differing = []
        for key in _COMPARED_SETTINGS:
            values = {name: settings[key] for name, settings in by_run.items()}
            if len({repr(v) for v in values.values()}) > 1:
                differing.append(f"{key} (" + ", ".join(f"{name}: {v}" for name, v in values.items()) + ")")
        if differing:
            out[str(task)] = differing
    return out


def merge_caveats(runs: list[Run], frame: pd.DataFrame) -> list[Caveat]:
    return [
        Caveat(
            task,
            (
                f"the runs merged for {task} differ in "
                + "; ".join(differing)
                + ": their rows are shown side by side with a Pareto front per run, not one front across them"
            ),
        )
        for task, differing in incompatible_runs(runs, frame).items()
    ]


def report_caveats(runs: list[Run], frame: pd.DataFrame) -> list[Caveat]:
    return [*paper_model_caveats(runs), *partial_task_caveats(runs, frame), *merge_caveats(runs, frame)]
