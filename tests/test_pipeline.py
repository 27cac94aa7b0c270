"""The data pipeline: batches prepared by worker threads are the batches the main thread would build, in the same
order with the same failures; length buckets change which samples share a batch but no answer (float32); an error
or Ctrl-C in the loop ends every worker thread; the first batch of each schedule is timed as warm-up, left out of
the speed columns."""

from __future__ import annotations

import itertools
import json
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from pdrop_eval import cli, runner
from pdrop_eval.data.sample import Sample
from pdrop_eval.data.synthetic import write_gqa_folder
from pdrop_eval.errors import SampleError
from pdrop_eval.pipeline import BUCKET_BATCHES, BatchPipeline, length_groups
from pdrop_eval.pyramid import timing
from tests.test_sample_failures import write_docvqa

LABELS = ("vanilla", "pdrop_lam0.5_8-16-24")


def _data_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("pdrop-data")]


def _sample(index: int, size: tuple[int, int] = (40, 30), broken: bool = False, prompt: str = "What is it?") -> Sample:
    def load() -> Image.Image:
        if broken:
            raise SampleError(f"sample {index!r}: cannot read image file x{index}.jpg (No such file or directory)")
        return Image.new("RGB", size, (index * 37 % 256, 90, 160))

    return Sample(index, prompt, prompt, "a", f"x{index}.jpg", load)


def _steps(pipeline: BatchPipeline) -> list[tuple]:
    with pipeline:
        return [
            (
                [s.id for s in step.samples],
                [(s.id, reason) for s, reason in step.failures],
                step.outcomes,
                None if step.inputs is None else (step.inputs.input_ids, step.inputs.pixel_values),
            )
            for step in pipeline
        ]


def _assert_same_steps(first: list[tuple], second: list[tuple]) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second):
        assert one[:3] == other[:3]
        assert (one[3] is None) == (other[3] is None)
        if one[3] is not None:
            assert all(torch.equal(a, b) for a, b in zip(one[3], other[3]))


def test_length_groups_sort_stably_then_cut():
    assert length_groups([5, 3, 5, 1, 3], 2) == [[3, 1], [4, 0], [2]]
    assert length_groups([], 4) == []


@pytest.mark.parametrize("by_length", [False, True])
def test_worker_threads_prepare_exactly_what_the_main_thread_would(tiny_vlm, by_length):
    """Catches (checked by mutation) batches handed over out of order, a failure reported with the wrong batch or
    twice, and a window whose samples all failed being skipped (its failures never recorded)."""
    loaded = tiny_vlm("tiny-llava-next")
    sizes = [(224, 112), (112, 224), (100, 100), (336, 112), (150, 90), (90, 150), (200, 200)]
    samples = [_sample(i, sizes[i % len(sizes)], broken=i in {2, 5, 6, 7}) for i in range(13)]
    samples[9].prompt = "Is <image> here?"  # a literal <image>: fails like a broken image
    inline = _steps(BatchPipeline(loaded, samples, 2, workers=0, by_length=by_length))
    threaded = _steps(BatchPipeline(loaded, samples, 2, workers=3, by_length=by_length))
    _assert_same_steps(threaded, inline)
    outcomes = [outcome for step in inline for outcome in step[2]]
    assert [reason is not None for reason in outcomes] == [i in {2, 5, 6, 7, 9} for i in range(13)]
    failed = [sample_id for step in inline for sample_id, _ in step[1]]
    assert failed == [2, 5, 6, 7, 9]
    ran = [sample_id for step in inline for sample_id in step[0]]
    assert sorted(ran) == [0, 1, 3, 4, 8, 10, 11, 12]
    if not by_length:
        assert ran == sorted(ran)
        assert inline[3][0] == [] and [sample_id for sample_id, _ in inline[3][1]] == [6, 7], "failures only"


def test_length_buckets_group_similar_image_token_counts(tiny_vlm):
    loaded = tiny_vlm("tiny-llava-next")
    sizes = [(200, 200), (100, 100), (224, 112), (100, 100), (200, 200), (224, 112)]  # 336, 136, 200 image tokens
    samples = [_sample(i, size) for i, size in enumerate(sizes)]
    steps = _steps(BatchPipeline(loaded, samples, 2, workers=2, by_length=True))
    assert [ids for ids, *_ in steps] == [[1, 3], [2, 5], [0, 4]]
    assert all(bool(inputs[0].ne(loaded.pad_token_id).all()) for *_, inputs in steps), "no padding left"
    assert len(samples) < 2 * BUCKET_BATCHES, "one window: the whole list was sorted together"


