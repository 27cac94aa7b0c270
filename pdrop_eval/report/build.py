"""`build_reports`: one or several run directories in, results.xlsx + report.md + report.html out.

Everything is rebuilt from what the runner left on disk (metrics.json, predictions, sample images), so a report
can be redone, restyled or merged across runs (one per node or per day) without loading a model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.report.caveats import Caveat, report_caveats
from pdrop_eval.report.load import load_run, unique_names
from pdrop_eval.report.reference import reference_frame
from pdrop_eval.report.sweep import write_sweep_report
from pdrop_eval.report.table import TFLOPS_CONVENTIONS, results_frame


@dataclass(frozen=True)
class ReportPaths:
    """What `build_reports` wrote; `spreadsheet` is None when openpyxl is not installed (the GPU image lacks it)."""

    spreadsheet: Path | None
    markdown: Path
    html: Path
    figures: list[Path]
    warnings: tuple[str, ...] = ()


def build_reports(run_dirs: list[Path], out_dir: Path | None = None, tflops: str = "paper") -> ReportPaths:
    """Write the spreadsheet and the sweep report for `run_dirs`.

    One run directory: written into it unless `out_dir` says otherwise. Several: merged into one comparison
    (a task × schedule measured by two runs keeps both rows, told apart by run name) written to `out_dir`, which
    is then required so no run directory is silently overwritten with the others' results. `tflops` picks the
    convention on the plots' x axis and for the Pareto fronts: "paper" (default, comparable to the paper) or "exact".
    """
    if not run_dirs:
        raise PdropEvalError("no run directory given: pass at least one results/<run-name>/ folder")
    if tflops not in TFLOPS_CONVENTIONS:
        raise PdropEvalError(f"unknown TFLOPs convention {tflops!r}: use one of {', '.join(TFLOPS_CONVENTIONS)}")
    if len(run_dirs) > 1 and out_dir is None:
        raise PdropEvalError(
            f"merging {len(run_dirs)} run directories needs an output folder for the combined report (--out DIR)"
        )
    runs = unique_names([load_run(Path(d)) for d in run_dirs])
    out = Path(out_dir) if out_dir is not None else Path(run_dirs[0])
    if out.exists() and not out.is_dir():
        raise PdropEvalError(f"the report folder {out} is a file: give --out a folder (new or existing)")
    out.mkdir(parents=True, exist_ok=True)
    frame = results_frame(runs)
    if frame.empty:
        raise PdropEvalError(f"{', '.join(str(r.directory / 'metrics.json') for r in runs)} holds no results to report")
    reference = reference_frame(runs, frame)
    caveats = report_caveats(runs, frame)
    spreadsheet = None
    if importlib.util.find_spec("openpyxl") is not None:
        from pdrop_eval.report.spreadsheet import write_workbook

        spreadsheet = out / "results.xlsx"
        write_workbook(spreadsheet, runs, frame, reference, caveats)
    markdown, html = out / "report.md", out / "report.html"
    figures = write_sweep_report(runs, frame, reference, markdown, html, tflops, caveats)
    return ReportPaths(spreadsheet, markdown, html, figures, tuple(_console_line(c) for c in caveats))


def _console_line(caveat: Caveat) -> str:
    return caveat.text if caveat.task is None or caveat.task in caveat.text else f"{caveat.task}: {caveat.text}"
