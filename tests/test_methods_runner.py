"""A run whose sweep mixes in-LLM and before-the-LLM methods, end to end on the tiny model: the tower runs once per
image for all of them, every method's records and metrics carry its own costs, and the report builds."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pdrop_eval import cli, runner
from pdrop_eval.methods.divprune import DivPrune
from pdrop_eval.methods.downsample import Downsample
from pdrop_eval.methods.visionzip import VisionZip
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.report import build_reports

pytestmark = pytest.mark.engine

ARGS = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "3", "--batch-size", "2", "--max-new-tokens", "2"]


def test_before_and_inside_the_llm_methods_in_one_sweep(tmp_path, monkeypatch):
    encoded = []
    original = runner.encode_images

    def counting(model, pixel_values, image_sizes=None):
        encoded.append(pixel_values.shape[0])
        return original(model, pixel_values, image_sizes)

    monkeypatch.setattr(runner, "encode_images", counting)
    argv = [*ARGS, "--output-dir", str(tmp_path), "--run-name", "mixed", "--baselines", "vanilla"]
    plan = cli.plan_from_args(cli.build_parser().parse_args(argv), argv)
    methods = (DropSchedule.none(), DivPrune(ratio=1 / 9), Downsample(grid=8), DropSchedule.pyramid(0.5), VisionZip())
    payload = runner.run(dataclasses.replace(plan, schedules=methods)).metrics

    assert sum(encoded) == 3, "methods that leave the tower alone share one vision pass per image"
    results = {r["schedule"]["label"]: r for r in payload["results"]}
    assert list(results) == [
        "vanilla",
        "divprune_r0.111111",
        "downsample_g8",
        "pdrop_lam0.5_8-16-24",
        "visionzip_d54_c10",
    ]
    methods = [r["schedule"]["method"] for r in results.values()]
    assert methods == ["vanilla", "divprune", "downsample", "pdrop", "visionzip"]
    assert results["visionzip_d54_c10"]["retained_tokens"] == 64
    assert results["divprune_r0.111111"]["retained_tokens"] == 64
    assert results["downsample_g8"]["retained_tokens"] == 64
    assert results["pdrop_lam0.5_8-16-24"]["retained_tokens"] == 270
    assert results["divprune_r0.111111"]["tflops_exact"] < results["vanilla"]["tflops_exact"]
    assert results["downsample_g8"]["tflops_paper"] == pytest.approx(results["divprune_r0.111111"]["tflops_paper"])

    run_dir = tmp_path / "mixed"
    for label, result in results.items():
        records = [json.loads(line) for line in (run_dir / result["predictions"]).read_text().splitlines()]
        assert len(records) == 3
        for record in records:
            assert record["num_image_tokens"] == 576
            selected = record["kept_feature_indices"]
            if label.startswith("divprune"):
                assert len(selected) == 64 and selected == sorted(set(selected))
            elif label.startswith("visionzip"):
                assert len(selected) == 53 and selected == sorted(set(selected))
            else:
                assert selected is None
    paths = build_reports([run_dir])
    table = paths.markdown.read_text()
    assert "| DivPrune |" in table and "| downsample |" in table
