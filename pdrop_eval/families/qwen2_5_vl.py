"""Qwen2.5-VL (`qwen2_5_vl`, Qwen2_5_VLForConditionalGeneration): dynamic-resolution images and M-RoPE positions.

An image is resized to multiples of 28 px within the image processor's min/max pixels, cut into 14 px patches
(two temporal copies for a still image) and merged 2×2 after the tower, so it gives (H/28)·(W/28) tokens
(REFERENCE §8). Those tokens sit between `<|vision_start|>` and `<|vision_end|>` in the chat template, and their
three M-RoPE rows come from the model's own `get_rope_index` (transformers
models/qwen2_5_vl/modeling_qwen2_5_vl.py:Qwen2_5_VLModel.get_rope_index), computed on the unpruned prompt.

The prompt is what lmms-eval 0.7.3 builds (lmms_eval/models/simple/qwen2_5_vl.py:Qwen2_5_VL.generate_until: a
system message "You are a helpful assistant.", then one user turn holding the image then the text, rendered by
Qwen2.5-VL's chat template with the generation prompt): `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
<|im_start|>user\\n<|vision_start|><|image_pad|>…<|vision_end|>{message}<|im_end|>\\n<|im_start|>assistant\\n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import (
    BaseImageProcessor,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.base import ModelFamily
from pdrop_eval.families.layout import TokenLayout
from pdrop_eval.families.positions import MultimodalPositions
from pdrop_eval.models.batch import VLMBatch, check_prompt, left_padded
from pdrop_eval.models.images import to_rgb
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.pyramid.flops import ModelShape

TEMPLATE = "qwen2_vl_chat"
# lmms-eval 0.7.3 lmms_eval/models/simple/qwen2_5_vl.py:Qwen2_5_VL.__init__ defaults, passed to the processor there.
EVAL_MIN_PIXELS = 256 * 28 * 28
EVAL_MAX_PIXELS = 1605632  # 2048 · 28 · 28
_SYSTEM = "You are a helpful assistant."


def chat_prompt(message: str, image_tokens: int) -> str:
    """One user turn holding the image (expanded to its token count) then the message, and the assistant cue."""
    image = "<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"
    return (
        f"<|im_start|>system\n{_SYSTEM}<|im_end|>\n<|im_start|>user\n{image}{message}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


class Qwen25VLFamily(ModelFamily):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    description = "Qwen2.5-VL ('qwen2_5_vl', Qwen2_5_VLForConditionalGeneration) in HF format"
    positions = MultimodalPositions()

    def load_model(self, path: Path, model_type: str, dtype: torch.dtype | str, attn: str) -> PreTrainedModel:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=attn, local_files_only=True, use_safetensors=True
        )

    def load_image_processor(self, path: Path, model_type: str) -> BaseImageProcessor:
        """The checkpoint's processor with the evaluation's pixel bounds, as lmms-eval loads it
        (`AutoProcessor.from_pretrained(pretrained, max_pixels=..., min_pixels=...)`): 256 to 2048 image tokens."""
        return Qwen2VLImageProcessorPil.from_pretrained(
            path, local_files_only=True, min_pixels=EVAL_MIN_PIXELS, max_pixels=EVAL_MAX_PIXELS
        )

    def default_template(self, config: PretrainedConfig) -> str:
        return TEMPLATE

    def image_token_count(self, loaded: LoadedVLM, image: Image.Image) -> int:
        grid = self._grids(loaded, [image])[1]
        return int(grid[0].prod()) // self._merge(loaded.model) ** 2

    def build_batch(self, loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
        if loaded.template != TEMPLATE:
            raise PdropEvalError(
                f"Qwen2.5-VL prompts use its own chat template, not {loaded.template!r}: drop the template override"
            )
        pixel_values, grids = self._grids(loaded, images)
        counts = (grids.prod(-1) // self._merge(loaded.model) ** 2).tolist()
        rows = []
        for text, count in zip(prompts, counts):
            check_prompt(text)
            rows.append(loaded.tokenizer(chat_prompt(text, count), add_special_tokens=False)["input_ids"])
        input_ids, attention_mask = left_padded(rows, loaded.pad_token_id)
        device = loaded.device
        return VLMBatch(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            pixel_values=pixel_values.to(device=device, dtype=loaded.dtype),
            image_sizes=grids.to(device),
            image_token_counts=counts,
            image_sizes_keyword="image_grid_thw",
            extra_inputs={"mm_token_type_ids": (input_ids == loaded.image_token_id).int().to(device)},
        )

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """The model's own tower and merger; `image_sizes` holds each image's (t, h, w) patch grid."""
        if image_sizes is None:
            raise PdropEvalError("Qwen2.5-VL images need their patch grids (image_grid_thw) to be encoded")
        output = model.model.get_image_features(pixel_values=pixel_values, image_grid_thw=image_sizes)
        return list(getattr(output, "pooler_output", output))

    def count_crops(self, model: nn.Module, image_sizes: torch.Tensor | None, batch: int) -> list[int]:
        """One tower pass per image (its cost grows with the image's grid, not with crops)."""
        return [1] * batch

    def embed(
        self, model: nn.Module, input_ids: torch.Tensor, image_features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image_mask = input_ids == int(model.config.image_token_id)
        embeds = model.get_input_embeddings()(input_ids)
        features = torch.cat(list(image_features), dim=0).to(embeds.device, embeds.dtype)
        if int(image_mask.sum()) != features.shape[0]:
            raise PdropEvalError(
                f"the prompts hold {int(image_mask.sum())} image tokens but the images give {features.shape[0]} "
                "features: build inputs with pdrop_eval.models.build_batch"
            )
        return embeds.masked_scatter(image_mask[..., None], features), image_mask

    def prompt_positions(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_sizes: torch.Tensor | None,
    ) -> torch.Tensor:
        """[3, B, L] M-RoPE rows from the model's `get_rope_index` (padding gets 0, as there).

        The rows must come from the unpruned prompt, so a prompt whose image span a before-the-LLM method shortened
        is refused until its survivors' rows are gathered from the full grid (issue 12)."""
        image_tokens = (input_ids == int(model.config.image_token_id)) & attention_mask.bool()
        if image_sizes is None:
            raise PdropEvalError("Qwen2.5-VL positions need each image's patch grid: pass image_sizes to generate")
        expected = (image_sizes.prod(-1) // self._merge(model) ** 2).tolist()
        if image_tokens.sum(-1).tolist() != expected:
            raise PdropEvalError(
                "Qwen2.5-VL does not yet support methods that shorten the image before the LLM (its M-RoPE "
                "positions must come from the full image grid): use a method that drops inside the LLM"
            )
        positions, _ = model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=image_tokens.int(),
            image_grid_thw=image_sizes,
            attention_mask=attention_mask,
        )
        return positions

    def model_shape(self, config: PretrainedConfig) -> ModelShape:
        raise PdropEvalError("FLOPs shapes for Qwen2.5-VL's tower are not defined yet (issue 12 item 6)")

    @staticmethod
    def _merge(model: nn.Module) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def token_layout(self, loaded: LoadedVLM, image: Image.Image) -> tuple[Image.Image, TokenLayout] | None:
        """The image at the processor's resized size; its tokens are the merged patches, row-major over the
        (h / merge) × (w / merge) grid (the merger's output order)."""
        _, height, width = self._grids(loaded, [image])[1][0].tolist()
        merge, patch = self._merge(loaded.model), loaded.model.config.vision_config.patch_size
        view = to_rgb(image).resize((width * patch, height * patch))
        return view, TokenLayout.single_grid(view.width, view.height, height // merge, width // merge)

    @staticmethod
    def _grids(loaded: LoadedVLM, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches of every image (resized within the processor's min/max pixels) and their (t, h, w) grids."""
        out = loaded.image_processor(images=[to_rgb(image) for image in images], return_tensors="pt")
        return out["pixel_values"], torch.as_tensor(out["image_grid_thw"], dtype=torch.long)
