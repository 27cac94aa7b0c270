"""MME and SEED-Bench end to end through the CLI on the tiny model: metrics.json, the report and the spreadsheet
carry MME's 0-2000 perception total as the headline (labelled as a score, not a percentage)."""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.axes import Axes

from pdrop_eval import cli
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.mme import COGNITION, PERCEPTION
from tests.fixtures_data import write_llava_mme, write_llava_seed

pytestmark = pytest.mark.engine


@pytest.fixture
def y_labels(monkeypatch):
    """Every y-axis label the report's plots set."""
    labels = []
    original = Axes.set_ylabel

    def recording(self, label, *args, **kwargs):
        labels.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_ylabel", recording)
    return labels


def _run(tmp_path, task: str, *extra: str) -> dict:
    args = [
        "--model",
        "tiny-llava",
        "--tasks",
        task,
        "--data-root",
        str(tmp_path / "data"),
        "--batch-size",
        "8",
        "--max-new-tokens",
        "3",
        "--lambda",
        "0.5",
        "--baselines",
        "vanilla",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        task,
        *extra,
    ]
    assert cli.main(args) == 0
    return json.loads((tmp_path / task / "metrics.json").read_text())


def _records(run_dir, result) -> list:
    return [json.loads(line) for line in (run_dir / result["predictions"]).read_text().splitlines()]


def test_mme_run_reports_the_perception_total_as_a_score(tmp_path, y_labels):
    expected = write_llava_mme(tmp_path / "data")
    metrics = _run(tmp_path, "mme")
    assert metrics["tasks"]["mme"]["primary_metric"] == "perception"
    assert [r["score"] for r in metrics["tasks"]["mme"]["reference"]["rows"]] == [1510.7, 1475.6, 1500.8]
    metric = get_metric("mme")
    for result in metrics["results"]:
        assert result["n"] == len(expected["ids"])
        assert result["primary_unit"] == "score out of 2000"
        records = _records(tmp_path / "mme", result)
        assert [r["id"] for r in records] == expected["ids"]
        scored = [metric.record(r["id"], r["prediction"], r["gold"], r["meta"]) for r in records]
        assert result["metrics"] == pytest.approx(metric.aggregate(scored), rel=1e-12)
        values = result["metrics"]
        assert result["primary"] == values["perception"]
        assert not math.isnan(values["perception"]) and 0 <= values["perception"] <= 2000
        assert values["perception"] == pytest.approx(sum(values[f"score/{s}"] for s in PERCEPTION), rel=1e-12)
        assert values["cognition"] == pytest.approx(sum(values[f"score/{s}"] for s in COGNITION), rel=1e-12)
    assert "perception (score out of 2000)" in y_labels
    report = (tmp_path / "mme" / "report.md").read_text()
    assert "Paper vs this run" in report and "1510.70" in report
    from openpyxl import load_workbook

    sheet = load_workbook(tmp_path / "mme" / "results.xlsx")["mme"]
    header = [cell.value for cell in sheet[1]]
    assert "score/existence" in header and "cognition" in header


def test_seedbench_run_scores_image_questions_only(tmp_path, y_labels):
    expected = write_llava_seed(tmp_path / "data")
    metrics = _run(tmp_path, "seedbench")
    assert metrics["tasks"]["seedbench"]["reference"] is None
    metric = get_metric("seed_image")
    for result in metrics["results"]:
        records = _records(tmp_path / "seedbench", result)
        assert [r["id"] for r in records] == expected["ids"]
        assert result["primary_metric"] == "accuracy" and result["primary_unit"] == "%"
        scored = [metric.record(r["id"], r["prediction"], r["gold"], r["meta"]) for r in records]
        assert result["metrics"] == pytest.approx(metric.aggregate(scored), rel=1e-12)
        assert "accuracy/question_type=Instances Counting" in result["metrics"]
    assert "accuracy (%)" in y_labels


def test_mme_cut_by_limit_scores_its_subtasks_and_leaves_the_totals_empty(tmp_path):
    """--limit 4 covers two subtasks: no perception total exists (calculation.py needs all ten), the subtask scores
    do, and the report is still written (every headline NaN must not break the Pareto table)."""
    write_llava_mme(tmp_path / "data")
    metrics = _run(tmp_path, "mme", "--limit", "4")
    for result in metrics["results"]:
        values = result["metrics"]
        assert math.isnan(values["perception"]) and math.isnan(result["primary"])
        assert values["n/perception_subtasks"] == 2 and values["n"] == 4
        assert {"score/existence", "score/count"} <= set(values)
    assert (tmp_path / "mme" / "report.html").stat().st_size > 0
