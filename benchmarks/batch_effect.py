"""Batch-effect benchmark: the share of samples whose answer and kept image tokens are identical at batch 1 and at
batch N, per dtype and method, and the peak GPU memory at each batch size.

GQA-shaped synthetic samples (576 image tokens, 35 text tokens before the image and 15–35 after, so a batch pads
its shorter prompts) on a preset's shapes with random weights, run as the runner runs them: per batch one left-padded
input, the vision tower once, then the method's generation (8 new tokens forced, so whole token sequences are
compared). float32 is the control: it must agree 100% (tests/test_batch_effect.py holds the same on the tiny
model). Random weights make near-ties in attention and logits more common than a trained model does, so the bf16
share here shows that the effect exists and how it scales with the method, not what a real checkpoint loses;
`run_eval.py --check-batch-effect K` measures that on real data.

    python benchmarks/batch_effect.py --preset cpu-small                 # 2 CPU cores, a few minutes
    python benchmarks/batch_effect.py --preset llava-1.5-7b --batch 32   # full shapes, one GPU

Writes `<out>/batch_effect_<preset>.json` and `.md` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from speed import _build_model, _scaled_layers

from pdrop_eval.batch_effect import SampleOutcome, compare_outcomes
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.divprune import DivPrune
from pdrop_eval.models.batch import left_padded
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import encode_images, generate

TEXT_BEFORE_IMAGE = 35
TEXT_AFTER_IMAGE = (15, 35)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class SyntheticSample:
    id: str
    input_ids: list[int]
    pixels: torch.Tensor
    seed: int


def synthetic_samples(model, count: int) -> list[SyntheticSample]:
    """Distinct prompts and images, seeded; the text after the image varies in length as questions do."""
    config = model.config
    vision = config.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2
    vocab = min(config.text_config.vocab_size, 32000)
    generator = torch.Generator().manual_seed(7)
    samples = []
    for index in range(count):
        after = int(torch.randint(TEXT_AFTER_IMAGE[0], TEXT_AFTER_IMAGE[1] + 1, (1,), generator=generator))
        before = torch.randint(3, vocab, (TEXT_BEFORE_IMAGE,), generator=generator).tolist()
        tail = torch.randint(3, vocab, (after,), generator=generator).tolist()
        ids = [1, *before[1:], *[config.image_token_id] * image_tokens, *tail]
        pixels = torch.randn(3, vision.image_size, vision.image_size, generator=generator)
        samples.append(SyntheticSample(str(index), ids, pixels, seed=index))
    return samples


def run_at(model, parts, method, samples, batch, new_tokens, device, dtype) -> tuple[list[SampleOutcome], float | None]:
    """Every sample in consecutive batches of `batch`, as the runner runs a batch; the outcomes and the peak GPU
    memory in GiB (None on a CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    outcomes = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        input_ids, mask = left_padded([s.input_ids for s in chunk], pad_token_id=0)
        pixels = torch.stack([s.pixels for s in chunk]).to(device, dtype)
        features = None if method.reads_tower else encode_images(model, pixels)
        result = generate(
            model,
            input_ids.to(device),
            mask.to(device),
            method,
            pixel_values=pixels,
            image_features=features,
            max_new_tokens=new_tokens,
            sample_seeds=[s.seed for s in chunk],
            parts=parts,
        )
        for sample, generation in zip(chunk, result.generations):
            trace = generation.trace
            outcomes.append(
                SampleOutcome(
                    sample.id,
                    " ".join(str(token) for token in generation.token_ids),
                    [list(stage) for stage in trace.kept_image_indices],
                    trace.kept_feature_indices,
                )
            )
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return outcomes, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", help="cpu-small | llava-1.5-7b | llava-1.5-13b")
    parser.add_argument("--batch", type=int, default=None, help="batch size N (default 32 on GPU, 4 on CPU)")
    parser.add_argument("--samples", type=int, default=None, help="samples compared (default 128 on GPU, 8 on CPU)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated, e.g. bfloat16,float32")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens, forced (default 8)")
    parser.add_argument("--memory-batches", default="", help="extra batch sizes to measure peak memory at, e.g. 64,128")
    parser.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    parser.add_argument("--out", default="results/bench", help="output folder for the JSON and markdown")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (32 if device.type == "cuda" else 4)
    count = args.samples or (128 if device.type == "cuda" else 8)
    extra_sizes = [int(size) for size in args.memory_batches.split(",") if size.strip()]
    torch.set_grad_enabled(False)
    agreement_rows, memory_rows = [], []
    for dtype_name in [name.strip() for name in args.dtypes.split(",") if name.strip()]:
        dtype = DTYPES[dtype_name]
        model = _build_model(args.preset, device, dtype, args.attn)
        parts = DecoderParts.from_model(model)
        depth = parts.num_layers
        methods: list[PruningMethod] = [
            DropSchedule.none(),
            DropSchedule.pyramid(0.5, layers=_scaled_layers(depth)),
            DropSchedule.fastv(k=2, r=0.5),
            DivPrune(ratio=128 / 576),
        ]
        samples = synthetic_samples(model, count)
        peaks: dict[int, float | None] = {}
        for method in methods:
            batched, peak_n = run_at(model, parts, method, samples, batch, args.new_tokens, device, dtype)
            single, peak_1 = run_at(model, parts, method, samples, 1, args.new_tokens, device, dtype)
            for size, peak in ((batch, peak_n), (1, peak_1)):
                if peak is not None:
                    peaks[size] = max(peaks.get(size, 0.0), peak)
            agreement = compare_outcomes(batched, single)
            agreement_rows.append({"dtype": dtype_name, "method": method.label, "batch": batch, **agreement.to_json()})
            print(f"{dtype_name} {method.label}: {agreement.identical}/{agreement.checked} identical", file=sys.stderr)
        for size in extra_sizes:
            repeated = (samples * (size // len(samples) + 1))[:size]
            _, peaks[size] = run_at(model, parts, methods[0], repeated, size, args.new_tokens, device, dtype)
        for size in sorted({1, batch, *extra_sizes}):
            memory_rows.append({"dtype": dtype_name, "batch": size, "peak_gib": peaks.get(size)})
        del model, parts
        if device.type == "cuda":
            torch.cuda.empty_cache()

    machine = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    header = {
        "preset": args.preset,
        "machine": machine,
        "attn": args.attn,
        "batch": batch,
        "samples": count,
        "new_tokens": args.new_tokens,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    markdown = _markdown(header, agreement_rows, memory_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**header, "agreement": agreement_rows, "memory": memory_rows}
    (out / f"batch_effect_{args.preset}.json").write_text(json.dumps(payload, indent=2))
    (out / f"batch_effect_{args.preset}.md").write_text(markdown)
    print(markdown)
    return 0


def _markdown(header: dict, agreement: list[dict], memory: list[dict]) -> str:
    lines = [
        (
            f"Preset `{header['preset']}` on {header['machine']}, attention {header['attn']}, random weights; "
            f"{header['samples']} synthetic GQA-shaped samples at batch {header['batch']} against batch 1, "
            f"{header['new_tokens']} new tokens forced; torch {header['versions']['torch']}, transformers "
            f"{header['versions']['transformers']}."
        ),
        "",
        "| dtype | method | batch | samples | same answer | same kept tokens | kept overlap | identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in agreement:
        share = "n/a" if row["share"] is None else f"{100 * row['share']:.1f}%"
        lines.append(
            f"| {row['dtype']} | {row['method']} | {row['batch']} vs 1 | {row['checked']} | {row['answers_identical']} "
            f"| {row['kept_identical']} | {100 * row['kept_overlap']:.2f}% | {share} |"
        )
    lines += ["", "| dtype | batch | peak GPU memory GiB |", "|---|---|---|"]
    for row in memory:
        peak = "n/a" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        lines.append(f"| {row['dtype']} | {row['batch']} | {peak} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
