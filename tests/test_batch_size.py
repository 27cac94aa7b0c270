"""`--batch-size auto`: the search for the largest batch that fits, with injected probes (no GPU needed), the GPU
probe's bookkeeping with torch.cuda's memory counters faked, and the flag's parsing and CPU behaviour."""

from __future__ import annotations

import json

import pytest
import torch

from pdrop_eval import batch_size, cli, runner
from pdrop_eval.batch_size import (
    CPU_BATCH_SIZE,
    MemoryProbe,
    batch_work,
    choose_batch_size,
    describe_pick,
    heaviest_sample,
    largest_fitting,
    probe_schedules,
)
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.divprune import DivPrune
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.registry import load_samples

GIB = 2**30


class Threshold:
    """fits(b) iff b <= threshold, remembering every size asked."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.asked: list[int] = []

    def __call__(self, size: int) -> bool:
        self.asked.append(size)
        return size <= self.threshold


@pytest.mark.parametrize("limit", [1, 2, 7, 64, 100])
def test_largest_fitting_finds_the_threshold_or_the_limit(limit):
    for threshold in range(1, 130):
        fits = Threshold(threshold)
        picked = largest_fitting(fits, limit)
        assert picked == min(threshold, limit)
        assert len(fits.asked) == len(set(fits.asked)), "no size is probed twice"
        assert len(fits.asked) <= 2 * max(limit, 2).bit_length() + 1, "doubling then bisection, not a linear scan"
        assert max(fits.asked) <= limit


def test_largest_fitting_never_picks_a_size_that_failed():
    """A probe that is not monotone (a transient failure): whatever is picked was itself accepted."""
    for failing in ({3}, {2, 5, 6}, {4, 9, 17}, {8}):
        answers = {}

        def fits(size, failing=failing, answers=answers):
            answers[size] = size not in failing and size <= 20
            return answers[size]

        picked = largest_fitting(fits, 32)
        assert answers[picked] is True


def test_nothing_fits_is_one_clear_error():
    with pytest.raises(PdropEvalError) as error:
        largest_fitting(lambda size: False, 64)
    message = str(error.value)
    assert "\n" not in message and "even a batch of 1 does not fit" in message and "--dtype bfloat16" in message


@pytest.fixture
def fake_cuda_memory(monkeypatch):
    """torch.cuda's memory counters on a CPU: the peak is whatever the probed work reports through `use`."""
    state = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])

    def use(size_bytes: int) -> None:
        state["peak"] = max(state["peak"], size_bytes)

    return use


def test_memory_probe_rejects_out_of_memory_and_peaks_over_the_margin(fake_cuda_memory):
    def run(batch: int) -> None:
        if batch > 12:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        fake_cuda_memory(batch * GIB)

    probe = MemoryProbe(run, torch.device("cuda"), capacity=10 * GIB, share=0.9)
    assert probe(9) is True and probe.peaks[9] == 9 * GIB
    assert probe(10) is False, "10 GiB is over 90% of 10 GiB: no margin left"
    assert probe(13) is False and 13 not in probe.peaks
    picked = largest_fitting(probe, 64)
    assert picked == 9
    assert (
        describe_pick(picked, probe.peaks[picked], 10 * GIB)
        == "batch size auto: picked 9 (peak 9.0 GiB of 10.0 GiB at 9)"
    )


@pytest.mark.engine
def test_gpu_path_measures_the_runners_batch_work(tiny_vlm, fake_cuda_memory, monkeypatch, capsys):
    """The whole GPU path on the tiny model on a CPU, memory faked as 1 GiB per sample in a batch of 6 GiB:
    the probe's batch really runs (build_batch, tower, each probe schedule) and 5 is picked."""
    loaded = tiny_vlm("tiny-llava")
    built = []
    real_build = batch_size.build_batch

    def counting_build(loaded, prompts, images):
        built.append(len(prompts))
        fake_cuda_memory(len(prompts) * GIB)
        return real_build(loaded, prompts, images)

    monkeypatch.setattr(batch_size, "build_batch", counting_build)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: type("Props", (), {"total_memory": 6 * GIB})()
    )
    samples = load_samples("shapes", limit=6)
    schedules = [DropSchedule.pyramid(0.5), DropSchedule.pyramid(0.3), DivPrune(ratio=0.25)]
    auto = choose_batch_size(loaded, schedules, samples, 2, torch.device("cuda"), limit=12)
    assert auto.size == 5
    assert auto.line == "batch size auto: picked 5 (peak 5.0 GiB of 6.0 GiB at 5)"
    assert set(built) == {1, 2, 4, 8, 6, 5}, "doubling to 8 (too big), then bisecting 6 (too big) and 5"


def test_probe_runs_vanilla_and_one_schedule_per_method():
    schedules = [DropSchedule.pyramid(0.5), DropSchedule.pyramid(0.3), DropSchedule.fastv(), DivPrune(ratio=0.25)]
    chosen = probe_schedules(schedules)
    assert [s.label for s in chosen] == ["vanilla", "pdrop_lam0.5_8-16-24", "fastv_k2_r0.5", "divprune_r0.25"]


@pytest.mark.engine
def test_heaviest_sample_has_the_longest_input_and_its_batch_runs(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    samples = load_samples("shapes", limit=6)
    prompt, image = heaviest_sample(loaded, samples)
    assert prompt == max((s.prompt for s in samples), key=len)
    batch_work(loaded, probe_schedules([DropSchedule.pyramid(0.5)]), prompt, image, 2)(3)


def test_cpu_auto_is_the_fixed_default_in_one_line():
    auto = choose_batch_size(None, [], [], 16, torch.device("cpu"), limit=100)
    assert auto.size == CPU_BATCH_SIZE
    assert "\n" not in auto.line and auto.line.startswith(f"batch size auto: picked {CPU_BATCH_SIZE} on cpu")


ARGS = ["--model", "tiny-llava", "--tasks", "shapes", "--lambda", "0.5", "--limit", "3", "--max-new-tokens", "2"]


@pytest.mark.parametrize(
    ("value", "size", "auto"), [("auto", CPU_BATCH_SIZE, True), ("AUTO", 8, True), ("16", 16, False)]
)
def test_cli_parses_auto_and_whole_numbers(value, size, auto, tmp_path):
    args = cli.build_parser().parse_args([*ARGS, "--batch-size", value])
    plan = cli.plan_from_args(args, [])
    assert (plan.batch_size, plan.auto_batch_size) == (size, auto)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "big", "", "8x"])
def test_cli_rejects_other_batch_sizes_in_one_line(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "load_vlm", lambda *a, **k: pytest.fail("the model must not load"))
    assert cli.main([*ARGS, "--batch-size", value, "--output-dir", str(tmp_path), "--no-report"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --batch-size")


@pytest.mark.engine
def test_cpu_run_with_auto_says_what_it_picked_and_records_it(tmp_path, capsys):
    assert (
        cli.main([*ARGS, "--batch-size", "auto", "--output-dir", str(tmp_path), "--run-name", "r", "--no-report"]) == 0
    )
    err = capsys.readouterr().err
    picked = [line for line in err.splitlines() if line.startswith("batch size auto:")]
    assert picked == [
        f"batch size auto: picked {CPU_BATCH_SIZE} on cpu (the fixed CPU default; auto measures GPU memory only)"
    ]
    settings = json.loads((tmp_path / "r" / "metrics.json").read_text())["run"]["settings"]
    assert settings["batch_size"] == CPU_BATCH_SIZE and settings["batch_size_auto"] is True
