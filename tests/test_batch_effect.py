"""The batch effect: batch 1 against batch N, as a library call and as `run_eval.py --check-batch-effect K`.

In fp32 batching is exact up to rounding, and the tiny models keep their logits and attention scores clear of
ties, so answers and kept indices must agree for every sample and method; a sample that differs is a bug (padding
leaking into a row, a rank depending on its neighbours). A deliberately perturbed batch-1 path must be caught.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pdrop_eval import batch_effect, cli, runner
from pdrop_eval.batch_effect import CheckInput, SampleOutcome, compare_outcomes, measure_batch_effect
from pdrop_eval.methods.dart import DART
from pdrop_eval.methods.divprune import DivPrune
from pdrop_eval.methods.sparsevlm import SparseVLM
from pdrop_eval.methods.visionzip import VisionZip
from pdrop_eval.models import image_token_count
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.registry import load_samples

BASE = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "4", "--batch-size", "4", "--max-new-tokens", "3"]


def _outcome(sample_id: str, answer: str = "red", kept=((1, 2, 3), (2,)), features=None) -> SampleOutcome:
    return SampleOutcome(sample_id, answer, [list(stage) for stage in kept], features)


def test_compare_outcomes_counts_and_names_each_kind_of_difference():
    batched = [_outcome("a"), _outcome("b"), _outcome("c"), _outcome("d"), _outcome("e", features=[0, 4])]
    single = [
        _outcome("a"),
        _outcome("b", answer="blue"),  # answer changed
        _outcome("c", kept=((1, 2, 4), (2,))),  # one kept index flipped in the first stage
        _outcome("d", answer="2", kept=((1, 2, 3), (3,))),  # both
        _outcome("e", features=[0, 5]),  # a before-the-LLM method kept another feature
        _outcome("unchecked"),  # not in the batched run: not compared
    ]
    agreement = compare_outcomes(batched, single)
    assert (agreement.checked, agreement.answers_identical, agreement.kept_identical) == (5, 3, 2)
    assert agreement.identical == 1 and agreement.share == pytest.approx(1 / 5)
    assert agreement.differing == ("b", "c", "d", "e")
    # c: 2 of 3 kept in stage 0; d: none of 1 in stage 1; e: 1 of 2 features; stages averaged per sample
    assert agreement.kept_overlap == pytest.approx((1 + 1 + (2 / 3 + 1) / 2 + (1 + 0) / 2 + (1 + 1 + 1 / 2) / 3) / 5)
    assert agreement.to_json()["differing"] == ["b", "c", "d", "e"]
    nothing = compare_outcomes(batched, [])
    assert nothing.checked == 0 and math.isnan(nothing.share) and nothing.to_json()["share"] is None


def _inputs(count: int) -> list[CheckInput]:
    """Shapes samples: three question kinds of different lengths, so a batch pads its shorter prompts."""
    samples = load_samples("shapes", limit=count)
    return [CheckInput.from_sample(s, runner._sample_seed("shapes", s)) for s in samples]


@pytest.mark.engine
@pytest.mark.parametrize(
    "method",
    [
        DropSchedule.none(),
        DropSchedule.pyramid(0.5),
        DropSchedule.fastv(),
        DropSchedule.random(seed=3),
        DivPrune(ratio=0.25),
        VisionZip(dominant=54, contextual=10),
        DART(max_num_trunction=64),
        SparseVLM(retain_tokens=128, heads=2),
    ],
    ids=lambda method: method.label,
)
def test_fp32_batch_of_three_equals_batch_one_for_every_method(tiny_vlm, method):
    loaded = tiny_vlm("tiny-llava")
    inputs = _inputs(6)
    assert len({len(item.prompt) for item in inputs}) > 1, "the batches must hold prompts of different lengths"
    batched = batch_effect.run_outcomes(loaded, method, inputs, 3, 4)
    agreement = measure_batch_effect(loaded, method, inputs, 3, 4)
    assert agreement.differing == () and agreement.checked == 6 and agreement.share == 1.0
    if method.drops:
        assert all(o.kept_image_indices or o.kept_feature_indices for o in batched), "kept sets must be compared"
    assert len({o.answer for o in batched}) > 1, "answers that never vary would compare nothing"


@pytest.mark.engine
@pytest.mark.parametrize("method", [DropSchedule.none(), DropSchedule.pyramid(0.5)], ids=lambda m: m.label)
def test_fp32_llava_next_batch_with_different_tile_counts_equals_batch_one(tiny_vlm, method):
    """LLaVA-NeXT pads a batch's pixels to its most tiles and its prompts to the most image tokens: images of
    other sizes in one batch must not change a sample's result."""
    loaded = tiny_vlm("tiny-llava-next")
    sizes = [(64, 64), (200, 90), (90, 300), (150, 150)]
    samples = load_samples("shapes", limit=len(sizes))
    inputs = [
        CheckInput(str(s.id), s.prompt, s.load_image().resize(size), seed=index)
        for index, (s, size) in enumerate(zip(samples, sizes))
    ]
    assert len({image_token_count(loaded, item.image) for item in inputs}) > 1, "tile counts must differ"
    agreement = measure_batch_effect(loaded, method, inputs, 4, 4)
    assert agreement.differing == () and agreement.checked == 4


def _run(tmp_path: Path, *extra: str, run_name: str = "r") -> int:
    return cli.main([*BASE, "--output-dir", str(tmp_path), "--run-name", run_name, *extra])


