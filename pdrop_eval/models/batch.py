"""Model inputs for a batch of (message, image) pairs, built by the model's family the way its official evaluation
builds them (pdrop_eval.families), and the inverse: generated ids back to the answer text.

Prompts are left-padded so every row's last prompt token sits in the last column: that is where both HF
`generate` and the PyramidDrop engine read the query and append new tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from pdrop_eval.errors import PdropEvalError, SampleError
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.prompts import IMAGE_PLACEHOLDER


@dataclass
class VLMBatch:
    """Tensors for one forward/generate call: on the host as a family builds them (`build_host_batch`, so data
    workers can build batches while the model runs), on the model's device after `to` (`build_batch`).

    input_ids / attention_mask: [B, L], left-padded, mask 1 = real token. pixel_values: [B, 3, H, W] (LLaVA-1.5) or
    [B, tiles, 3, H, W] (NeXT, padded to the most tiles) or [patches, C·T·P·P] (Qwen2.5-VL, every image's patches
    concatenated). image_sizes: the per-image geometry the family's tower takes: [B, 2] (height, width) for NeXT,
    [B, 3] (t, h, w) patch grids for Qwen2.5-VL, else None; HF takes it as `image_sizes_keyword`. extra_inputs:
    further keyword arguments the family's HF `generate` needs (Qwen2.5-VL: mm_token_type_ids).
    image_token_counts[b]: image tokens in row b (they form one contiguous run of `image_token_id`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    image_sizes: torch.Tensor | None
    image_token_counts: list[int]
    image_sizes_keyword: str = "image_sizes"
    extra_inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for the HF model's `forward` / `generate`."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "pixel_values": self.pixel_values}
        if self.image_sizes is not None:
            inputs[self.image_sizes_keyword] = self.image_sizes
        return {**inputs, **self.extra_inputs}

    def pinned(self) -> VLMBatch:
        """The same batch in page-locked host memory, so `to(cuda, non_blocking=True)` overlaps the copy with
        the GPU's work instead of stalling on it."""
        return self._map(lambda tensor: tensor.pin_memory())

    def to(self, device: torch.device, non_blocking: bool = False) -> VLMBatch:
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def _map(self, move) -> VLMBatch:
        return dataclasses.replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            pixel_values=move(self.pixel_values),
            image_sizes=None if self.image_sizes is None else move(self.image_sizes),
            extra_inputs={key: move(value) for key, value in self.extra_inputs.items()},
        )


def image_token_count(loaded: LoadedVLM, image: Image.Image) -> int:
    """Image tokens the model produces for `image`, as its family counts them (fixed or size-dependent)."""
    return loaded.family.image_token_count(loaded, image)


def check_prompt(text: str, sample_id: object = None) -> None:
    """A message may not hold a literal `<image>`: the template adds the one image marker, and a second would ask
    for an image the sample does not have (LLaVA's own evaluation fails on such a question too)."""
    if IMAGE_PLACEHOLDER in text:
        who = "prompt text" if sample_id is None else f"sample {sample_id!r}: its prompt text"
        raise SampleError(f"{who} contains a literal {IMAGE_PLACEHOLDER}, which the template adds itself")


def build_batch(loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
    """One image per prompt; each prompt is the bare user message, the family adds its template and image marker.
    The tensors are on the model's device."""
    return build_host_batch(loaded, prompts, images).to(loaded.device)


def build_host_batch(loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
    """`build_batch` on the host (CPU tensors, pixels already in the model's dtype): what the runner's data
    workers prepare while the model runs the previous batch (pdrop_eval.pipeline)."""
    if len(prompts) != len(images):
        raise PdropEvalError(
            f"build_batch needs one image per prompt, got {len(prompts)} prompts, {len(images)} images"
        )
    if not prompts:
        raise PdropEvalError("build_batch needs at least one prompt")
    return loaded.family.build_batch(loaded, prompts, images)


def left_padded(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as [B, L] ids and attention mask, LEFT padded so each row's last token is in the last column."""
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, length - len(row) :] = 1
    return input_ids, attention_mask


def decode(loaded: LoadedVLM, token_ids: Sequence[int] | torch.Tensor) -> str:
    """Generated ids (prompt excluded) to the answer: cut at the first EOS, specials skipped, `.strip()`ped."""
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
    for position, token_id in enumerate(ids):
        if token_id in loaded.eos_token_ids:
            ids = ids[:position]
            break
    return loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()