def test_an_error_in_a_worker_reaches_the_loop_and_every_thread_ends(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    samples = [_sample(i) for i in range(12)]
    samples[5].load_image = partial(_raise, RuntimeError("disk controller on fire"))
    seen = []
    with pytest.raises(RuntimeError, match="on fire"), BatchPipeline(loaded, samples, 2, workers=2) as batches:
        for step in batches:
            seen.extend(s.id for s in step.samples)
    assert seen == [0, 1, 2, 3], "the batches before the error were handed over, in order"
    assert not _data_threads()


def _raise(error: BaseException):
    raise error


def test_leaving_the_loop_cancels_preparation_and_joins_every_thread(tiny_vlm):
    """Catches (checked by mutation) a close that neither stops the producer nor cancels queued loads (all 200
    samples get loaded) and one that leaves the worker pool running."""
    loaded = tiny_vlm("tiny-llava")
    loads = itertools.count()

    def slow(index: int) -> Image.Image:
        next(loads)
        time.sleep(0.02)
        return Image.new("RGB", (40, 30))

    samples = [Sample(i, "Q?", "Q?", "a", "x", partial(slow, i)) for i in range(200)]
    with pytest.raises(KeyboardInterrupt), BatchPipeline(loaded, samples, 2, workers=2) as batches:
        for _ in batches:
            time.sleep(0.2)  # the queue fills: the producer blocks on it
            raise KeyboardInterrupt
    assert not _data_threads()
    assert next(loads) < 40, "samples far ahead were loaded after the loop stopped"


# ---- the runner end to end -----------------------------------------------------------------------------------------


def _fake_clock(monkeypatch) -> None:
    """Every stopwatch reading one millisecond after the last: timings follow the calls, not the machine."""
    ticks = itertools.count()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: next(ticks) / 1000))


def _docvqa_run(tmp_path: Path, name: str, *extra: str) -> Path:
    args = ["--model", "tiny-llava", "--tasks", "docvqa", "--lambda", "0.5", "--baselines", "vanilla"]
    args += ["--max-new-tokens", "2", "--batch-size", "2", "--no-report", "--output-dir", str(tmp_path)]
    assert cli.main([*args, "--run-name", name, *extra]) == 0
    return tmp_path / name


@pytest.mark.engine
def test_prefetch_on_and_off_write_byte_identical_predictions_and_metrics(tmp_path, monkeypatch):
    """With failed samples mid-task, one in a batch and a whole batch of them. Catches (checked by mutation) the
    threaded path handing batches over out of order (the warm-up mark moves) and dropping a window's failures."""
    write_docvqa(tmp_path / "lmu", 9, {3: "corrupt image", 6: "corrupt image", 7: "image tag in the question"})
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    _fake_clock(monkeypatch)
    inline = _docvqa_run(tmp_path, "inline", "--data-workers", "0")
    _fake_clock(monkeypatch)
    threaded = _docvqa_run(tmp_path, "threaded", "--data-workers", "3")
    for label in LABELS:
        path = Path("predictions") / "docvqa" / f"{label}.jsonl"
        assert (threaded / path).read_bytes() == (inline / path).read_bytes()
        assert sum("failed" in json.loads(line) for line in (inline / path).read_text().splitlines()) == 3
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (inline, threaded))
    assert json.dumps(first["results"]) == json.dumps(second["results"])
    assert first["tasks"] == second["tasks"]


def _answers(run_dir: Path) -> dict[str, list[dict]]:
    return {
        label: [
            {key: value for key, value in json.loads(line).items() if key != "timing"}
            for line in (run_dir / "predictions" / "gqa" / f"{label}.jsonl").read_text().splitlines()
        ]
        for label in LABELS
    }


