"""The sweep report's content: per task a metric-vs-TFLOPs plot, the schedules, the Pareto front, the paper's
numbers beside ours and kept-token maps; rendered to report.md and a self-contained report.html.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pdrop_eval.report.document import Block, Figure, Heading, Paragraph, Table, fmt, fmt_tflops, to_html, to_markdown
from pdrop_eval.report.kept_maps import (
    KeptSample,
    draw_kept_map,
    find_kept_samples,
    grid_mismatch,
    read_sample_image,
)
from pdrop_eval.report.load import Run
from pdrop_eval.report.plots import plot_task
from pdrop_eval.report.reference import match_method
from pdrop_eval.report.table import TFLOPS_CONVENTIONS, pareto_front
from pdrop_eval.store import write_text_atomic

KEPT_MAPS_PER_TASK = 3
FAILED_SAMPLES_SHOWN = 20
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_sweep_report(
    runs: list[Run],
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    markdown_path: Path,
    html_path: Path,
    convention: str = "paper",
) -> list[Path]:
    """Write report.md (linking PNGs in <out>/report_files/) and report.html (embedding them); return the PNGs."""
    files_dir = markdown_path.parent / "report_files"
    blocks = sweep_blocks(runs, frame, reference, files_dir, convention)
    title = "PyramidDrop sweep: " + ", ".join(run.name for run in runs)
    write_text_atomic(markdown_path, to_markdown(blocks, markdown_path.parent))
    write_text_atomic(html_path, to_html(blocks, title))
    return [b.path for b in blocks if isinstance(b, Figure)]


def sweep_blocks(
    runs: list[Run], frame: pd.DataFrame, reference: pd.DataFrame, files_dir: Path, convention: str
) -> list[Block]:
    several_runs = len(runs) > 1
    blocks: list[Block] = [
        Heading("PyramidDrop sweep: " + ", ".join(run.name for run in runs), 1),
        Paragraph(
            "TFLOPs are per sample. Paper convention: only image tokens inside the LLM, multiply-accumulates "
            "(reproduces the paper's 3.82 for LLaVA-1.5-7B). Exact: every FLOP that ran (all tokens, vision tower, "
            f"ranking, decode). Plots and Pareto fronts use the {convention} convention. "
            "Δ is the primary metric minus vanilla's, same task and run."
        ),
        _runs_table(runs),
    ]
    for task, rows in frame.groupby("task", sort=False):
        blocks += _task_blocks(str(task), rows, reference, runs, files_dir, convention, several_runs)
    return blocks


def _runs_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        model = run.info.get("model") or {}
        rows.append([
            run.name,
            str(model.get("name", "")),
            " ".join(str(model.get(k, "")) for k in ("dtype", "attn", "device")),
            str(run.info.get("created", "")),
            str(run.info.get("git_sha", "")),
            str(run.directory),
        ])
    return Table(["run", "model", "dtype / attention / device", "created", "git sha", "directory"], rows)


def _task_blocks(
    task: str,
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    runs: list[Run],
    files_dir: Path,
    convention: str,
    several_runs: bool,
) -> list[Block]:
    metric = rows["primary_metric"].iloc[0]
    x = f"tflops_{convention}"
    safe = _UNSAFE_FILENAME.sub("_", task)
    plot = plot_task(rows, reference, convention, files_dir / f"{safe}_tflops.png", task)
    paper = reference[reference["task"] == task]
    blocks: list[Block] = [
        Heading(task, 2),
        Figure(plot, f"{task}: {metric} against TFLOPs per sample, {convention} convention "
                     f"({TFLOPS_CONVENTIONS[convention]}); PDrop one curve per layer schedule over λ, baselines as "
                     "single markers, the paper's published points hollow"),
        Heading("Schedules", 3),
        _schedule_table(rows.sort_values(["run", x], ascending=[True, False]), metric, several_runs),
        Heading(f"Pareto front: the best {metric} for its TFLOPs ({convention} convention)", 3),
        _schedule_table(pareto_front(rows, x), metric, several_runs),
    ]
    if not paper.empty:
        blocks += [Heading("Paper vs this run", 3), _paper_table(paper, several_runs)]
    blocks += _failed_blocks(task, runs)
    blocks += _kept_map_blocks(task, rows, runs, files_dir)
    return blocks


def _failed_blocks(task: str, runs: list[Run]) -> list[Block]:
    """Samples whose input could not be used (metrics.json `failed_samples`): scored wrong, so a reader must see
    them beside the scores. A sample fails before any schedule runs, so each is listed once per run."""
    failed: dict[tuple[str, str], str] = {}
    for run in runs:
        for result in run.results:
            if result["task"] != task:
                continue
            for item in result.get("failed_samples") or []:
                if isinstance(item, dict):
                    failed.setdefault((run.name, str(item.get("id"))), str(item.get("reason", "")))
    if not failed:
        return []
    shown = list(failed.items())[:FAILED_SAMPLES_SHOWN]
    more = len(failed) - len(shown)
    note = f" The first {len(shown)} are listed; see `failed` in the predictions files for the rest." if more else ""
    several_runs = len(runs) > 1
    columns = ["run", "sample", "reason"] if several_runs else ["sample", "reason"]
    rows = [[run, sample, reason] if several_runs else [sample, reason] for (run, sample), reason in shown]
    return [
        Heading(f"Failed samples ({len(failed)})", 3),
        Paragraph(
            "These samples' inputs could not be used (unreadable image, literal <image> in the question...). Each "
            f"is scored wrong in every schedule and counted in `failed` in metrics.json.{note}"
        ),
        Table(columns, rows),
    ]


def _schedule_table(rows: pd.DataFrame, metric: str, several_runs: bool) -> Table:
    columns = ["schedule", "method", "λ", "layers", metric, "Δ vs vanilla", "TFLOPs paper", "TFLOPs exact",
               "retained tokens", "prefill ms", "samples/s"]
    body = [
        [
            r["schedule"], r["method"], fmt(r["lam"], 1), r["layers"] or "—", fmt(r["primary"]),
            fmt(r["delta_vs_vanilla"], signed=True), fmt_tflops(r["tflops_paper"]), fmt_tflops(r["tflops_exact"]),
            fmt(r["retained_tokens"], 1), fmt(r["prefill_ms"], 1), fmt(r["samples_per_s"]),
        ]
        for _, r in rows.iterrows()
    ]
    if several_runs:
        columns = ["run", *columns]
        body = [[r, *line] for r, line in zip(rows["run"], body)]
    return Table(columns, body)


def _paper_table(paper: pd.DataFrame, several_runs: bool) -> Table:
    metric = paper["paper_metric"].iloc[0] or "score"
    columns = ["paper method", "paper TFLOPs", f"paper {metric}", "our schedule", "our TFLOPs (paper conv.)",
               "our score", "ours − paper"]
    body = [
        [
            r["paper_method"], fmt(r["paper_tflops"]), fmt(r["paper_score"]), r["schedule"] or "no matching run",
            fmt_tflops(r["tflops_paper"]), fmt(r["primary"]), fmt(r["ours_minus_paper"], signed=True),
        ]
        for _, r in paper.iterrows()
    ]
    if several_runs:
        columns = ["run", *columns]
        body = [[r, *line] for r, line in zip(paper["run"], body)]
    return Table(columns, body)


def _kept_map_blocks(task: str, rows: pd.DataFrame, runs: list[Run], files_dir: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading("Kept image tokens", 3),
        Paragraph(
            "Each panel shows the image as the model saw it after one PDrop stage: bright patches are the image "
            "tokens kept (ranked by the last instruction token's attention), dimmed ones were dropped and no later "
            "layer sees them. Good pruning keeps the patches the question is about."
        ),
    ]
    drawn = 0
    for run in runs:
        run_rows = rows[rows["run"] == run.name]
        if run_rows.empty:
            continue
        grid = run.image_grid
        if grid is None:
            model = (run.info.get("model") or {}).get("name", "this model")
            blocks.append(Paragraph(
                f"Run {run.name}: no kept-token maps, they need a fixed patch grid (run.model.image_grid) and "
                f"{model} has none (LLaVA-NeXT tiles each image differently)."
            ))
            continue
        for sample in _samples(run, task, run_rows, KEPT_MAPS_PER_TASK - drawn):
            problem = grid_mismatch(sample, grid)
            image = None if problem else read_sample_image(sample)
            if image is None and not problem:
                problem = f"its image {sample.image} cannot be read"
            if problem:
                blocks.append(Paragraph(f"Run {run.name}, sample {sample.sample_id}: no map, {problem}."))
                continue
            name = _UNSAFE_FILENAME.sub("_", f"{task}_kept_{run.name}_{sample.sample_id}") + ".png"
            path = draw_kept_map(sample, grid, files_dir / name, image)
            blocks.append(Figure(path, f"{task}, sample {sample.sample_id}, {sample.schedule} (run {run.name}): "
                                       "kept image tokens after each stage, dropped ones dimmed"))
            drawn += 1
    if drawn == 0 and len(blocks) == 2:
        blocks.append(Paragraph("No sample images with PDrop predictions were saved for this task."))
    return blocks


def _samples(run: Run, task: str, rows: pd.DataFrame, limit: int) -> list[KeptSample]:
    """The samples of the PDrop schedule closest to the paper's (λ0.5 at L/4, L/2, 3L/4), else the first PDrop."""
    if limit <= 0:
        return []
    num_layers = (run.info.get("model") or {}).get("num_layers")
    row = match_method("PDrop λ0.5", rows, num_layers)
    if row is None:
        pdrop = rows[rows["method"] == "pdrop"]
        if pdrop.empty:
            return []
        row = pdrop.iloc[0]
    layers = tuple(int(v) for v in row["layers"].split("-")) if row["layers"] else ()
    return find_kept_samples(run.directory, run.name, task, row["schedule"], layers, row["predictions"], limit)
