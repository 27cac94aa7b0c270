"""Speed benchmark: HF generate (how official evaluations run) against our engine, vanilla, PDrop and FastV, and
every registered method at the token budgets given (`--budget 192,128,64`), as `--methods … --budget` sets them.

One run, side by side, on a GQA-shaped workload (576 image tokens, ~60 text tokens, a forced number of new tokens)
with random weights: speed does not depend on what the weights are. Models that tile their images (LLaVA-NeXT,
LLaVA-OneVision) get a 640 × 480 image, as COCO's (GQA's) are, tiled as the model's family tiles it; methods that
cannot run on the model (VisionZip without a CLS token, downsample on tiles) are left out with a note. Qwen2.5-VL
presets take a 640×480 picture as lmms-eval resizes it (644×476 px: 391 image tokens); methods that shorten the
image before the LLM, which that family refuses, are listed as skipped.

    python benchmarks/speed.py --preset cpu-small            # 2 CPU cores, a few minutes
    python benchmarks/speed.py --preset llava-1.5-7b         # full shapes, bf16, on a GPU
    python benchmarks/speed.py --preset llava-onevision-7b   # SigLIP tiles + Qwen2-7B, bf16, on a GPU
    python benchmarks/speed.py --preset qwen2.5-vl-7b        # Qwen2.5-VL-7B shapes, bf16, on a GPU

Writes `<out>/speed_<preset>.json` and `.md` and prints the table and whether each goal is met.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.registry import family_of
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings, resolve_budgets
from pdrop_eval.methods.registry import METHODS
from pdrop_eval.methods.sparsevlm import SparseVLM
from pdrop_eval.model_geometry import llava_geometry
from pdrop_eval.models.presets import preset_config
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.flops import sample_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.timing import Stopwatch
from pdrop_eval.pyramid.vlm import generate

TEXT_BEFORE_IMAGE = 35  # system prompt + "USER: "
TEXT_AFTER_IMAGE = 25  # question + suffix + " ASSISTANT:"
TILED_IMAGE = (480, 640)  # (height, width) of the image a tiling model gets: COCO's usual size
QWEN_GRID = (1, 34, 46)  # (t, h, w) patches of a 640×480 picture resized to 644×476 px: 17×23 = 391 tokens


@dataclass
class Row:
    method: str
    batch: int
    prefill_ms: float
    decode_ms_per_token: float
    samples_per_s: float
    rank_share: float
    peak_memory_gib: float | None
    prefill_flops_ratio: float
    prefill_time_ratio: float | None = None


def _scaled_layers(depth: int) -> tuple[int, ...]:
    """PDrop's [8, 16, 24] of 32 layers at the preset's depth."""
    return tuple(round(depth * fraction) for fraction in (0.25, 0.5, 0.75))


def budget_methods(budgets: list[int], geometry: ModelGeometry) -> list[PruningMethod]:
    """Every registered method at each budget, with the settings `--methods … --budget …` gives it (PDrop and
    random at layers 2, 6, 12, which reach all three budgets); SparseVLM+ with at most the model's heads (it picks
    14 of 32 on a 7B model; the small preset has fewer). A method whose `check_model` refuses the model is left out,
    with a note on stderr."""
    sweep = SweepSettings(layer_lists=((2, 6, 12),))
    chosen = []
    for name, cls in METHODS.items():
        if not cls.takes_budget:
            continue
        try:
            if name == "sparsevlm":  # run with the heads the model has, so only its other limits apply
                cls.check_model(dataclasses.replace(geometry, num_heads=None))
                heads = min(14, geometry.num_heads)
                chosen += [SparseVLM(retain_tokens=budget, heads=heads) for budget in budgets]
            else:
                chosen += [choice.method for choice in resolve_budgets([cls], budgets, geometry, sweep)]
        except PdropEvalError as error:
            print(f"note: {name} left out: {error}", file=sys.stderr)
    return chosen


def _build_model(preset: str, device: torch.device, dtype: torch.dtype, attn: str):
    from transformers import (
        LlavaForConditionalGeneration,
        LlavaNextForConditionalGeneration,
        LlavaOnevisionForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
    )

    config = preset_config(preset)
    config._attn_implementation = attn
    model_class = {
        "llava": LlavaForConditionalGeneration,
        "llava_next": LlavaNextForConditionalGeneration,
        "llava_onevision": LlavaOnevisionForConditionalGeneration,
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    }[config.model_type]
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation(attn)
    return model.eval()


def _inputs(model, batch: int, device: torch.device, dtype: torch.dtype):
    """Prompt ids and mask, the engine's image arguments and HF forward's (the same pixels); a tiled model's
    image-token count is what its own `encode_images` packs for the `TILED_IMAGE` crops."""
    config = model.config
    vision = config.vision_config
    generator = torch.Generator().manual_seed(1)
    special = [config.image_token_id, getattr(config, "vision_start_token_id", None) or config.image_token_id]
    text_high = min(32000, config.text_config.vocab_size, *special)  # random text never hits a special token
    before = torch.randint(3, text_high, (batch, TEXT_BEFORE_IMAGE), generator=generator)
    after = torch.randint(3, text_high, (batch, TEXT_AFTER_IMAGE), generator=generator)
    before[:, 0] = 1
    if config.model_type == "qwen2_5_vl":
        grid = torch.tensor([QWEN_GRID] * batch)
        span = (
            [config.vision_start_token_id]
            + [config.image_token_id] * (int(grid[0].prod()) // vision.spatial_merge_size**2)
            + [config.vision_end_token_id]
        )
        images = torch.tensor([span] * batch)
        width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.randn(int(grid.prod(-1).sum()), width, generator=generator).to(device, dtype)
        input_ids = torch.cat([before, images, after], dim=1).to(device)
        engine = {"pixel_values": pixels, "image_sizes": grid.to(device)}
        hf = {
            "pixel_values": pixels,
            "image_grid_thw": grid.to(device),
            "mm_token_type_ids": (input_ids == config.image_token_id).int(),
        }
        return input_ids, torch.ones_like(input_ids), engine, hf
    family = family_of(model)
    side = vision.image_size
    if config.model_type in family.anyres_kinds:
        image_sizes = torch.tensor([TILED_IMAGE] * batch, device=device)
        crops = family.count_crops(model, image_sizes, batch)[0]
        pixels = torch.randn(batch, crops, 3, side, side, generator=generator).to(device, dtype)
        image_tokens = len(family.encode_images(model, pixels[:1], image_sizes[:1])[0])
        images = {"pixel_values": pixels, "image_sizes": image_sizes}
    else:
        pixels = torch.randn(batch, 3, side, side, generator=generator).to(device, dtype)
        image_tokens = (side // vision.patch_size) ** 2
        images = {"pixel_values": pixels}
    input_ids = torch.cat([before, torch.full((batch, image_tokens), config.image_token_id), after], dim=1)
    input_ids = input_ids.to(device)
    return input_ids, torch.ones_like(input_ids), images, images


def _median_runs(run, repeats: int, device: torch.device) -> list[dict]:
    run()  # warm-up
    results = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        results.append(run())
    return results


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def bench_engine(model, parts, schedule, batch, new_tokens, repeats, device, dtype) -> dict:
    input_ids, mask, images, _ = _inputs(model, batch, device, dtype)

    def run() -> dict:
        with Stopwatch(device) as watch:
            result = generate(model, input_ids, mask, schedule, **images, max_new_tokens=new_tokens, parts=parts)
        timings = result.timings
        return {
            "total": watch.seconds,
            "prefill": timings.vision_s + timings.prefill_s,
            "decode": timings.decode_s,
            "rank": timings.rank_s,
            "llm_prefill": timings.prefill_s,
            "trace": result.generations[0].trace,
            "peak": _peak_gib(device),
        }

    return _summarise(_median_runs(run, repeats, device), batch, new_tokens)


def bench_hf_generate(model, new_tokens, repeats, device, dtype) -> dict:
    """Batch 1, as LLaVA's own evaluation, lmms-eval and VLMEvalKit run; prefill timed as one forward pass."""
    input_ids, mask, _, images = _inputs(model, 1, device, dtype)

    @torch.no_grad()
    def run() -> dict:
        with Stopwatch(device) as prefill:
            model(input_ids=input_ids, attention_mask=mask, **images, logits_to_keep=1)
        with Stopwatch(device) as whole:
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                **images,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        assert out.shape[1] - input_ids.shape[1] == new_tokens
        return {
            "total": whole.seconds,
            "prefill": prefill.seconds,
            "decode": max(whole.seconds - prefill.seconds, 0.0),
            "rank": 0.0,
            "llm_prefill": prefill.seconds,
            "trace": None,
            "peak": _peak_gib(device),
        }

    return _summarise(_median_runs(run, repeats, device), 1, new_tokens)


