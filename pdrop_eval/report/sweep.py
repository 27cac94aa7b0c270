"""The sweep report's content: per task a metric-vs-TFLOPs plot, the schedules with their confidence intervals and
paired tests against vanilla, the Pareto front, the paper's numbers beside ours and kept-token maps; rendered to
report.md and a self-contained report.html. Caveats (another model than the paper's, a partial task, merged runs
that differ) come first, where a reader cannot miss them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pdrop_eval.methods.registry import display_name
from pdrop_eval.report.batch_effect import batch_effect_blocks
from pdrop_eval.report.caveats import Caveat, incompatible_runs
from pdrop_eval.report.document import (
    Block,
    Callout,
    Figure,
    Heading,
    Paragraph,
    Table,
    fmt,
    fmt_interval,
    fmt_lambda,
    fmt_p,
    fmt_tflops,
    to_html,
    to_markdown,
)
from pdrop_eval.report.kept_maps import draw_sample_view, find_sample_views, read_view_image, view_mismatch
from pdrop_eval.report.load import Run
from pdrop_eval.report.plots import plot_task
from pdrop_eval.report.significance import CONFIDENCE, RESAMPLES, SEED
from pdrop_eval.report.table import TFLOPS_CONVENTIONS, budget_comparison, pareto_front, readable_schedule
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
    caveats: Sequence[Caveat] = (),
) -> list[Path]:
    """Write report.md (linking PNGs in <out>/report_files/) and report.html (embedding them); return the PNGs."""
    files_dir = markdown_path.parent / "report_files"
    blocks = sweep_blocks(runs, frame, reference, files_dir, convention, caveats)
    title = "PyramidDrop sweep: " + ", ".join(run.name for run in runs)
    write_text_atomic(markdown_path, to_markdown(blocks, markdown_path.parent))
    write_text_atomic(html_path, to_html(blocks, title))
    return [b.path for b in blocks if isinstance(b, Figure)]


UNNOTED_TIMING = (
    "not described by this run (made before pdrop-eval left warm-up out): every batch is timed, the first one of "
    "each schedule included, so the schedule that ran first can look slower"
)


def sweep_blocks(
    runs: list[Run],
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    files_dir: Path,
    convention: str,
    caveats: Sequence[Caveat] = (),
) -> list[Block]:
    several_runs = len(runs) > 1
    incompatible = incompatible_runs(runs, frame)
    blocks: list[Block] = [
        Heading("PyramidDrop sweep: " + ", ".join(run.name for run in runs), 1),
        Paragraph(
            "TFLOPs are per sample. Paper convention: only image tokens inside the LLM, multiply-accumulates "
            "(reproduces the paper's 3.82 for LLaVA-1.5-7B). Exact: every FLOP that ran (all tokens, vision tower, "
            f"ranking, decode). Plots and Pareto fronts use the {convention} convention. "
            "Δ is the primary metric minus vanilla's, same task and run."
        ),
        Paragraph(
            f"Is a difference noise? Each score has a {CONFIDENCE:.0%} confidence interval (bootstrap over the "
            f"scored samples, or MMBench questions, {RESAMPLES} resamples, seed {SEED}); each Δ vs vanilla has a "
            f"paired {CONFIDENCE:.0%} interval on the samples both scored and a p-value (McNemar's exact test for "
            "right/wrong scores, else the paired bootstrap); 'same answer' is the share of samples where the "
            "schedule answered exactly what vanilla answered. A Δ whose interval contains 0 (p ≥ 0.05) cannot be "
            "told apart from noise at this n."
        ),
        *(Callout(c.text) for c in caveats if c.task is None),
        _runs_table(runs),
        *_timing_blocks(runs),
    ]
    for task, rows in frame.groupby("task", sort=False):
        task_caveats = [c for c in caveats if c.task == task]
        blocks += _task_blocks(
            str(task), rows, reference, runs, files_dir, convention, several_runs, task_caveats, str(task) in incompatible
        )
    return blocks


def _timing_blocks(runs: list[Run]) -> list[Block]:
    """How prefill ms and samples/s were measured (metrics.json `run.timing`), and which rows had only warm-up
    batches to time: a reader comparing speeds must know whether the first batch's warm-up is in them."""
    notes = {run.name: run.info.get("timing") or UNNOTED_TIMING for run in runs}
    if len(set(notes.values())) == 1:
        text = f"Timings: {next(iter(notes.values()))}."
    else:
        text = "Timings. " + " ".join(f"Run {name}: {note}." for name, note in notes.items())
    warm_only = [
        f"{result['task']} / {result['schedule']['label']}" + (f" (run {run.name})" if len(runs) > 1 else "")
        for run in runs
        for result in run.results
        if (result.get("timing") or {}).get("includes_warmup")
    ]
    if warm_only:
        text += " Only warm-up batches were there to time for: " + ", ".join(warm_only) + "."
    return [Paragraph(text)]


