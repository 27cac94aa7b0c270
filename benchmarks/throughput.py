"""End-to-end throughput: the real runner on a GQA-shaped task against the engine alone on the same batches and
against an HF `generate` batch-1 loop (how LLaVA's model_vqa_loader.py, lmms-eval's llava and VLMEvalKit run).

The task is the real `gqa` task reading a LLaVA GQA folder that `pdrop_eval.data.synthetic.write_gqa_folder` writes
to a temporary directory: 500×375 JPEGs with a photo's entropy, GQA's prompt suffix (about 60 prompt tokens with
the template), and a forced number of new tokens (8 by default, GQA answers are shorter). The model is
random-weight, built by speed.py from a shape preset (speed does not depend on the weights); it is handed to the
runner in memory, because writing and reading 14 GB of random 7B weights would take longer than the run, with the
tiny test tokenizer (its ids fit every preset's vocabulary) and the family's image processor.

Paths, each PDrop λ 0.5 at the preset's scaled layers (8, 16, 24 of 32), after one untimed warm-up batch, run in
turn `--rounds` times (medians reported, so a busy shared machine slows every path alike):
- engine alone: the runner's batches prepared beforehand and already on the device; per batch one vision pass and
  `generate`, as the runner's loop does.
- runner end to end: `pdrop_eval.runner.run` from listing the task to metrics.json: reading, decoding,
  preprocessing and tokenising (in data workers, `--data-workers`), the model, decoding answers, FLOPs, fsynced
  predictions, merging and scoring; once with the pipeline (default workers) and once with `--data-workers 0`
  (each batch prepared on the main thread between model calls, as the runner did before the pipeline).
- HF generate batch 1: vanilla `model.generate` per sample on inputs prepared beforehand (data time is hidden by
  model_vqa_loader's DataLoader workers, so it is left out here too: the comparison favours HF).

    python benchmarks/throughput.py --preset cpu-small              # 2 CPU cores, a few minutes
    python benchmarks/throughput.py --preset llava-1.5-7b           # full shapes, bf16, one GPU
    python benchmarks/throughput.py --preset llava-next-vicuna-7b   # LLaVA-NeXT anyres, bf16, one GPU

Writes `<out>/throughput_<preset>.json` and `.md` and prints the table and whether each target is met.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from speed import _build_model, _scaled_layers
from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from pdrop_eval import runner
from pdrop_eval.data.synthetic import write_gqa_folder
from pdrop_eval.families.registry import FAMILIES
from pdrop_eval.models.batch import VLMBatch, build_batch
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.tiny_tokenizer import build_tiny_tokenizer
from pdrop_eval.pipeline import BatchPipeline, default_workers, varies_in_length
from pdrop_eval.plan import RunPlan
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.timing import synchronize
from pdrop_eval.pyramid.vlm import encode_images, generate
from pdrop_eval.registry import get_task, load_samples

GQA_TESTDEV = 12578
TEMPLATE = "vicuna_v1"


@dataclass
class Row:
    """One path: median seconds over the rounds, and its speed relative to the engine alone as the median of the
    rounds' paired ratios (each round's paths ran back to back, so a load that comes and goes cancels out), by
    wall clock and by the main thread's CPU time (`Timing`)."""

    path: str
    samples: int
    batch: int
    seconds: float
    samples_per_s: float
    vs_engine: float | None
    main_cpu_vs_engine: float | None = None  # the engine's main-thread CPU seconds / this path's
    data_wait_ms_per_sample: float | None = None


