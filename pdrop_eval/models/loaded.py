"""The value `load_vlm` returns: a model plus everything needed to build its inputs and read its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import BaseImageProcessor, PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from pdrop_eval.families.base import ModelFamily


@dataclass
class LoadedVLM:
    """A loaded VLM, its family (which builds its inputs and numbers its tokens) and its preprocessing facts.

    `kind` is the checkpoint's HF model_type ("llava", "llava_next", ...), which the family may branch on.

    `image_tokens_per_image` is fixed for LLaVA-1.5 (576 at 336 px / patch 14) and None for LLaVA-NeXT, whose
    count depends on each image's size (see `anyres.anyres_token_count`). `pad_color` is the square-padding colour
    of LLaVA-1.5's `pad` aspect mode; NeXT does not pad to a square, so it is None there.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: BaseImageProcessor
    family: ModelFamily
    kind: str
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
