"""results.xlsx: Summary, one sheet per task with every sub-metric, the paper's numbers beside ours, provenance.

Written cell by cell with openpyxl (not DataFrame.to_excel) so each column carries its own number format and
the Δ columns their colour rule: the workbook is read by people, not parsed back. It holds no formulas: openpyxl
takes any text starting with "=" for one, so text cells are marked as text (a task named "=HYPERLINK(...)" stays a
name, not a live formula).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from pdrop_eval.methods.registry import display_name
from pdrop_eval.report.caveats import Caveat
from pdrop_eval.report.load import Run
from pdrop_eval.report.table import headline_keys, is_count_key, metric_keys
from pdrop_eval.store import atomic_path

SCORE, TFLOPS, COUNT, ONE_DECIMAL, TEXT, P_VALUE = "0.00", "0.00", "0", "0.0", "@", "0.0000"
# Tiny test/demo models cost millionths of a TFLOP: two decimals would print 0.00 for every schedule.
TINY_TFLOPS = "0.00E+00"
_GREEN = PatternFill(start_color="C6EFCE", end_color="C6EFCE", fill_type="solid")
_RED = PatternFill(start_color="FFC7CE", end_color="FFC7CE", fill_type="solid")
_INVALID_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_MAX_SHEET_NAME = 31
_MAX_WIDTH = 60
FIXED_SHEETS = ("Summary", "Reference", "Provenance", "Warnings")


@dataclass(frozen=True)
class Column:
    """A sheet column: header text, how to get the value from a row, Excel number format, colour by sign."""

    header: str
    value: Callable[[pd.Series], Any]
    number_format: str = "General"
    signed_colour: bool = False


def _field(name: str) -> Callable[[pd.Series], Any]:
    return lambda row: row[name]


def _metric(key: str) -> Callable[[pd.Series], Any]:
    return lambda row: row["metrics"].get(key)


def _non_primary_metric(key: str) -> Callable[[pd.Series], Any]:
    """Blank where `key` is the row's primary: that value already sits in the Primary column."""
    return lambda row: None if row["primary_metric"] == key else row["metrics"].get(key)


def tflops_format(values: pd.Series) -> str:
    largest = values.abs().max()
    return TINY_TFLOPS if pd.notna(largest) and 0 < largest < 0.01 else TFLOPS


def _metric_format(key: str) -> str:
    return COUNT if is_count_key(key) else SCORE


def _schedule_columns(with_run: bool) -> list[Column]:
    columns = [Column("Run", _field("run"))] if with_run else []
    return columns + [
        Column("Schedule", _field("schedule")),
        Column("Method", lambda row: display_name(row["method"])),
        Column("λ", _field("lam")),
        Column("Layers", _field("layers"), TEXT),
        Column("Positions", _field("positions")),
    ]


def summary_columns(frame: pd.DataFrame) -> list[Column]:
    """Summary: a row per run × task × schedule; headline metrics other than the primary get a column each
    (only those that are not the primary of every row, so no column is left all blank)."""
    headline = [
        Column(key, _non_primary_metric(key), SCORE)
        for key in headline_keys(frame)
        if any(key in m and p != key for m, p in zip(frame["metrics"], frame["primary_metric"]))
    ]
    return [
        Column("Run", _field("run")),
        Column("Task", _field("task")),
        *_schedule_columns(with_run=False),
        Column("N", _field("n"), COUNT),
        Column("Failed samples", _field("failed"), COUNT),
        Column("Primary metric", _field("primary_metric")),
        Column("Primary", _field("primary"), SCORE),
        Column("95% CI low", _field("ci_low"), SCORE),
        Column("95% CI high", _field("ci_high"), SCORE),
        Column("Δ vs vanilla", _field("delta_vs_vanilla"), SCORE, signed_colour=True),
        Column("Δ 95% CI low", _field("delta_low"), SCORE),
        Column("Δ 95% CI high", _field("delta_high"), SCORE),
        Column("p (Δ vs vanilla)", _field("p_value"), P_VALUE),
        Column("Test", _field("test")),
        Column("Same answer as vanilla (%)", _field("agreement"), ONE_DECIMAL),
        *headline,
        Column("TFLOPs (paper)", _field("tflops_paper"), tflops_format(frame["tflops_paper"])),
        Column("TFLOPs (exact)", _field("tflops_exact"), tflops_format(frame["tflops_exact"])),
        Column("Retained image tokens", _field("retained_tokens"), ONE_DECIMAL),
        Column("Budget", _field("budget"), ONE_DECIMAL),
        Column("Image tokens per layer", _field("image_tokens_per_layer"), TEXT),
        Column("Prefill ms", _field("prefill_ms"), ONE_DECIMAL),
        Column("Decode ms/token", _field("decode_ms_per_token"), ONE_DECIMAL),
        Column("Samples/s", _field("samples_per_s"), SCORE),
    ]


def task_columns(rows: pd.DataFrame, with_run: bool) -> list[Column]:
    """A task's sheet: its schedules with every metric key the scorer wrote, the primary first."""
    primary = rows["primary_metric"].iloc[0]
    keys = sorted(metric_keys(rows), key=lambda k: k != primary)
    return [
        *_schedule_columns(with_run),
        Column("TFLOPs (paper)", _field("tflops_paper"), tflops_format(rows["tflops_paper"])),
        Column("Δ vs vanilla", _field("delta_vs_vanilla"), SCORE, signed_colour=True),
        *(Column(f"{k} (primary)" if k == primary else k, _metric(k), _metric_format(k)) for k in keys),
    ]


