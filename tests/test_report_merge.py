"""Merging run directories into one comparison, and the one-line errors for what cannot be reported."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.report import ReportPaths, build_reports
from tests.run_fixtures import write_run_dir


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], ReportPaths]:
    root = tmp_path_factory.mktemp("results")
    node0 = write_run_dir(root, "node0", tasks=("pope",))
    node1 = write_run_dir(root, "node1", tasks=("pope",), score_offset=1.0)
    return [node0, node1], build_reports([node0, node1], root / "combined")


def _rows(sheet) -> list[dict[str, object]]:
    header, *body = sheet.iter_rows(values_only=True)
    return [dict(zip(header, row)) for row in body]


def test_merge_keeps_both_runs_rows_with_their_names(merged):
    (node0, node1), paths = merged
    assert paths.spreadsheet.parent.name == "combined"
    assert not (node0 / "results.xlsx").exists() and not (node1 / "results.xlsx").exists()
    workbook = openpyxl.load_workbook(paths.spreadsheet)
    summary = _rows(workbook["Summary"])
    assert [r["Run"] for r in summary] == ["node0"] * 9 + ["node1"] * 9
    by_run = {(r["Run"], r["Schedule"]): r for r in summary}
    for run_dir in (node0, node1):
        for result in json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["results"]:
            assert by_run[run_dir.name, result["schedule"]["label"]]["Primary"] == pytest.approx(result["primary"])
    assert by_run["node1", "vanilla"]["Primary"] > by_run["node0", "vanilla"]["Primary"]
    for run in ("node0", "node1"):
        assert by_run[run, "vanilla"]["Δ vs vanilla"] == 0
    assert next(c.value for c in workbook["pope"][1]) == "Run"
    assert {r["Run"] for r in _rows(workbook["Reference"])} == {"node0", "node1"}


def test_merge_keeps_each_runs_provenance(merged):
    (node0, node1), paths = merged
    provenance = openpyxl.load_workbook(paths.spreadsheet)["Provenance"]
    assert [c.value for c in provenance[1]] == ["Field", "node0", "node1"]
    fields = {r["Field"]: r for r in _rows(provenance)}
    assert (fields["directory"]["node0"], fields["directory"]["node1"]) == (str(node0), str(node1))


def test_merged_report_separates_runs(merged):
    _, paths = merged
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "PyramidDrop sweep: node0, node1" in markdown
    assert "| run | schedule |" in markdown
    assert "| node1 | pdrop\\_lam0.5\\_8-16-24 |" in markdown
    kept = sorted(p.name for p in paths.figures if "pope_kept_" in p.name)
    assert kept == ["pope_kept_node0_0.png", "pope_kept_node0_1.png", "pope_kept_node1_0.png", "pope_kept_node1_1.png"]


def test_same_run_name_twice_gets_a_suffix(tmp_path):
    first = write_run_dir(tmp_path / "a", "demo", tasks=("shapes",), image_grid=None)
    second = write_run_dir(tmp_path / "b", "demo", tasks=("shapes",), image_grid=None)
    paths = build_reports([first, second], tmp_path / "out")
    runs = {r["Run"] for r in _rows(openpyxl.load_workbook(paths.spreadsheet)["Summary"])}
    assert runs == {"demo", "demo#2"}


def _error(run_dirs: list[Path], out: Path | None = None) -> str:
    with pytest.raises(PdropEvalError) as info:
        build_reports(run_dirs, out)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_merge_without_out_dir_is_refused(tmp_path):
    assert "--out" in _error([tmp_path / "a", tmp_path / "b"])


def test_missing_dir_and_missing_metrics_json(tmp_path):
    assert "does not exist" in _error([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty'} has no metrics.json" in _error([tmp_path / "empty"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"run": {"name": "x"}, "tasks": {}, "res', "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"run": {"name": "x"}, "tasks": {}}', "'results' must be a JSON array, got nothing"),
        ('{"run": {}, "tasks": {}, "results": []}', "'run.name' must be a non-empty string"),
        ('{"run": {"name": "x"}, "tasks": {}, "results": [{"task": "t"}]}', "results[0] has no 'schedule'"),
        (
            ('{"run": {"name": "x"}, "tasks": {}, "results": [{"task": "t", "schedule": {"label": "v", "method": "v", '
            '"layers": "8,16", "ratios": []}, "metrics": {}, "primary_metric": "a"}]}'),
            "results[0].schedule.layers must be a JSON array, got a string",
        ),
        ('{"run": {"name": "x"}, "tasks": {}, "results": []}', "holds no results"),
    ],
)
def test_garbled_metrics_json_names_file_and_field(tmp_path, content, expected):
    (tmp_path / "metrics.json").write_text(content, encoding="utf-8")
    message = _error([tmp_path])
    assert expected in message
    assert str(tmp_path / "metrics.json") in message


def test_unknown_tflops_convention(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"run": {"name": "x"}, "tasks": {}, "results": []}))
    with pytest.raises(PdropEvalError, match="unknown TFLOPs convention 'gpu'"):
        build_reports([tmp_path], tflops="gpu")