def _runs_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        model = run.info.get("model") or {}
        settings = run.info.get("settings") or {}
        rows.append([
            run.name,
            str(model.get("name", "")),
            " ".join(str(model.get(k, "")) for k in ("dtype", "attn", "device")),
            ", ".join(f"{k} {settings[k]}" for k in ("limit", "max_new_tokens", "batch_size") if k in settings),
            str(run.info.get("created", "")),
            str(run.info.get("git_sha", "")),
            str(run.directory),
        ])
    columns = ["run", "model", "dtype / attention / device", "settings", "created", "git sha", "directory"]
    return Table(columns, rows)


def _task_blocks(
    task: str,
    rows: pd.DataFrame,
    reference: pd.DataFrame,
    runs: list[Run],
    files_dir: Path,
    convention: str,
    several_runs: bool,
    caveats: Sequence[Caveat],
    incompatible: bool,
) -> list[Block]:
    metric = rows["primary_metric"].iloc[0]
    x = f"tflops_{convention}"
    safe = _UNSAFE_FILENAME.sub("_", task)
    plot = plot_task(rows, reference, convention, files_dir / f"{safe}_tflops.png", task)
    paper = reference[reference["task"] == task]
    if incompatible:
        front = pd.concat([pareto_front(r, x) for _, r in rows.groupby("run", sort=False)])
        front_title = f"Pareto front of each run: the best {metric} for its TFLOPs ({convention} convention)"
    else:
        front = pareto_front(rows, x)
        front_title = f"Pareto front: the best {metric} for its TFLOPs ({convention} convention)"
    blocks: list[Block] = [
        Heading(task, 2),
        *(Callout(c.text) for c in caveats),
        Figure(plot, f"{task}: {metric} against TFLOPs per sample, {convention} convention "
                     f"({TFLOPS_CONVENTIONS[convention]}); one colour and marker per method, its points joined "
                     f"over λ (PDrop, one curve per layer schedule) or budget, single settings as markers, bars are {CONFIDENCE:.0%} confidence intervals, the paper's published points "
                     "hollow"),
        Heading("Schedules", 3),
        _schedule_table(rows.sort_values(["run", x], ascending=[True, False]), metric, several_runs),
        *_significance_notes(rows),
        Heading(front_title, 3),
        _schedule_table(front, metric, several_runs),
        *_budget_blocks(rows, metric, several_runs),
    ]
    if not paper.empty:
        blocks += [Heading("Paper vs this run", 3), _paper_table(paper, rows, several_runs)]
    blocks += _failed_blocks(task, runs)
    blocks += batch_effect_blocks(task, runs)
    blocks += _kept_map_blocks(task, rows, runs, files_dir)
    return blocks


def _budget_blocks(rows: pd.DataFrame, metric: str, several_runs: bool) -> list[Block]:
    """Every method at each budget it was run for, cheapest first: the same budget of image tokens is (nearly)
    the same paper-convention TFLOPs, so each block compares methods at matched cost; exact TFLOPs add what each
    method spends choosing tokens, and its vision tower."""
    table = budget_comparison(rows)
    if table.empty:
        return []
    columns = ["budget", "method", "schedule", "retained tokens", metric, "TFLOPs paper", "TFLOPs exact",
               "prefill ms"]
    columns = ["run", *columns] if several_runs else columns
    body = [
        [
            *([r["run"]] if several_runs else []), f"{r['budget']:g}", r["method"], r["schedule"],
            fmt(r["retained_tokens"], 1), fmt(r["primary"]), fmt_tflops(r["tflops_paper"]),
            fmt_tflops(r["tflops_exact"]), fmt(r["prefill_ms"], 1),
        ]
        for _, r in table.iterrows()
    ]
    return [Heading(f"Methods at matched budgets: {metric} per budget of image tokens", 3), Table(columns, body)]


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
    columns = ["schedule", "method", "λ", "layers", "N", metric, f"{CONFIDENCE:.0%} CI", "Δ vs vanilla",
               f"Δ {CONFIDENCE:.0%} CI", "p", "same answer as vanilla", "TFLOPs paper", "TFLOPs exact",
               "retained tokens", "prefill ms", "samples/s"]
    body = [
        [
            r["schedule"], display_name(r["method"]), fmt_lambda(r["lam"]), r["layers"] or "—", fmt(r["n"], 0), fmt(r["primary"]),
            fmt_interval(r["ci_low"], r["ci_high"]), fmt(r["delta_vs_vanilla"], signed=True),
            fmt_interval(r["delta_low"], r["delta_high"], signed=True), _p_text(r), _agreement_text(r),
            fmt_tflops(r["tflops_paper"]), fmt_tflops(r["tflops_exact"]), fmt(r["retained_tokens"], 1),
            fmt(r["prefill_ms"], 1), fmt(r["samples_per_s"]),
        ]
        for _, r in rows.iterrows()
    ]
    if several_runs:
        columns = ["run", *columns]
        body = [[r, *line] for r, line in zip(rows["run"], body)]
    return Table(columns, body)