def _loaded(preset: str, device: torch.device, dtype: torch.dtype, attn: str) -> LoadedVLM:
    """The preset's random model with what the runner needs around it. No EOS: every answer is `new_tokens` long,
    as in speed.py, so every path does the same work."""
    model = _build_model(preset, device, dtype, attn)
    config = model.config
    kind = config.model_type
    vision = config.vision_config
    image_args = {
        "size": {"shortest_edge": vision.image_size},
        "crop_size": {"height": vision.image_size, "width": vision.image_size},
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
    }
    if kind == "llava_next":
        processor = LlavaNextImageProcessorPil(**image_args, image_grid_pinpoints=config.image_grid_pinpoints)
    else:
        processor = CLIPImageProcessorPil(**image_args)
    family = FAMILIES["llava"]
    tokenizer = build_tiny_tokenizer()
    return LoadedVLM(
        model=model,
        tokenizer=tokenizer,
        image_processor=processor,
        family=family,
        kind=kind,
        image_token_id=int(config.image_token_id),
        image_tokens_per_image=family.fixed_image_tokens(kind, config),
        pad_color=family.pad_color(kind, processor),
        template=TEMPLATE,
        name=preset,
        path=Path(preset),
        dtype=model.dtype,
        device=model.device,
        attn=attn,
        eos_token_ids=(),
        pad_token_id=int(tokenizer.pad_token_id),
    )


def _prepared(loaded: LoadedVLM, samples, batch: int) -> tuple[list[VLMBatch], float]:
    """The runner's batches (its grouping included), built on the main thread: the batches and the seconds
    preparing them took."""
    start = time.perf_counter()
    with BatchPipeline(loaded, samples, batch, workers=0, by_length=varies_in_length(loaded)) as steps:
        batches = [step.inputs for step in steps if step.inputs is not None]
    return batches, time.perf_counter() - start


@dataclass
class Timing:
    """Wall seconds, and the main thread's CPU seconds: on a machine shared with other jobs the wall clock swings
    with their load, while the CPU time the loop's own thread spends does not (with one torch thread it is the
    model's compute plus whatever else the loop does: the data work the pipeline moves to other threads)."""

    seconds: float
    main_cpu_s: float


def _timed(run) -> Timing:
    start, cpu = time.perf_counter(), time.thread_time()
    run()
    return Timing(time.perf_counter() - start, time.thread_time() - cpu)


def bench_engine(loaded: LoadedVLM, batches: list[VLMBatch], schedule, new_tokens: int) -> Timing:
    """The runner's model work on batches already on the device: one vision pass, then `generate`."""
    parts = DecoderParts.from_model(loaded.model, loaded.family.positions)
    on_device = [batch.to(loaded.device) for batch in batches]

    def one(inputs: VLMBatch) -> None:
        features = encode_images(loaded.model, inputs.pixel_values, inputs.image_sizes)
        generate(
            loaded.model,
            inputs.input_ids,
            inputs.attention_mask,
            schedule,
            image_features=features,
            max_new_tokens=new_tokens,
            eos_token_ids=loaded.eos_token_ids,
            pad_token_id=loaded.pad_token_id,
            parts=parts,
        )

    def run() -> None:
        for inputs in on_device:
            one(inputs)
        synchronize(loaded.device)

    one(on_device[0])  # warm-up
    synchronize(loaded.device)
    return _timed(run)


class _WaitTimedPipeline(BatchPipeline):
    """The runner's pipeline, also summing how long the loop waited for each next batch: the data work the
    pipeline did not hide behind the model."""

    waited_s = 0.0

    def __iter__(self):
        steps = super().__iter__()
        while True:
            start = time.perf_counter()
            step = next(steps, None)
            _WaitTimedPipeline.waited_s += time.perf_counter() - start
            if step is None:
                return
            yield step


@dataclass
class RunnerTiming(Timing):
    waited_s: float  # the loop waiting for data
    reported_samples_per_s: float  # metrics.json's model-time figure


