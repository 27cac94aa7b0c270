"""The one interface every model family implements, so loading, batching, the engine, FLOPs and reports never name
an architecture.

A family is what differs between VLMs on either side of the engine's layer loop (issue 12): how a checkpoint loads,
how a batch is built as the family's official evaluation builds it, how images become projected features and how
those enter the prompt, the position scheme (positions of a prompt, how they follow a drop, how decoding continues,
the rotary rule ranking must use), the FLOPs shapes, and the image as the model saw it with where each token lies
on it, for kept-token maps (`token_layout`). It meets the pruning-method interface (pdrop_eval.methods.base) in the engine: the family numbers
the tokens and rotates them, the method chooses which survive; neither names the other.

Families are stateless singletons (registry.py); everything about one loaded checkpoint lives on `LoadedVLM`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from PIL import Image
from torch import nn
from transformers import BaseImageProcessor, PretrainedConfig, PreTrainedModel

from pdrop_eval.families.layout import TokenLayout
from pdrop_eval.families.positions import LinearPositions

if TYPE_CHECKING:
    from pdrop_eval.models.batch import VLMBatch
    from pdrop_eval.models.loaded import LoadedVLM
    from pdrop_eval.pyramid.flops import ModelShape


class ModelFamily:
    """Base of every family; each method says what the engine and runner need from a family."""

    name: ClassVar[str]  # the registry key
    model_types: ClassVar[tuple[str, ...]]  # HF `config.json` model_type values this family loads
    description: ClassVar[str]  # how the "unsupported model" error lists it
    positions: ClassVar[LinearPositions] = LinearPositions()
    anyres_kinds: ClassVar[tuple[str, ...]] = ()  # model_types whose images are tiled (methods needing one grid refuse)
    vision_cls_token: ClassVar[bool] = True  # whether the tower has a CLS token (CLS-attention rankers need one)
    # What `--position-mode auto` resolves to: the rule for survivors' positions that fits the family's RoPE.
    default_position_mode: ClassVar[str] = "compact"

    def claims(self, raw_config: dict) -> bool:
        """Whether a model directory's raw `config.json` is one of this family's checkpoints."""
        return raw_config.get("model_type") in self.model_types

    def hf_format_dir(self, path: Path, raw_config: dict, vision_tower: str | None) -> Path:
        """The HF-format directory to load for `path` (a family may convert another checkpoint format first)."""
        return path

    def load_model(self, path: Path, model_type: str, dtype: torch.dtype | str, attn: str) -> PreTrainedModel:
        """The model from safetensors only, offline, without remote code."""
        raise NotImplementedError

    def load_image_processor(self, path: Path, model_type: str) -> BaseImageProcessor:
        raise NotImplementedError

    def default_template(self, config: PretrainedConfig) -> str:
        """The prompt template (pdrop_eval.models.prompts) the family's evaluation uses for this language model."""
        raise NotImplementedError

    def fixed_image_tokens(self, model_type: str, config: PretrainedConfig) -> int | None:
        """Image tokens per image when they do not depend on the image's size, else None."""
        return None

    def pad_color(self, model_type: str, image_processor: BaseImageProcessor) -> tuple[int, ...] | None:
        """The colour images are padded to a square with, for families that pad; None otherwise."""
        return None

    def image_token_count(self, loaded: LoadedVLM, image: Image.Image) -> int:
        """Image tokens the model produces for `image` (an RGB PIL image at its original size)."""
        raise NotImplementedError

    def build_batch(self, loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
        """Model inputs for one image per bare user message, as the family's official evaluation builds them: host
        (CPU) tensors, pixels in the model's dtype; callers move them (`VLMBatch.to`). Runs in data-worker threads
        (pdrop_eval.pipeline), so it must not change shared state (the tokenizer's truncation or padding settings)."""
        raise NotImplementedError

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """Projected features per image ([N_i, d] each), what a method's `reduce_features` receives."""
        raise NotImplementedError

    def count_crops(self, model: nn.Module, image_sizes: torch.Tensor | None, batch: int) -> list[int]:
        """Vision-tower passes per image, for FLOPs (features may be reused, the count must not be)."""
        raise NotImplementedError

    def vision_grids(self, image_sizes: torch.Tensor | None, batch: int) -> list[tuple[int, int, int] | None]:
        """Per image the (t, h, w) patch grid the tower ran on, for towers whose FLOPs follow it; None otherwise."""
        return [None] * batch

    def embed(
        self, model: nn.Module, input_ids: torch.Tensor, image_features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings with the image features in place of their placeholder tokens, and the image mask."""
        raise NotImplementedError

    def prompt_positions(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_sizes: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """The prompt's rotary positions where they need more than the mask (M-RoPE's image grids); None lets the
        engine take the scheme's `prompt(valid)`."""
        return None

    def model_shape(self, config: PretrainedConfig) -> ModelShape:
        """The FLOPs shapes (language model, vision tower, projector) of a config of this family."""
        raise NotImplementedError

    def model_view(self, loaded: LoadedVLM, image: Image.Image) -> Image.Image | None:
        """The image as the tower saw it, for kept-token maps; None where no single view maps to the tokens."""
        return None

    def image_grid(self, loaded: LoadedVLM) -> tuple[int, int] | None:
        """(rows, columns) of the patch grid the image tokens fill row-major, when it is the same for every image."""
        return None

    def token_layout(self, loaded: LoadedVLM, image: Image.Image) -> tuple[Image.Image, TokenLayout] | None:
        """The picture a kept-token map draws for `image` and where each of its tokens lies on it: by default the
        `model_view` cut by the fixed `image_grid`; None where the family gives neither."""
        view = self.model_view(loaded, image)
        grid = self.image_grid(loaded)
        if view is None or grid is None:
            return None
        return view, TokenLayout.single_grid(view.width, view.height, *grid)