def _summarise(runs: list[dict], batch: int, new_tokens: int) -> dict:
    def median(key):
        return statistics.median(run[key] for run in runs)

    peaks = [run["peak"] for run in runs if run["peak"] is not None]
    return {
        "prefill_ms": median("prefill") * 1e3,
        "llm_prefill_ms": median("llm_prefill") * 1e3,
        "decode_ms_per_token": median("decode") * 1e3 / max(new_tokens - 1, 1),
        "samples_per_s": batch / median("total"),
        "rank_share": median("rank") / median("llm_prefill"),
        "peak_gib": max(peaks) if peaks else None,
        "trace": runs[-1]["trace"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        default="cpu-small",
        help="cpu-small | llava-1.5-7b | llava-1.5-13b | llava-onevision-7b | qwen2.5-vl-cpu-small | qwen2.5-vl-7b "
        "| qwen2.5-vl-3b",
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size B (default 8 on GPU, 4 on CPU)")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens, forced (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; medians reported")
    parser.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    parser.add_argument(
        "--budget", default="128", help="image-token budgets for every method, e.g. 192,128,64 (default 128)"
    )
    parser.add_argument("--out", default="results/bench", help="output folder for the JSON and markdown")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch = args.batch or (8 if device.type == "cuda" else 4)
    torch.set_grad_enabled(False)
    model = _build_model(args.preset, device, dtype, args.attn)
    family = family_of(model)
    parts = DecoderParts.from_model(model, family.positions)
    shape = family.model_shape(model.config)
    depth = shape.text.layers
    pdrop = DropSchedule.pyramid(0.5, layers=_scaled_layers(depth), positions=family.default_position_mode)
    fastv = DropSchedule.fastv(k=2, r=0.5)
    common = (args.new_tokens, args.repeats, device, dtype)

    measured = {("HF generate", 1): bench_hf_generate(model, *common)}
    for name, schedule in (("engine vanilla", DropSchedule.none()), (f"engine {pdrop.label}", pdrop)):
        for size in sorted({1, batch}):
            measured[(name, size)] = bench_engine(model, parts, schedule, size, *common)
    measured[(f"engine {fastv.label}", batch)] = bench_engine(model, parts, fastv, batch, *common)
    image_tokens = measured[("engine vanilla", 1)]["trace"].num_image_tokens
    if model.config.model_type in ("llava", "llava_next"):  # budgets as the runner sets them (NeXT: 5 × 576)
        geometry = dataclasses.replace(llava_geometry(model.config), num_layers=depth)
    else:
        anyres = model.config.model_type in family.anyres_kinds
        geometry = ModelGeometry(
            depth,
            image_tokens,
            anyres=anyres,
            num_heads=shape.text.heads,
            cls_token=family.vision_cls_token,
            tiling=model.config.model_type if anyres else None,
        )
    budgets = [int(value) for value in args.budget.split(",")]
    for method in budget_methods(budgets, geometry):
        try:
            measured[(f"engine {method.label}", batch)] = bench_engine(model, parts, method, batch, *common)
        except PdropEvalError as error:  # refused only once it runs (Qwen2.5-VL: shortening the image span)
            print(f"skipped {method.label}: {error}", file=sys.stderr)

    def prefill_flops(result) -> float:
        counted = sample_flops(shape, result["trace"])
        return counted.exact_prefill + counted.exact_rank

    vanilla_flops = prefill_flops(measured[("engine vanilla", batch)])
    rows = []
    for (name, size), result in measured.items():
        vanilla = measured[("engine vanilla", size)] if name.startswith("engine") else None
        rows.append(
            Row(
                method=name,
                batch=size,
                prefill_ms=result["prefill_ms"],
                decode_ms_per_token=result["decode_ms_per_token"],
                samples_per_s=result["samples_per_s"],
                rank_share=result["rank_share"],
                peak_memory_gib=result["peak_gib"],
                prefill_flops_ratio=prefill_flops(result) / vanilla_flops if result["trace"] else 1.0,
                prefill_time_ratio=result["llm_prefill_ms"] / vanilla["llm_prefill_ms"] if vanilla else None,
            )
        )

    pdrop_b = next(r for r in rows if r.method == f"engine {pdrop.label}" and r.batch == batch)
    hf = rows[0]
    goals = []
    if device.type == "cuda":
        goals.append(
            (
                f"prefill time ratio PDrop/vanilla <= 1.1 x FLOPs ratio at batch {batch}",
                f"{pdrop_b.prefill_time_ratio:.3f} vs {1.1 * pdrop_b.prefill_flops_ratio:.3f}",
                batch >= 8 and pdrop_b.prefill_time_ratio <= 1.1 * pdrop_b.prefill_flops_ratio,
            )
        )
        goals.append(
            (
                f"PDrop samples/s at batch {batch} >= 10 x HF generate batch 1",
                f"{pdrop_b.samples_per_s / hf.samples_per_s:.1f}x",
                pdrop_b.samples_per_s >= 10 * hf.samples_per_s,
            )
        )
    else:
        goals.append(
            (
                f"prefill time ratio PDrop/vanilla <= 0.65 on {args.preset} (batch {batch})",
                f"{pdrop_b.prefill_time_ratio:.3f}",
                pdrop_b.prefill_time_ratio <= 0.65,
            )
        )
    goals.append(("rank & drop <= 2% of prefill time", f"{100 * pdrop_b.rank_share:.2f}%", pdrop_b.rank_share <= 0.02))

    machine = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    header = {
        "preset": args.preset,
        "machine": machine,
        "dtype": str(dtype).replace("torch.", ""),
        "attn": args.attn,
        "batch": batch,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "image_tokens": measured[("engine vanilla", 1)]["trace"].num_image_tokens,
        "prompt_tokens": measured[("engine vanilla", 1)]["trace"].prompt_tokens,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    markdown = _markdown(header, rows, goals)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **header,
        "rows": [asdict(r) for r in rows],
        "goals": [{"goal": g, "value": v, "met": bool(m)} for g, v, m in goals],
    }
    (out / f"speed_{args.preset}.json").write_text(json.dumps(payload, indent=2))
    (out / f"speed_{args.preset}.md").write_text(markdown)
    print(markdown)
    return 0


def _markdown(header: dict, rows: list[Row], goals: list[tuple[str, str, bool]]) -> str:
    lines = [
        (
            f"Preset `{header['preset']}` on {header['machine']}, {header['dtype']}, attention {header['attn']}; "
            f"{header['prompt_tokens']} prompt tokens ({header['image_tokens']} image), {header['new_tokens']} new tokens "
            f"forced; median of {header['repeats']} runs after a warm-up; torch {header['versions']['torch']}, "
            f"transformers {header['versions']['transformers']}."
        ),
        "",
        (
            "| method | batch | prefill ms | decode ms/token | samples/s | rank share | peak GiB | prefill time ratio "
            "| prefill FLOPs ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "n/a"
        ratio = f"{r.prefill_time_ratio:.3f}" if r.prefill_time_ratio is not None else "n/a"
        lines.append(
            f"| {r.method} | {r.batch} | {r.prefill_ms:.1f} | {r.decode_ms_per_token:.2f} | {r.samples_per_s:.2f} "
            f"| {100 * r.rank_share:.2f}% | {peak} | {ratio} | {r.prefill_flops_ratio:.3f} |"
        )
    lines += ["", "| goal | value | met |", "|---|---|---|"]
    lines += [f"| {goal} | {value} | {'met' if met else 'NOT met'} |" for goal, value, met in goals]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
