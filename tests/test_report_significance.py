"""Confidence intervals, paired tests and agreement with vanilla, recomputed from per-sample predictions, and
shown in the spreadsheet, the tables and the plots."""

from __future__ import annotations

import json
import math

import numpy as np
import openpyxl
import pytest

from pdrop_eval.report import build_reports
from pdrop_eval.report.load import load_run
from pdrop_eval.report.significance import RESAMPLES, mcnemar_p, schedule_units
from pdrop_eval.report.table import results_frame
from tests.run_fixtures import write_sampled_run


def _frame(run_dir):
    return results_frame([load_run(run_dir)]).set_index("schedule")


@pytest.mark.parametrize("task, n", [("shapes", 48), ("pope", 300)])
def test_intervals_hold_the_score_and_are_seeded(tmp_path, task, n):
    run_dir = write_sampled_run(tmp_path, "a", task=task, n=n)
    first, again = _frame(run_dir), _frame(run_dir)
    for label, row in first.iterrows():
        assert row["ci_low"] < row["primary"] < row["ci_high"], label
        assert row["ci_high"] - row["ci_low"] > 5, "48 or 300 samples cannot pin a score to within a few points"
    assert first[["ci_low", "ci_high", "delta_low", "delta_high", "p_value"]].equals(
        again[["ci_low", "ci_high", "delta_low", "delta_high", "p_value"]]
    )


def test_a_twin_of_vanilla_has_no_difference_and_full_agreement(tmp_path):
    frame = _frame(write_sampled_run(tmp_path, "a"))
    twin = frame.loc["pdrop_lam0.7_8-16-24"]
    assert (twin["delta_low"], twin["delta_high"], twin["p_value"], twin["agreement"]) == (0.0, 0.0, 1.0, 100.0)
    assert twin["test"] == "McNemar" and twin["paired_n"] == 48