@pytest.mark.engine
def test_length_buckets_give_the_answers_of_dataset_order_batches(tmp_path, monkeypatch):
    """tiny-llava-next, images whose token counts differ, fp32: bucketed and dataset-order batches must agree on
    every answer and kept index, the bucketed run also when it resumes a run stopped after 5 samples. Catches
    (checked by mutation) rows of a bucketed batch paired with the wrong sample, and predictions written in the
    order samples ran instead of the dataset's."""
    sizes = [(200, 200), (100, 100), (224, 112), (336, 112), (100, 100), (200, 200), (112, 224), (150, 90)]
    write_gqa_folder(tmp_path / "data", 11, sizes)
    (tmp_path / "data" / "gqa" / "data" / "images" / "s4.jpg").unlink()  # a failed sample inside a bucket window
    counts: dict[str, list[list[int]]] = {}
    original = runner.encode_images

    def recording(model, pixel_values, image_sizes=None):
        features = original(model, pixel_values, image_sizes)
        counts.setdefault(name, []).append(sorted(int(f.shape[0]) for f in features))
        return features

    monkeypatch.setattr(runner, "encode_images", recording)
    runs = {}
    args = ["--model", "tiny-llava-next", "--tasks", "gqa", "--data-root", str(tmp_path / "data"), "--lambda", "0.5"]
    args += ["--baselines", "vanilla", "--batch-size", "3", "--max-new-tokens", "3", "--no-report"]
    for name, commands in (("buckets", (["--limit", "5"], [])), ("dataset_order", (["--no-length-buckets"],))):
        for extra in commands:
            assert cli.main([*args, "--output-dir", str(tmp_path), "--run-name", name, *extra]) == 0
        runs[name] = _answers(tmp_path / name)
    assert runs["buckets"] == runs["dataset_order"]
    ids = [record["id"] for record in runs["buckets"]["vanilla"]]
    assert ids == [str(i) for i in range(11)], "predictions in dataset order"
    assert "failed" in runs["buckets"]["vanilla"][4]
    assert counts["buckets"] != counts["dataset_order"], "the buckets must have regrouped the samples"
    spread = {name: sum(max(batch) - min(batch) for batch in batches) for name, batches in counts.items()}
    assert spread["buckets"] < spread["dataset_order"]
    metrics = json.loads((tmp_path / "buckets" / "metrics.json").read_text())
    assert metrics["run"]["settings"]["length_buckets"] is True


@pytest.mark.engine
def test_ctrl_c_in_the_model_loop_keeps_what_was_written_and_ends_every_thread(tmp_path, monkeypatch, capsys):
    calls = itertools.count()
    original = runner.generate

    def interrupted(*args, **kwargs):
        if next(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "generate", interrupted)
    args = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "40", "--batch-size", "2", "--lambda", "0.5"]
    args += ["--max-new-tokens", "2", "--no-report", "--data-workers", "2", "--output-dir", str(tmp_path)]
    assert cli.main([*args, "--run-name", "r"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not _data_threads()
    shard = tmp_path / "r" / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.rank0.jsonl"
    assert [json.loads(line)["id"] for line in shard.read_text().splitlines()] == [0, 1, 2, 3]


@pytest.mark.engine
def test_first_batch_of_each_schedule_is_warmup_and_left_out_of_the_speed(tmp_path, monkeypatch):
    """Catches (checked by mutation) warm-up records counted in samples/s or prefill ms, and warm-up marked only on
    the schedule that ran first."""
    write_docvqa(tmp_path / "lmu", 6, {})
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    run_dir = _docvqa_run(tmp_path, "r")
    for label in LABELS:
        path = run_dir / "predictions" / "docvqa" / f"{label}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["timing"]["warmup"] for r in records] == [True, True, False, False, False, False]
        for record in records[:2]:  # a warm-up as slow as a first CUDA call: it must not show in the speed
            record["timing"].update(time_share_s=1000.0, prefill_ms=1e6, decode_ms_per_token=1e6)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _docvqa_run(tmp_path, "r")  # complete: rescored from disk, nothing recomputed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "warm-up" in metrics["run"]["timing"]
    for result in metrics["results"]:
        records = [json.loads(line) for line in (run_dir / result["predictions"]).read_text().splitlines()]
        timed = [r["timing"] for r in records[2:]]
        assert result["timing"] == {"timed_samples": 4, "warmup_samples": 2, "includes_warmup": False}
        assert result["samples_per_s"] == pytest.approx(4 / sum(t["time_share_s"] for t in timed))
        assert result["prefill_ms"] == pytest.approx(sum(t["prefill_ms"] for t in timed) / 4)
        assert result["decode_ms_per_token"] == pytest.approx(sum(t["decode_ms_per_token"] for t in timed) / 4)
    assert cli.main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "Timings: model time only" in report and "each task x schedule is warm-up" in report


@pytest.mark.parametrize(("device", "bound"), [("cuda", []), ("cuda:1", [1])])
def test_workers_bind_to_the_runs_gpu_only_when_it_names_an_index(tiny_vlm, monkeypatch, device, bound):
    """`--device cuda` has no index (the current device, GPU 0 in a new thread too): passing it to `set_device` would
    raise in every worker's initializer and break the pool; `cuda:N` must bind each worker to N."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    BatchPipeline(tiny_vlm, [], 2, workers=1, gpu=torch.device(device))._bind_gpu()
    assert calls == bound