def bench_runner(loaded: LoadedVLM, data_root: Path, out: Path, plan_args: dict, workers: int | None) -> RunnerTiming:
    """`runner.run` end to end, with the model built in memory (module docstring)."""
    plan = RunPlan(
        **plan_args, run_name=f"workers{workers}", output_dir=out, data_root=str(data_root), data_workers=workers
    )
    originals = runner.load_vlm, runner.BatchPipeline
    runner.load_vlm = lambda *args, **kwargs: loaded
    runner.BatchPipeline = _WaitTimedPipeline
    _WaitTimedPipeline.waited_s = 0.0
    outcomes = []

    def run() -> None:
        outcomes.append(runner.run(plan))
        synchronize(loaded.device)

    try:
        synchronize(loaded.device)
        timing = _timed(run)
    finally:
        runner.load_vlm, runner.BatchPipeline = originals
    (result,) = outcomes[0].metrics["results"]
    return RunnerTiming(timing.seconds, timing.main_cpu_s, _WaitTimedPipeline.waited_s, result["samples_per_s"])


def bench_hf_generate(loaded: LoadedVLM, samples, new_tokens: int) -> float:
    """Seconds for vanilla HF `generate` at batch 1 over `samples`, inputs prepared beforehand."""
    inputs = [build_batch(loaded, [s.prompt], [s.load_image()]).model_inputs() for s in samples]

    def one(arguments: dict) -> None:
        out = loaded.model.generate(
            **arguments,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=loaded.pad_token_id,
        )
        assert out.shape[1] - arguments["input_ids"].shape[1] == new_tokens

    one(inputs[0])  # warm-up
    synchronize(loaded.device)
    start = time.perf_counter()
    for arguments in inputs:
        one(arguments)
    synchronize(loaded.device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", help="cpu-small | llava-1.5-7b | llava-next-vicuna-7b")
    parser.add_argument("--samples", type=int, default=None, help="GQA-shaped samples (default 1024 GPU, 64 CPU)")
    parser.add_argument("--hf-samples", type=int, default=None, help="samples for HF batch 1 (default 64 GPU, 8 CPU)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32 on GPU, 4 on CPU)")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens, forced (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="each path this many times in turn; medians (default 3)")
    parser.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    parser.add_argument("--out", default="results/bench", help="output folder for the JSON and markdown")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    count = args.samples or (1024 if gpu else 32)
    hf_count = args.hf_samples or (64 if gpu else 8)
    batch = args.batch or (32 if gpu else 4)
    torch.set_grad_enabled(False)
    loaded = _loaded(args.preset, device, dtype, args.attn)
    depth = loaded.model.config.text_config.num_hidden_layers
    schedule = DropSchedule.pyramid(0.5, layers=_scaled_layers(depth))

    with tempfile.TemporaryDirectory(prefix="pdrop_throughput_") as folder:
        root = Path(folder)
        write_gqa_folder(root / "data", count)
        samples = load_samples(get_task("gqa"), root / "data")
        batches, prepare_s = _prepared(loaded, samples, batch)
        plan_args = {
            "model": args.preset,
            "tasks": ("gqa",),
            "schedules": (schedule,),
            "batch_size": batch,
            "dtype": str(dtype).replace("torch.", ""),
            "device": str(device),
            "attn": args.attn,
            "max_new_tokens": args.new_tokens,
            "report": False,
            "overwrite": True,
        }
        workers = default_workers()
        engine: list[Timing] = []
        piped: list[RunnerTiming] = []
        serial: list[RunnerTiming] = []
        for _ in range(args.rounds):
            engine.append(bench_engine(loaded, batches, schedule, args.new_tokens))
            piped.append(bench_runner(loaded, root / "data", root / "runs", plan_args, None))
            serial.append(bench_runner(loaded, root / "data", root / "runs", plan_args, 0))
        prompt_tokens = round(float(batches[0].attention_mask.sum(1).float().mean()))
        hf_s = bench_hf_generate(loaded, samples[:hf_count], args.new_tokens)

    engine_s = statistics.median(t.seconds for t in engine)
    hf_rate = hf_count / hf_s

    def runner_row(path: str, timings: list[RunnerTiming]) -> Row:
        seconds = statistics.median(t.seconds for t in timings)
        paired = statistics.median(e.seconds / t.seconds for e, t in zip(engine, timings))
        cpu = statistics.median(e.main_cpu_s / t.main_cpu_s for e, t in zip(engine, timings))
        wait = 1e3 * statistics.median(t.waited_s for t in timings) / count
        return Row(path, count, batch, seconds, count / seconds, paired, cpu, wait)

    rows = [
        Row(f"engine alone, {schedule.label}", count, batch, engine_s, count / engine_s, 1.0, 1.0),
        runner_row(f"runner end to end, pipeline ({workers} data workers)", piped),
        runner_row("runner end to end, no pipeline (--data-workers 0)", serial),
        Row("HF generate batch 1, vanilla (once)", hf_count, 1, hf_s, hf_rate, hf_rate * engine_s / count),
    ]
    piped_row, hf = rows[1], rows[3]
    projected_s = GQA_TESTDEV / piped_row.samples_per_s
    targets = [
        ("end to end >= 0.9 x engine alone", f"{piped_row.vs_engine:.3f}", piped_row.vs_engine >= 0.9),
        (
            "PDrop end to end >= 10 x HF generate batch 1 (GPU)",
            f"{piped_row.samples_per_s / hf.samples_per_s:.1f}x",
            piped_row.samples_per_s >= 10 * hf.samples_per_s if gpu else None,
        ),
        (
            f"GQA testdev ({GQA_TESTDEV}) projected under 3 min on one GPU",
            f"{projected_s / 60:.1f} min",
            projected_s < 180 if gpu else None,
        ),
    ]
    machine = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    header = {
        "preset": args.preset,
        "machine": machine,
        "dtype": str(dtype).replace("torch.", ""),
        "attn": args.attn,
        "batch": batch,
        "new_tokens": args.new_tokens,
        "prompt_tokens": prompt_tokens,
        "prepare_ms_per_sample": 1e3 * prepare_s / count,
        "rounds": args.rounds,
        "runner_reported_samples_per_s": statistics.median(t.reported_samples_per_s for t in piped),
        "seconds_per_round": {
            "engine": [asdict(t) for t in engine],
            "pipeline": [asdict(t) for t in piped],
            "no_pipeline": [asdict(t) for t in serial],
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    markdown = _markdown(header, rows, targets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **header,
        "rows": [asdict(row) for row in rows],
        "targets": [{"target": t, "value": v, "met": m} for t, v, m in targets],
    }
    (out / f"throughput_{args.preset}.json").write_text(json.dumps(payload, indent=2))
    (out / f"throughput_{args.preset}.md").write_text(markdown)
    print(markdown)
    return 0


def _markdown(header: dict, rows: list[Row], targets: list[tuple[str, str, bool | None]]) -> str:
    lines = [
        (
            f"Preset `{header['preset']}` on {header['machine']}, {header['dtype']}, attention {header['attn']}; "
            f"GQA-shaped task of 500×375 JPEGs, about {header['prompt_tokens']} prompt tokens, {header['new_tokens']} "
            f"new tokens forced; medians of {header['rounds']} rounds; preparing a sample (read, decode, preprocess, tokenise) took "
            f"{header['prepare_ms_per_sample']:.1f} ms on one thread; the runner's own model-time samples/s (warm-up "
            f"excluded): {header['runner_reported_samples_per_s']:.2f}; torch {header['versions']['torch']}, "
            f"transformers {header['versions']['transformers']}."
        ),
        "",
        (
            "| path | samples | batch | seconds | samples/s | × engine alone | × engine alone, main-thread CPU "
            "| loop waited for data, ms/sample |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wait = "n/a" if r.data_wait_ms_per_sample is None else f"{r.data_wait_ms_per_sample:.1f}"
        cpu = "n/a" if r.main_cpu_vs_engine is None else f"{r.main_cpu_vs_engine:.3f}"
        lines.append(
            f"| {r.path} | {r.samples} | {r.batch} | {r.seconds:.1f} | {r.samples_per_s:.2f} | {r.vs_engine:.3f} "
            f"| {cpu} | {wait} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    verdict = {True: "met", False: "NOT met", None: "not judged (GPU target)"}
    lines += [f"| {target} | {value} | {verdict[met]} |" for target, value, met in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
