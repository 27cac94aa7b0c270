"""Model inputs for a batch of (message, image) pairs, built the way LLaVA's evaluation builds them, and the
inverse: generated ids back to the answer text.

Prompts are left-padded so every row's last prompt token sits in the last column: that is where both HF
`generate` and the PyramidDrop engine read the query and append new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from pdrop_eval.errors import PdropEvalError, SampleError
from pdrop_eval.models.anyres import anyres_token_count
from pdrop_eval.models.images import preprocess_anyres, preprocess_padded, to_rgb
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.prompts import IMAGE_PLACEHOLDER, format_prompt, tokenize_with_images


@dataclass
class VLMBatch:
    """Tensors for one forward/generate call, already on the model's device.

    input_ids / attention_mask: [B, L], left-padded, mask 1 = real token. pixel_values: [B, 3, H, W] (LLaVA-1.5) or
    [B, tiles, 3, H, W] (NeXT, padded to the most tiles). image_sizes: [B, 2] (height, width) for NeXT, else None.
    image_token_counts[b]: image tokens in row b (they form one contiguous run of `image_token_id`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    image_sizes: torch.Tensor | None
    image_token_counts: list[int]

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for the HF model's `forward` / `generate`."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "pixel_values": self.pixel_values}
        if self.image_sizes is not None:
            inputs["image_sizes"] = self.image_sizes
        return inputs


def image_token_count(loaded: LoadedVLM, image: Image.Image) -> int:
    """Image tokens the model produces for `image`: fixed for LLaVA-1.5, size-dependent for NeXT."""
    if loaded.image_tokens_per_image is not None:
        return loaded.image_tokens_per_image
    config = loaded.model.config
    width, height = image.size
    return anyres_token_count(
        height,
        width,
        tile_size=config.vision_config.image_size,
        patch_size=config.vision_config.patch_size,
        grid_pinpoints=config.image_grid_pinpoints,
        keep_cls=config.vision_feature_select_strategy == "full",
    )


def check_prompt(text: str, sample_id: object = None) -> None:
    """A message may not hold a literal `<image>`: the template adds the one image marker, and a second would ask
    for an image the sample does not have (LLaVA's own evaluation fails on such a question too)."""
    if IMAGE_PLACEHOLDER in text:
        who = "prompt text" if sample_id is None else f"sample {sample_id!r}: its prompt text"
        raise SampleError(f"{who} contains a literal {IMAGE_PLACEHOLDER}, which the template adds itself")


def build_batch(loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
    """One image per prompt; each prompt is the bare user message, the template and `<image>\\n` are added here."""
    if len(prompts) != len(images):
        raise PdropEvalError(
            f"build_batch needs one image per prompt, got {len(prompts)} prompts, {len(images)} images"
        )
    if not prompts:
        raise PdropEvalError("build_batch needs at least one prompt")
    images = [to_rgb(image) for image in images]
    counts = [image_token_count(loaded, image) for image in images]
    rows = []
    for text, count in zip(prompts, counts):
        check_prompt(text)
        prompt = format_prompt(loaded.template, text)
        rows.append(tokenize_with_images(loaded.tokenizer, prompt, loaded.image_token_id, [count]))

    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), loaded.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, length - len(row) :] = 1

    if loaded.kind == "llava_next":
        pixel_values, image_sizes = preprocess_anyres(images, loaded.image_processor)
        image_sizes = image_sizes.to(loaded.device)
    else:
        pixel_values, image_sizes = preprocess_padded(images, loaded.image_processor), None
    return VLMBatch(
        input_ids=input_ids.to(loaded.device),
        attention_mask=attention_mask.to(loaded.device),
        pixel_values=pixel_values.to(device=loaded.device, dtype=loaded.dtype),
        image_sizes=image_sizes,
        image_token_counts=counts,
    )


def decode(loaded: LoadedVLM, token_ids: Sequence[int] | torch.Tensor) -> str:
    """Generated ids (prompt excluded) to the answer: cut at the first EOS, specials skipped, `.strip()`ped."""
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
    for position, token_id in enumerate(ids):
        if token_id in loaded.eos_token_ids:
            ids = ids[:position]
            break
    return loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()