def _p_text(row: pd.Series) -> str:
    text = fmt_p(row["p_value"])
    return f"{text} ({row['test']})" if row["test"] else text


def _agreement_text(row: pd.Series) -> str:
    if pd.isna(row["agreement"]):
        return "—"
    return f"{row['agreement']:.1f}% of {int(row['paired_n'])}"


def _significance_notes(rows: pd.DataFrame) -> list[Block]:
    notes = [f"{r['schedule']}: {r['significance_note']}" for _, r in rows.iterrows() if r["significance_note"]]
    return [Paragraph("No interval or test for " + "; ".join(notes) + ".")] if notes else []


def _paper_table(paper: pd.DataFrame, rows: pd.DataFrame, several_runs: bool) -> Table:
    metric = paper["paper_metric"].iloc[0] or "score"
    columns = ["paper model", "paper method", "paper TFLOPs", f"paper {metric}", "our model", "our schedule", "N",
               "our TFLOPs (paper conv.)", "our score", f"our {CONFIDENCE:.0%} CI", "ours − paper"]
    ours = rows.set_index(["run", "schedule"])
    body = []
    for _, r in paper.iterrows():
        match = ours.loc[(r["run"], r["schedule"])] if (r["run"], r["schedule"]) in ours.index else None
        body.append([
            r["paper_model"], r["paper_method"], fmt(r["paper_tflops"]), fmt(r["paper_score"]), r["our_model"],
            r["schedule"] or "no matching run", fmt(None if match is None else match["n"], 0),
            fmt_tflops(r["tflops_paper"]), fmt(r["primary"]),
            "—" if match is None else fmt_interval(match["ci_low"], match["ci_high"]),
            fmt(r["ours_minus_paper"], signed=True),
        ])
    if several_runs:
        columns = ["run", *columns]
        body = [[r, *line] for r, line in zip(paper["run"], body)]
    return Table(columns, body)


def _kept_map_blocks(task: str, rows: pd.DataFrame, runs: list[Run], files_dir: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading("Kept image tokens", 3),
        Paragraph(
            "For a few samples of each run: the question, the gold answer and every schedule's answer, then one row "
            "per schedule that drops tokens with the image before the LLM (methods that choose there: the tower "
            "features kept; VisionZip's dominant patches) or after each of its stages: bright patches are the image "
            "tokens kept (PDrop and FastV rank them by attention, random drops at random), dimmed ones were dropped "
            "and no later layer sees them. LLaVA-NeXT's base view is drawn beside its tiles. Good pruning keeps the "
            "patches the question is about."
        ),
    ]
    drawn = 0
    for run in runs:
        run_rows = rows[rows["run"] == run.name]
        if run_rows.empty:
            continue
        schedules = [
            (
                readable_schedule(r),
                r["predictions"],
                tuple(int(v) for v in r["layers"].split("-")) if r["layers"] else (),
                r["method"],
            )
            for _, r in run_rows.iterrows()
        ]
        views = find_sample_views(run.directory, run.name, task, schedules, KEPT_MAPS_PER_TASK, run.image_grid)
        for view in views:
            if not view.dropping:
                continue
            image = read_view_image(view)
            problem = f"its image {view.image} cannot be read" if image is None else view_mismatch(view)
            if problem:
                blocks.append(Paragraph(f"Run {run.name}, sample {view.sample_id}: no map, {problem}."))
                continue
            name = _UNSAFE_FILENAME.sub("_", f"{task}_kept_{run.name}_{view.sample_id}") + ".png"
            path = draw_sample_view(view, files_dir / name, image)
            answers = "; ".join(f"{s.name}: {s.prediction!r}" for s in view.schedules)
            blocks.append(Figure(path, (
                f"{task}, sample {view.sample_id} (run {run.name}). Question: {view.question!r}. "
                f"Gold: {view.gold!r}. Answers: {answers}."
            )))
            drawn += 1
    if drawn == 0 and len(blocks) == 2:
        blocks.append(Paragraph("No sample images with kept image tokens were saved for this task."))
    return blocks
