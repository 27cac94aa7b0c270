"""results.xlsx read back with openpyxl and checked against the metrics.json it was built from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import openpyxl
import pytest

from pdrop_eval.report.load import load_run
from pdrop_eval.report.reference import reference_frame
from pdrop_eval.report.spreadsheet import sheet_name, write_workbook
from pdrop_eval.report.table import results_frame
from tests.run_fixtures import PAPER_ROWS, write_run_dir


def _write(run_dir: Path, path: Path) -> Path:
    runs = [load_run(run_dir)]
    frame = results_frame(runs)
    write_workbook(path, runs, frame, reference_frame(runs, frame))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The workbook alone (no plots), so these tests stay fast; test_report_sweep covers build_reports."""
    run_dir = write_run_dir(tmp_path_factory.mktemp("results"), "demo")
    return run_dir, _write(run_dir, run_dir / "results.xlsx")


def _rows(sheet) -> list[dict[str, object]]:
    header, *body = sheet.iter_rows(values_only=True)
    return [dict(zip(header, row)) for row in body]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def test_sheets_are_named_with_a_frozen_bold_header(built):
    _, path = built
    workbook = openpyxl.load_workbook(path)
    assert workbook.sheetnames == ["Summary", "shapes", "pope", "Reference", "Provenance"]
    assert "Warnings" not in workbook.sheetnames, "caveats go to the Warnings sheet only when there are any"
    for sheet in workbook:
        assert sheet.freeze_panes == "A2"
        assert all(cell.font.bold for cell in sheet[1])


def test_summary_equals_metrics_json(built):
    run_dir, path = built
    summary = openpyxl.load_workbook(path)["Summary"]
    header = [c.value for c in summary[1]]
    assert header[:18] == ["Run", "Task", "Schedule", "Method", "λ", "Layers", "Positions", "N", "Failed samples",
                           "Primary metric",
                           "Primary", "95% CI low", "95% CI high", "Δ vs vanilla", "Δ 95% CI low", "Δ 95% CI high",
                           "p (Δ vs vanilla)", "Test"]
    assert {"TFLOPs (paper)", "TFLOPs (exact)", "Retained image tokens", "Prefill ms", "Samples/s"} <= set(header)
    rows = _rows(summary)
    results = _metrics(run_dir)["results"]
    assert len(rows) == len(results) == 18
    vanilla = {r["task"]: r["primary"] for r in results if r["schedule"]["method"] == "vanilla"}
    for row, result in zip(rows, results):
        assert (row["Run"], row["Task"], row["Schedule"]) == ("demo", result["task"], result["schedule"]["label"])
        assert row["Primary metric"] == result["primary_metric"]
        assert row["Primary"] == pytest.approx(result["primary"])
        assert row["TFLOPs (paper)"] == pytest.approx(result["tflops_paper"])
        assert row["TFLOPs (exact)"] == pytest.approx(result["tflops_exact"])
        assert row["Retained image tokens"] == pytest.approx(result["retained_tokens"])
        assert row["Δ vs vanilla"] == pytest.approx(result["primary"] - vanilla[result["task"]])
    by_label = {(r["Task"], r["Schedule"]): r for r in rows}
    assert by_label["pope", "pdrop_lam0.5_8-16-24"]["Layers"] == "8-16-24"
    assert by_label["pope", "pdrop_lam0.5_8-16-24"]["λ"] == 0.5
    assert by_label["pope", "vanilla"]["accuracy_mean"] == pytest.approx(
        next(r for r in results if r["task"] == "pope")["metrics"]["accuracy_mean"]
    )


def test_number_formats_and_delta_colours(built):
    _, path = built
    summary = openpyxl.load_workbook(path)["Summary"]
    column = {c.value: c.column_letter for c in summary[1]}
    assert summary[f"{column['Primary']}2"].number_format == "0.00"
    assert summary[f"{column['TFLOPs (paper)']}2"].number_format == "0.00"
    assert summary[f"{column['N']}2"].number_format == "0"
    delta = column["Δ vs vanilla"]
    rules = [r for cf in summary.conditional_formatting for r in cf.rules if delta in str(cf.sqref)]
    assert sorted(r.operator for r in rules) == ["greaterThan", "lessThan"]
    assert summary.column_dimensions[column["Schedule"]].width >= len("random_8-16-24_r0.5-0.25-0.125_s0")