def _checks(run_dir: Path) -> dict[str, dict | None]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {row["schedule"]["label"]: row.get("batch_effect") for row in metrics["results"]}


@pytest.mark.engine
def test_cli_flag_writes_the_agreement_into_metrics_and_report(tmp_path):
    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla", "--check-batch-effect", "3") == 0
    run_dir = tmp_path / "r"
    expected = {
        "checked": 3,
        "answers_identical": 3,
        "kept_identical": 3,
        "share": 1.0,
        "kept_overlap": 1.0,
        "differing": [],
        "run_batch_sizes": [4],
    }
    assert _checks(run_dir) == {"vanilla": expected, "pdrop_lam0.5_8-16-24": expected}
    stored = (run_dir / "batch_effect" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in stored] == ["0", "1", "2"], "the first K in dataset order"
    report = (run_dir / "report.md").read_text()
    section = report[report.index("### Batch effect") :]
    assert "| pdrop\\_lam0.5\\_8-16-24 | 4 | 3 | 3 | 3 | 100.0% | 100.00% | — |" in section


@pytest.fixture
def perturbed_batch_one(monkeypatch):
    """The check's batch-1 generation with the PDrop sample 0's first kept index moved and sample 1's answer
    changed; the run's own batches (runner.generate) are left alone."""
    original = batch_effect.generate

    def perturbed(model, input_ids, *args, **kwargs):
        result = original(model, input_ids, *args, **kwargs)
        schedule = args[1] if len(args) > 1 else kwargs.get("method")
        if input_ids.shape[0] == 1 and schedule is not None and schedule.drops:
            seen = perturbed.calls = perturbed.calls + 1
            trace = result.generations[0].trace
            if seen == 1:
                first = trace.kept_image_indices[0]
                trace.kept_image_indices[0] = sorted({*first[1:], next(i for i in range(576) if i not in first)})
            elif seen == 2:
                result.generations[0].token_ids = [7, 8, 9]
        return result

    perturbed.calls = 0
    monkeypatch.setattr(batch_effect, "generate", perturbed)
    return perturbed


@pytest.mark.engine
def test_a_perturbed_batch_one_run_is_detected_and_reported(tmp_path, perturbed_batch_one):
    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla", "--check-batch-effect", "3") == 0
    checks = _checks(tmp_path / "r")
    assert checks["vanilla"]["differing"] == [] and checks["vanilla"]["share"] == 1.0
    pdrop = checks["pdrop_lam0.5_8-16-24"]
    assert (pdrop["checked"], pdrop["answers_identical"], pdrop["kept_identical"]) == (3, 2, 2)
    assert pdrop["differing"] == ["0", "1"] and pdrop["share"] == pytest.approx(1 / 3)
    overlap = (287 / 288 + 1 + 1) / 3 / 3 + 2 / 3  # one of sample 0's 288 first-stage tokens swapped
    assert pdrop["kept_overlap"] == pytest.approx(overlap)
    row = f"| pdrop\\_lam0.5\\_8-16-24 | 4 | 3 | 2 | 2 | 33.3% | {100 * overlap:.2f}% | 0, 1 |"
    assert row in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.engine
def test_resume_keeps_the_check_and_never_reruns_a_checked_sample(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, "--lambda", "0.5", "--check-batch-effect", "2", "--no-report") == 0
    first = _checks(tmp_path / "r")["pdrop_lam0.5_8-16-24"]
    assert first["checked"] == 2
    calls = []
    original = batch_effect.generate
    monkeypatch.setattr(batch_effect, "generate", lambda *a, **k: calls.append(a[1].shape[0]) or original(*a, **k))

    loads = []
    load = runner.load_vlm
    monkeypatch.setattr(runner, "load_vlm", lambda *a, **k: loads.append(a) or load(*a, **k))
    assert _run(tmp_path, "--lambda", "0.5", "--check-batch-effect", "2", "--no-report") == 0
    assert loads == [] and calls == [], "a finished, checked run is rebuilt from disk"
    assert _checks(tmp_path / "r")["pdrop_lam0.5_8-16-24"] == first

    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "fastv", "--no-report") == 0
    checks = _checks(tmp_path / "r")
    assert checks["pdrop_lam0.5_8-16-24"] == first, "a later command without the flag keeps the check"
    assert checks["fastv_k2_r0.5"] is None and calls == []

    assert _run(tmp_path, "--lambda", "0.5", "--check-batch-effect", "3", "--no-report") == 0
    assert len(loads) == 2 and calls == [1], "only the one sample not yet checked runs at batch 1"
    assert _checks(tmp_path / "r")["pdrop_lam0.5_8-16-24"]["checked"] == 3

    assert _run(tmp_path, "--lambda", "0.5", "--overwrite", "--no-report") == 0
    assert _checks(tmp_path / "r")["pdrop_lam0.5_8-16-24"] is None, "--overwrite drops the old check with the run"
    assert not (tmp_path / "r" / "batch_effect").exists()


def _fail_if_model_loads(*args, **kwargs):
    raise AssertionError("the model must not be loaded before input is validated")


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "abc", "", "3e2"])
def test_bad_check_count_is_one_line_with_status_2(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    assert _run(tmp_path, "--lambda", "0.5", "--check-batch-effect", value) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --check-batch-effect")
    assert "whole number of at least 1" in lines[0]
