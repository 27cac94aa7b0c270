"""`--batch-size auto`: the largest batch that fits on the GPU, found by trying it.

Estimating from free memory and per-token KV sizes misses what each method allocates while ranking (SparseVLM's
raters, DivPrune's similarity matrix, VisionZip's second tower pass) and the allocator's fragmentation, so the batch
is measured instead: the heaviest sample of the run, repeated to fill the batch, goes through what the runner does
for one batch (the tower once, then generation to the full `max_new_tokens`, no early stop) with vanilla (every
image token in every layer) and one schedule of each other method in the run. A size fits when nothing ran out of
memory and the peak stayed under `MEMORY_SHARE` of the GPU: the margin covers the allocator's cache, prompts a bit
longer than the probe's, and LLaVA-NeXT images with more tiles. Sizes double from 1 until one does not fit (or the
largest task's size is reached), then the gap is bisected; a size that failed is never picked.

On a CPU memory is not the limit that matters (time is), so auto means the fixed `CPU_BATCH_SIZE`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError, SampleError
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.vanilla import Vanilla
from pdrop_eval.models import LoadedVLM, build_batch
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.vlm import count_crops, encode_images, generate

AUTO = "auto"
CPU_BATCH_SIZE = 8  # the default --batch-size: what a CPU run gets for auto
MEMORY_SHARE = 0.9  # a batch fits when its peak stays under this share of the GPU's memory
MAX_BATCH_SIZE = 1024
PROBE_CANDIDATES = 16  # the longest prompts whose full input lengths are compared to pick the probe sample


def parse_batch_size(text: str) -> int | str:
    """`--batch-size`: a whole number of at least 1, or `auto`."""
    value = text.strip()
    if value.lower() == AUTO:
        return AUTO
    try:
        number = int(value, 10)
    except ValueError:
        raise PdropEvalError(
            f"--batch-size {text!r} is neither a whole number nor auto: give e.g. --batch-size 16, or --batch-size "
            "auto for the largest batch that fits on the GPU"
        ) from None
    if number < 1:
        raise PdropEvalError(f"--batch-size must be at least 1, got {number}")
    return number


def largest_fitting(fits: Callable[[int], bool], limit: int) -> int:
    """The largest size in 1..limit for which `fits` holds, assuming it holds below some threshold and fails above:
    doubling, then bisecting between the last size that fitted and the first that did not. Only a size `fits`
    accepted is returned; `fits(1)` false is an error, since no batch can run."""
    if limit < 1:
        raise PdropEvalError(f"batch size auto needs at least one sample to size a batch for, got a limit of {limit}")
    if not fits(1):
        raise PdropEvalError(
            "batch size auto: even a batch of 1 does not fit in GPU memory: use a smaller dtype (--dtype bfloat16), "
            "fewer --max-new-tokens, or a GPU with more memory"
        )
    good, bad = 1, None
    while bad is None and good < limit:
        size = min(2 * good, limit)
        if fits(size):
            good = size
        else:
            bad = size
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


@dataclass
class MemoryProbe:
    """`fits(batch)` on a GPU: runs `run(batch)` from a clean peak, catching running out of memory, and keeps each
    size's peak so the chosen one can be reported. `run` is injected (the runner's batch work; tests pass fakes)."""

    run: Callable[[int], None]
    device: torch.device
    capacity: int
    share: float = MEMORY_SHARE
    peaks: dict[int, int] = field(default_factory=dict)

    def __call__(self, batch: int) -> bool:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        failed = False
        try:
            self.run(batch)
        except torch.cuda.OutOfMemoryError:
            failed = True  # the frames holding the batch's tensors are released once this handler ends
        if failed:
            torch.cuda.empty_cache()
            return False
        self.peaks[batch] = torch.cuda.max_memory_allocated(self.device)
        return self.peaks[batch] <= self.share * self.capacity


def probe_schedules(schedules: Sequence[PruningMethod]) -> list[PruningMethod]:
    """Vanilla plus the first schedule of each other method: what the probe runs (the costliest pruned setting of a
    method is its most-kept one, which vanilla bounds for in-LLM drops; the rest differ in what ranking allocates)."""
    chosen: dict[str, PruningMethod] = {"vanilla": Vanilla()}
    for schedule in schedules:
        chosen.setdefault(schedule.name, schedule)
    return list(chosen.values())


def heaviest_sample(loaded: LoadedVLM, samples: Sequence[Sample]) -> tuple[str, Image.Image]:
    """The prompt and image with the most input tokens among the longest prompts (image tokens included, which
    vary with the image on LLaVA-NeXT)."""
    by_length = sorted(samples, key=lambda sample: len(sample.prompt), reverse=True)
    best, best_length = None, -1
    for sample in by_length[:PROBE_CANDIDATES]:
        try:
            image = sample.load_image()
        except SampleError:
            continue
        length = build_batch(loaded, [sample.prompt], [image]).input_ids.shape[1]
        if length > best_length:
            best, best_length = (sample.prompt, image), length
    if best is None:
        raise PdropEvalError("batch size auto needs a readable sample image to measure a batch with")
    return best


def batch_work(
    loaded: LoadedVLM, schedules: Sequence[PruningMethod], prompt: str, image: Image.Image, max_new_tokens: int
) -> Callable[[int], None]:
    """One batch of `prompt`/`image` repeated, run as the runner runs a batch, every token generated."""
    parts = DecoderParts.from_model(loaded.model, loaded.family.positions)

    @torch.inference_mode()
    def run(batch: int) -> None:
        inputs = build_batch(loaded, [prompt] * batch, [image] * batch)
        features = encode_images(loaded.model, inputs.pixel_values, inputs.image_sizes)
        for schedule in schedules:
            generate(
                loaded.model,
                inputs.input_ids,
                inputs.attention_mask,
                schedule,
                pixel_values=inputs.pixel_values,
                image_sizes=inputs.image_sizes,
                image_features=features,
                vision_crops=count_crops(loaded.model, inputs.image_sizes, batch),
                max_new_tokens=max_new_tokens,
                eos_token_ids=(),
                pad_token_id=loaded.pad_token_id,
                parts=parts,
            )

    return run


@dataclass(frozen=True)
class AutoBatch:
    size: int
    line: str


def choose_batch_size(
    loaded: LoadedVLM,
    schedules: Sequence[PruningMethod],
    samples: Sequence[Sample],
    max_new_tokens: int,
    device: torch.device,
    limit: int,
) -> AutoBatch:
    """The batch size for `--batch-size auto` on `device` (at most `limit`: a batch larger than the largest task
    only pads), with the one line that says what was picked and why."""
    if device.type != "cuda":
        return AutoBatch(
            CPU_BATCH_SIZE,
            f"batch size auto: picked {CPU_BATCH_SIZE} on {device.type} (the fixed CPU default; auto measures GPU "
            "memory only)",
        )
    prompt, image = heaviest_sample(loaded, samples)
    capacity = torch.cuda.get_device_properties(device).total_memory
    probe = MemoryProbe(batch_work(loaded, probe_schedules(schedules), prompt, image, max_new_tokens), device, capacity)
    size = largest_fitting(probe, min(limit, MAX_BATCH_SIZE))
    return AutoBatch(size, describe_pick(size, probe.peaks[size], capacity))


def describe_pick(size: int, peak: int, capacity: int) -> str:
    return f"batch size auto: picked {size} (peak {peak / 2**30:.1f} GiB of {capacity / 2**30:.1f} GiB at {size})"