def test_task_sheet_has_pope_sub_metrics(built):
    run_dir, path = built
    pope = openpyxl.load_workbook(path)["pope"]
    header = [c.value for c in pope[1]]
    assert "f1_mean (primary)" in header
    for category in ("adversarial", "popular", "random"):
        assert {f"f1/{category}", f"accuracy/{category}", f"tp/{category}"} <= set(header)
    column = {c.value: c.column_letter for c in pope[1]}
    assert pope[f"{column['tp/adversarial']}2"].number_format == "0"
    assert pope[f"{column['f1/popular']}2"].number_format == "0.00"
    results = [r for r in _metrics(run_dir)["results"] if r["task"] == "pope"]
    for row, result in zip(_rows(pope), results):
        assert row["Schedule"] == result["schedule"]["label"]
        assert row["f1/random"] == pytest.approx(result["metrics"]["f1/random"])


def test_reference_sheet_puts_paper_numbers_beside_ours(built):
    run_dir, path = built
    rows = _rows(openpyxl.load_workbook(path)["Reference"])
    assert [(r["Paper method"], r["Paper TFLOPs"], r["Paper score"]) for r in rows] == [
        (p["method"], p["tflops"], p["score"]) for p in PAPER_ROWS
    ]
    assert [r["Our schedule"] for r in rows] == ["vanilla", "fastv_k2_r0.5", "pdrop_lam0.5_8-16-24"]
    ours = {r["schedule"]["label"]: r["primary"] for r in _metrics(run_dir)["results"] if r["task"] == "pope"}
    for row in rows:
        assert row["Our score"] == pytest.approx(ours[row["Our schedule"]])
        assert row["Ours − paper"] == pytest.approx(row["Our score"] - row["Paper score"])


def test_provenance_flattens_run_info(built):
    run_dir, path = built
    fields = {r["Field"]: r["demo"] for r in _rows(openpyxl.load_workbook(path)["Provenance"])}
    assert fields["directory"] == str(run_dir)
    assert fields["git_sha"] == "abc123"
    assert fields["versions.transformers"] == "5.24.0"
    assert fields["command"] == "run_eval.py --tasks shapes,pope"
    assert fields["model.image_grid"] == "[24, 24]"
    assert fields["tasks.pope.primary_metric"] == "f1_mean"


def test_sheet_names_are_valid_and_unique():
    taken = {"Summary", "Reference", "Provenance"}
    name = sheet_name("mmbench/dev:en*[circular]?" + "x" * 40, taken)
    assert len(name) <= 31 and not set(name) & set("[]:*?/\\")
    assert sheet_name("summary", taken) == "summary~2"
    long = sheet_name("y" * 40, taken)
    assert sheet_name("y" * 40, taken | {long}).endswith("~2") and len(long) == 31


def test_tiny_model_tflops_get_scientific_format(tmp_path):
    run_dir = write_run_dir(tmp_path, "tiny", tasks=("shapes",))
    metrics = _metrics(run_dir)
    for result in metrics["results"]:
        result["tflops_paper"] *= 1e-6
    metrics["results"][1]["primary"] = None
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    frame = results_frame([load_run(run_dir)])
    assert math.isnan(frame["primary"][1]) and math.isnan(frame["delta_vs_vanilla"][1])
    summary = openpyxl.load_workbook(_write(run_dir, tmp_path / "tiny.xlsx"))["Summary"]
    column = {c.value: c.column_letter for c in summary[1]}
    assert summary[f"{column['TFLOPs (paper)']}2"].number_format == "0.00E+00"
    assert summary[f"{column['Primary']}3"].value is None


def test_text_starting_with_equals_is_text_not_a_formula(tmp_path):
    """A task card named "=HYPERLINK(...)" (or a command line, a path) must not become a live formula."""
    import zipfile

    name = '=HYPERLINK("http://example.invalid","x")'
    run_dir = write_run_dir(tmp_path, "formula", tasks=(name,), image_grid=None)
    path = _write(run_dir, tmp_path / "results.xlsx")
    workbook = openpyxl.load_workbook(path)
    tasks = [row[1] for row in workbook["Summary"].iter_rows(min_row=2)]
    assert tasks and all(cell.value == name and cell.data_type == "s" for cell in tasks)
    with zipfile.ZipFile(path) as archive:
        sheets = [archive.read(n).decode() for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
    assert not any("<f>" in sheet or "<f " in sheet for sheet in sheets), "no cell of the workbook is a formula"
