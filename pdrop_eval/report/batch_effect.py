"""The report's "Batch effect" section: per task, how many samples `--check-batch-effect` reran at batch 1 came out
identical to the run's batched result (metrics.json `batch_effect`; pdrop_eval.batch_effect says why it matters)."""

from __future__ import annotations

from pdrop_eval.report.document import Block, Heading, Paragraph, Table, fmt
from pdrop_eval.report.load import Run

DIFFERING_SHOWN = 5


def batch_effect_blocks(task: str, runs: list[Run]) -> list[Block]:
    """A table of every checked schedule of `task`, or nothing when no run checked it."""
    several_runs = len(runs) > 1
    rows = []
    for run in runs:
        for result in run.results:
            check = result.get("batch_effect")
            if result["task"] != task or not isinstance(check, dict):
                continue
            differing = [str(d) for d in check.get("differing") or []]
            shown = ", ".join(differing[:DIFFERING_SHOWN]) + (" …" if len(differing) > DIFFERING_SHOWN else "")
            share, overlap = check.get("share"), check.get("kept_overlap")
            rows.append(
                [
                    *([run.name] if several_runs else []),
                    result["schedule"]["label"],
                    ", ".join(str(size) for size in check.get("run_batch_sizes") or []) or "—",
                    fmt(check.get("checked"), 0),
                    fmt(check.get("answers_identical"), 0),
                    fmt(check.get("kept_identical"), 0),
                    "—" if share is None else f"{100 * share:.1f}%",
                    "—" if overlap is None else f"{100 * overlap:.2f}%",
                    shown or "—",
                ]
            )
    if not rows:
        return []
    columns = [
        "schedule",
        "run batch sizes",
        "checked",
        "same answer",
        "same kept tokens",
        "identical",
        "kept overlap",
        "differing samples",
    ]
    return [
        Heading("Batch effect", 3),
        Paragraph(
            "The first samples of each schedule were run again alone (batch 1) and compared with what the run "
            "wrote for them in its batches: the answer text and the image tokens kept at every stage. In float32 "
            "they agree exactly; in bf16/fp16 a batch can round differently and flip a near-tie. Kept overlap is "
            "the share of kept tokens both runs kept (per stage, averaged): just under 100% when a tie at the cut "
            "swapped a token."
        ),
        Table(["run", *columns] if several_runs else columns, rows),
    ]