def reference_columns(reference: pd.DataFrame) -> list[Column]:
    return [
        Column("Run", _field("run")),
        Column("Task", _field("task")),
        Column("Paper model", _field("paper_model")),
        Column("Metric", _field("paper_metric")),
        Column("Paper method", _field("paper_method")),
        Column("Paper TFLOPs", _field("paper_tflops"), TFLOPS),
        Column("Paper score", _field("paper_score"), SCORE),
        Column("Our schedule", _field("schedule")),
        Column("Our TFLOPs (paper convention)", _field("tflops_paper"), tflops_format(reference["tflops_paper"])),
        Column("Our score", _field("primary"), SCORE),
        Column("Ours − paper", _field("ours_minus_paper"), SCORE, signed_colour=True),
        Column("Source", _field("source")),
    ]


def write_workbook(
    path: Path, runs: list[Run], frame: pd.DataFrame, reference: pd.DataFrame, caveats: Sequence[Caveat] = ()
) -> None:
    workbook = Workbook()
    summary = workbook.active
    summary.title = "Summary"
    _write_table(summary, summary_columns(frame), frame)
    with_run = frame["run"].nunique() > 1
    names = set(FIXED_SHEETS)
    for task, rows in frame.groupby("task", sort=False):
        name = sheet_name(str(task), names)
        names.add(name)
        _write_table(workbook.create_sheet(name), task_columns(rows, with_run), rows)
    _write_table(workbook.create_sheet("Reference"), reference_columns(reference), reference)
    _write_provenance(workbook.create_sheet("Provenance"), runs)
    if caveats:
        table = pd.DataFrame([{"task": c.task or "all", "warning": c.text} for c in caveats])
        columns = [Column("Task", _field("task")), Column("Warning", _field("warning"))]
        _write_table(workbook.create_sheet("Warnings"), columns, table)
    with atomic_path(path) as temporary:
        workbook.save(temporary)


def sheet_name(title: str, taken: Iterable[str]) -> str:
    """A valid Excel sheet name (≤31 chars, none of []:*?/\\) not already used, case-insensitively."""
    base = _INVALID_SHEET_CHARS.sub("_", title).strip("'") or "task"
    taken_lower = {t.lower() for t in taken}
    name, i = base[:_MAX_SHEET_NAME], 1
    while name.lower() in taken_lower:
        i += 1
        suffix = f"~{i}"
        name = base[: _MAX_SHEET_NAME - len(suffix)] + suffix
    return name


def _write_table(sheet: Worksheet, columns: list[Column], rows: pd.DataFrame) -> None:
    _append_text_safe(sheet, [c.header for c in columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for _, row in rows.iterrows():
        _append_text_safe(sheet, [_cell_value(c.value(row)) for c in columns])
    for j, column in enumerate(columns, start=1):
        letter = get_column_letter(j)
        for (cell,) in sheet.iter_rows(min_row=2, min_col=j, max_col=j):
            cell.number_format = column.number_format
        if column.signed_colour and len(rows):
            cells = f"{letter}2:{letter}{len(rows) + 1}"
            sheet.conditional_formatting.add(cells, CellIsRule(operator="greaterThan", formula=["0"], fill=_GREEN))
            sheet.conditional_formatting.add(cells, CellIsRule(operator="lessThan", formula=["0"], fill=_RED))
    sheet.freeze_panes = "A2"
    _fit_widths(sheet, columns)


def _append_text_safe(sheet: Worksheet, values: list[Any]) -> None:
    """Append a row whose strings are all text: openpyxl would store one starting with "=" as a formula."""
    sheet.append(values)
    for cell in sheet[sheet.max_row]:
        if isinstance(cell.value, str):
            cell.data_type = "s"


def _cell_value(value: Any) -> Any:
    """NaN and None become empty cells; everything else is written as is (numbers stay numbers)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _fit_widths(sheet: Worksheet, columns: list[Column]) -> None:
    for j, column in enumerate(columns, start=1):
        texts = [_display(cell.value, column.number_format) for (cell,) in sheet.iter_rows(min_col=j, max_col=j)]
        sheet.column_dimensions[get_column_letter(j)].width = min(_MAX_WIDTH, max(map(len, texts), default=8) + 2)


def _display(value: Any, number_format: str) -> str:
    if isinstance(value, float) and number_format == TINY_TFLOPS:
        return f"{value:.2E}"
    if isinstance(value, float) and number_format in (SCORE, COUNT, ONE_DECIMAL, P_VALUE):
        decimals = {SCORE: 2, COUNT: 0, ONE_DECIMAL: 1, P_VALUE: 4}[number_format]
        return f"{value:.{decimals}f}"
    return "" if value is None else str(value)


def _write_provenance(sheet: Worksheet, runs: list[Run]) -> None:
    """Field down the side, one column per run, so two runs' versions and settings read side by side."""
    flat = [_flatten({"directory": str(run.directory), **run.info, "tasks": _task_provenance(run)}) for run in runs]
    fields = list(dict.fromkeys(k for f in flat for k in f))
    table = pd.DataFrame([{"field": k, **{run.name: f.get(k) for run, f in zip(runs, flat)}} for k in fields])
    columns = [Column("Field", _field("field"))] + [Column(run.name, _field(run.name), TEXT) for run in runs]
    _write_table(sheet, columns, table)


def _task_provenance(run: Run) -> dict[str, Any]:
    return {
        task: {k: v for k, v in card.items() if k != "reference"}
        for task, card in run.tasks.items()
        if isinstance(card, dict)
    }


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; a list of strings (a command line) becomes one space-joined string."""
    out: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out.update(_flatten(item, f"{name}."))
        elif isinstance(item, list) and item and all(isinstance(v, str) for v in item):
            out[name] = " ".join(item)
        elif isinstance(item, str):
            out[name] = item
        else:
            out[name] = json.dumps(item, ensure_ascii=False)
    return out