def test_paired_test_and_agreement_match_the_predictions(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a")
    frame = _frame(run_dir)
    read = {
        label: [json.loads(line) for line in (run_dir / f"predictions/shapes/{label}.jsonl").read_text().splitlines()]
        for label in ("vanilla", "random_8-16-24_r0.5-0.25-0.125_s0")
    }
    ours = np.array([r["score"] for r in read["random_8-16-24_r0.5-0.25-0.125_s0"]])
    theirs = np.array([r["score"] for r in read["vanilla"]])
    row = frame.loc["random_8-16-24_r0.5-0.25-0.125_s0"]
    assert row["p_value"] == pytest.approx(mcnemar_p(ours, theirs))
    same = [a["prediction"] == b["prediction"] for a, b in zip(*read.values())]
    assert row["agreement"] == pytest.approx(100 * sum(same) / len(same))
    assert row["delta_high"] < 0 and row["p_value"] < 0.01, "a 30-point loss on 48 paired samples is not noise"


def test_mcnemar_exact_values():
    assert mcnemar_p(np.array([0] * 5), np.array([1] * 5)) == pytest.approx(2 / 32)
    assert mcnemar_p(np.array([1, 0, 1]), np.array([1, 0, 1])) == 1.0
    assert mcnemar_p(np.array([1, 0, 1, 0]), np.array([0, 1, 0, 1])) == 1.0


def test_mmbench_resamples_questions_not_rotations():
    options = {"A": "cat", "B": "dog"}
    records = []
    for base, right in ((1, (1, 1)), (2, (1, 0)), (3, (0, 0))):
        for rotation, ok in enumerate(right):
            records.append(
                {
                    "id": base + rotation * 1_000_000,
                    "prediction": "A" if ok else "B",
                    "gold": "A",
                    "scores": {"mmbench_circular": float(ok)},
                    "meta": {"index": base + rotation * 1_000_000, "options": options},
                }
            )
    units = schedule_units(records, "mmbench_circular", "circular_accuracy", 100 / 3)
    assert units.keys == ["1", "2", "3"] and list(units.values) == [1.0, 0.0, 0.0]


def test_predictions_that_disagree_with_metrics_json_get_no_interval(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["results"][2]["primary"] += 10
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    row = _frame(run_dir).loc["pdrop_lam0.5_8-16-24"]
    assert math.isnan(row["ci_low"]) and "metrics.json says" in row["significance_note"]


def test_spreadsheet_and_html_show_intervals_tests_and_agreement(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a")
    paths = build_reports([run_dir])
    frame = _frame(run_dir)
    header, *rows = openpyxl.load_workbook(paths.spreadsheet)["Summary"].iter_rows(values_only=True)
    summary = {row[header.index("Schedule")]: dict(zip(header, row)) for row in rows}
    random_row = summary["random_8-16-24_r0.5-0.25-0.125_s0"]
    expected = frame.loc["random_8-16-24_r0.5-0.25-0.125_s0"]
    assert random_row["95% CI low"] == pytest.approx(expected["ci_low"])
    assert random_row["Δ 95% CI high"] == pytest.approx(expected["delta_high"])
    assert random_row["p (Δ vs vanilla)"] == pytest.approx(expected["p_value"]) and random_row["Test"] == "McNemar"
    assert random_row["Same answer as vanilla (%)"] == pytest.approx(expected["agreement"])
    html = paths.html.read_text(encoding="utf-8")
    assert "<th>95% CI</th>" in html and "<th>Δ 95% CI</th>" in html and "<th>same answer as vanilla</th>" in html
    low, high = expected["ci_low"], expected["ci_high"]
    assert f"[{low:.2f}, {high:.2f}]" in html and f"{expected['agreement']:.1f}% of 48" in html
    assert "McNemar" in html and "cannot be told apart from noise" in html


def test_pope_statistic_reproduces_the_official_f1_so_the_fast_path_is_used(tmp_path):
    run_dir = write_sampled_run(tmp_path, "p", task="pope", n=300)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for result in metrics["results"]:
        records = [json.loads(line) for line in (run_dir / result["predictions"]).read_text().splitlines()]
        units = schedule_units(records, "pope", "f1_mean", result["primary"])
        assert units.resamples == RESAMPLES, "the vectorised F1 must equal the POPE metric's own aggregate"
        assert float(units.statistic(np.ones((1, 300)))[0]) == pytest.approx(result["primary"], rel=1e-12)


def test_mme_resamples_images_and_reproduces_the_perception_total():
    """MME's acc+ pairs an image's two questions: resampling must draw images, never single questions (a drawn
    question twice would be a third question on its image), and unit weights must give the official total."""
    from pdrop_eval.metrics import get_metric
    from pdrop_eval.metrics.base import ScoredRecord
    from pdrop_eval.metrics.mme import PERCEPTION
    from pdrop_eval.report.significance import _bootstrap, _interval

    records = []
    for n, subtask in enumerate(PERCEPTION):
        for image in range(3):
            for k, gold in enumerate(("Yes", "No")):
                right = (n + image + k) % 3 != 0
                prediction = gold if right else ("No" if gold == "Yes" else "Yes")
                meta = {"category": subtask, "image": f"{subtask}/{image}.png"}
                records.append(
                    {
                        "id": f"{subtask}/{image}#{k}",
                        "prediction": prediction,
                        "gold": gold,
                        "scores": {"mme": float(right)},
                        "meta": meta,
                    }
                )
    scored = [ScoredRecord(r["id"], r["prediction"], r["gold"], r["scores"]["mme"], r["meta"]) for r in records]
    perception = get_metric("mme").aggregate(scored)["perception"]
    units = schedule_units(records, "mme", "perception", perception)
    assert len(units.keys) == len(PERCEPTION) * 3
    assert units.statistic(np.ones((1, len(units.keys))))[0] == pytest.approx(perception)
    low, high = _interval(_bootstrap(units))
    assert low <= perception <= high and low < high
