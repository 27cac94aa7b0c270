"""The batch effect: whether a sample's kept image tokens and answer depend on the batch it was run in.

Batched evaluation is only trustworthy if a sample gets the same result alone as beside others. In exact arithmetic
it does (every row is masked from the others and padding is masked out), but in bf16/fp16 the kernels a batch picks
(another GEMM tiling, another attention split for a longer padded row) round differently, and a near-tie in the
attention ranking or the logits can flip: the first objection to batched VLM evaluation. Official evaluations
sidestep it by running batch 1 (LLaVA's `model_vqa_loader.py` asserts `batch_size == 1`; lmms-eval's llava and
VLMEvalKit loop one sample at a time). This module measures it instead: run the same samples at batch N, as the run
did, and at batch 1, and count the samples whose answers and kept indices (every stage) are identical.

Answers are compared as decoded text, what the scorers read; kept sets as the trace's `kept_image_indices` (per
stage inside the LLM) and `kept_feature_indices` (methods that prune before it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import torch
from PIL import Image

from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.models import LoadedVLM, build_batch, decode
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.vlm import count_crops, encode_images, generate


@dataclass(frozen=True)
class SampleOutcome:
    """What batching could change about one sample: its answer and the image tokens it kept."""

    id: str
    answer: str
    kept_image_indices: list[list[int]]
    kept_feature_indices: list[int] | None = None

    @property
    def kept(self) -> tuple[Any, Any]:
        return self.kept_feature_indices, self.kept_image_indices

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prediction": self.answer,
            "kept_image_indices": self.kept_image_indices,
            "kept_feature_indices": self.kept_feature_indices,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SampleOutcome:
        """From a predictions record (or `to_json`'s output): the run's own answer and kept indices."""
        return cls(
            id=str(record["id"]),
            answer=str(record["prediction"]),
            kept_image_indices=[list(stage) for stage in record.get("kept_image_indices") or []],
            kept_feature_indices=record.get("kept_feature_indices"),
        )


@dataclass(frozen=True)
class BatchAgreement:
    """How many of the checked samples came out the same at batch 1 as in their batch; `differing` names the rest."""

    checked: int
    answers_identical: int
    kept_identical: int
    identical: int
    differing: tuple[str, ...]
    kept_overlap: float = float("nan")

    @property
    def share(self) -> float:
        """Share of checked samples whose answer and kept indices are both identical (1.0 when none was checked
        would hide that nothing was; NaN says it)."""
        return self.identical / self.checked if self.checked else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "answers_identical": self.answers_identical,
            "kept_identical": self.kept_identical,
            "share": self.share if self.checked else None,
            "kept_overlap": self.kept_overlap if self.checked else None,
            "differing": list(self.differing),
        }


def kept_overlap(first: SampleOutcome, second: SampleOutcome) -> float:
    """How much of the kept sets two runs share, averaged over the stages (and the before-the-LLM set): |A ∩ B| /
    max(|A|, |B|); 1.0 when identical, just under 1 when a tie at the cut swapped one token, low when the ranking
    itself moved. It tells a harmless swap from a different selection, which `kept_identical` cannot."""
    pairs = list(zip_longest(first.kept_image_indices, second.kept_image_indices, fillvalue=[]))
    if first.kept_feature_indices is not None or second.kept_feature_indices is not None:
        pairs.append((first.kept_feature_indices or [], second.kept_feature_indices or []))
    shares = [len(set(a) & set(b)) / max(len(a), len(b)) if a or b else 1.0 for a, b in pairs]
    return sum(shares) / len(shares) if shares else 1.0


def compare_outcomes(batched: Sequence[SampleOutcome], single: Sequence[SampleOutcome]) -> BatchAgreement:
    """Agreement between the same samples run batched and alone, matched by id (ids only on one side are not
    compared: they were not checked)."""
    alone = {outcome.id: outcome for outcome in single}
    checked = answers = kept = identical = 0
    overlaps, differing = [], []
    for outcome in batched:
        other = alone.get(outcome.id)
        if other is None:
            continue
        checked += 1
        same_answer = outcome.answer == other.answer
        same_kept = outcome.kept == other.kept
        overlaps.append(kept_overlap(outcome, other))
        answers += same_answer
        kept += same_kept
        identical += same_answer and same_kept
        if not (same_answer and same_kept):
            differing.append(outcome.id)
    overlap = sum(overlaps) / len(overlaps) if overlaps else float("nan")
    return BatchAgreement(checked, answers, kept, identical, tuple(differing), overlap)


@dataclass(frozen=True)
class CheckInput:
    """One sample ready for the model: its key, prompt, opened image and the seed the run gave it (random drops)."""

    id: str
    prompt: str
    image: Image.Image
    seed: int

    @classmethod
    def from_sample(cls, sample: Sample, seed: int) -> CheckInput:
        """A loaded sample (its image opened now: a `SampleError` if it cannot be)."""
        return cls(str(sample.id), sample.prompt, sample.load_image(), seed)


def run_outcomes(
    loaded: LoadedVLM,
    schedule: PruningMethod,
    inputs: Sequence[CheckInput],
    batch_size: int,
    max_new_tokens: int,
    parts: DecoderParts | None = None,
) -> list[SampleOutcome]:
    """`inputs` in consecutive batches of `batch_size`, each run as the runner runs a batch: one `build_batch`
    (left padded to the batch's longest prompt), the vision tower once over the batch, then the schedule's
    generation from those features (a method that reads the tower gets the pixels instead)."""
    if batch_size < 1:
        raise PdropEvalError(f"batch size must be at least 1, got {batch_size}")
    parts = parts or DecoderParts.from_model(loaded.model, loaded.family.positions)
    outcomes = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        batch = build_batch(loaded, [item.prompt for item in chunk], [item.image for item in chunk])
        features = None
        if not schedule.reads_tower:
            features = encode_images(loaded.model, batch.pixel_values, batch.image_sizes)
        result = generate(
            loaded.model,
            batch.input_ids,
            batch.attention_mask,
            schedule,
            pixel_values=batch.pixel_values,
            image_sizes=batch.image_sizes,
            image_features=features,
            vision_crops=count_crops(loaded.model, batch.image_sizes, len(chunk)),
            max_new_tokens=max_new_tokens,
            eos_token_ids=loaded.eos_token_ids,
            pad_token_id=loaded.pad_token_id,
            sample_seeds=[item.seed for item in chunk],
            parts=parts,
        )
        for item, generation in zip(chunk, result.generations):
            trace = generation.trace
            outcomes.append(
                SampleOutcome(
                    id=item.id,
                    answer=decode(loaded, generation.token_ids),
                    kept_image_indices=[list(stage) for stage in trace.kept_image_indices],
                    kept_feature_indices=trace.kept_feature_indices,
                )
            )
    return outcomes


@torch.inference_mode()
def measure_batch_effect(
    loaded: LoadedVLM,
    schedule: PruningMethod,
    inputs: Sequence[CheckInput],
    batch_size: int,
    max_new_tokens: int,
) -> BatchAgreement:
    """Run `inputs` at `batch_size` and at batch 1 and say how many came out identical, and which did not."""
    parts = DecoderParts.from_model(loaded.model, loaded.family.positions)
    batched = run_outcomes(loaded, schedule, inputs, batch_size, max_new_tokens, parts)
    single = run_outcomes(loaded, schedule, inputs, 1, max_new_tokens, parts)
    return compare_outcomes(batched, single)
