"""The value `load_vlm` returns: a model plus everything needed to build its inputs and read its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import BaseImageProcessor, PreTrainedModel, PreTrainedTokenizerBase

VLMKind = Literal["llava", "llava_next"]


@dataclass
class LoadedVLM:
    """A loaded LLaVA-style model and its preprocessing facts.

    `image_tokens_per_image` is fixed for LLaVA-1.5 (576 at 336 px / patch 14) and None for LLaVA-NeXT, whose
    count depends on each image's size (see `anyres.anyres_token_count`). `pad_color` is the square-padding colour
    of LLaVA-1.5's `pad` aspect mode; NeXT does not pad to a square, so it is None there.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: BaseImageProcessor
    kind: VLMKind
    image_token_id: int
    image_tokens_per_image: int | None
    pad_color: tuple[int, ...] | None
    template: str
    name: str
    path: Path
    dtype: torch.dtype
    device: torch.device
    attn: str
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
