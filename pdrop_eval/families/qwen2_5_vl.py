"""Qwen2.5-VL (`qwen2_5_vl`, Qwen2_5_VLForConditionalGeneration): dynamic-resolution images and M-RoPE positions.

An image is resized to multiples of 28 px within the image processor's min/max pixels, cut into 14 px patches
(two temporal copies for a still image) and merged 2×2 after the tower, so it gives (H/28)·(W/28) tokens
(REFERENCE §8). Those tokens sit between `<|vision_start|>` and `<|vision_end|>` in the chat template, and their
three M-RoPE rows come from the model's own `get_rope_index` (transformers
models/qwen2_5_vl/modeling_qwen2_5_vl.py:Qwen2_5_VLModel.get_rope_index), computed on the unpruned prompt.

Images reach the processor as lmms-eval 0.7.3 hands them over (`eval_view`): Qwen2_5_VL._encode_image_data_url
re-encodes each PIL image as JPEG at quality 85 (lmms_eval/models/model_utils/media_encoder.py:
encode_image_to_data_url, converting to RGB first), and qwen_vl_utils 0.0.14 (vision_process.py:fetch_image)
decodes that data URL, converts to RGB, and resizes with PIL's default filter (bicubic) to its `smart_resize` size:
multiples of 28 px, rounded, then floored or ceiled to fit between the min/max pixels lmms-eval passes (256·28² to
1605632). The processor then sees an image already at its final size, so its own resize does nothing and its
backend (PIL here, torchvision in many installs) no longer changes the pixels. The JPEG step is lossy: skipping it
gives other pixel values than the evaluation we follow.

The prompt is what lmms-eval 0.7.3 builds (lmms_eval/models/simple/qwen2_5_vl.py:Qwen2_5_VL.generate_until: a
system message "You are a helpful assistant.", then one user turn holding the image then the text, rendered by
Qwen2.5-VL's chat template with the generation prompt): `<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
<|im_start|>user\\n<|vision_start|><|image_pad|>…<|vision_end|>{message}<|im_end|>\\n<|im_start|>assistant\\n`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from io import BytesIO
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
from pdrop_eval.pyramid.flops import ModelShape, WindowedVisionShape, text_shape

TEMPLATE = "qwen2_vl_chat"
# lmms-eval 0.7.3 lmms_eval/models/simple/qwen2_5_vl.py:Qwen2_5_VL.__init__ defaults, passed to the processor there.
EVAL_MIN_PIXELS = 256 * 28 * 28
EVAL_MAX_PIXELS = 1605632  # 2048 · 28 · 28
EVAL_JPEG_QUALITY = 85  # Qwen2_5_VL._encode_image_data_url
MAX_ASPECT_RATIO = 200  # qwen_vl_utils and the processor refuse longer images
_SYSTEM = "You are a helpful assistant."


def eval_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) qwen_vl_utils 0.0.14 resizes an image to (vision_process.py:smart_resize): each side rounded
    to a multiple of `factor` (at least `factor`), then scaled down (floored) or up (ceiled) into the pixel bounds."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise PdropEvalError(
            f"a {width}×{height} px image is longer than Qwen2.5-VL's {MAX_ASPECT_RATIO}:1 aspect-ratio limit "
            "(qwen_vl_utils and the image processor refuse it too): crop or drop that sample"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def eval_view(image: Image.Image, factor: int, min_pixels: int, max_pixels: int) -> Image.Image:
    """The image as lmms-eval's Qwen2.5-VL path gives it to the processor: JPEG at quality 85, decoded, resized."""
    buffer = BytesIO()
    to_rgb(image).save(buffer, format="JPEG", quality=EVAL_JPEG_QUALITY)
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded.load()
    decoded = to_rgb(decoded)  # a JPEG of an RGB image decodes as RGB, as fetch_image's to_rgb then leaves it
    height, width = eval_size(decoded.height, decoded.width, factor, min_pixels, max_pixels)
    return decoded.resize((width, height), Image.Resampling.BICUBIC)


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
    # M-RoPE's height and width rows carry the image's 2-D grid; `compact` would renumber the survivors 0..n-1 on all
    # three rows, collapsing that layout into a 1-D sequence the model never saw for image tokens. `original` keeps
    # every survivor's rows exactly as the unpruned model computed them (positions.MultimodalPositions).
    default_position_mode = "original"

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
        """One token per 28×28 px cell of the size `eval_view` resizes to, from the size alone: the length buckets
        ask this of every sample, and the processor (loaded with the same pixel bounds) keeps that size as it is."""
        factor = loaded.image_processor.patch_size * loaded.image_processor.merge_size
        height, width = eval_size(image.height, image.width, factor, EVAL_MIN_PIXELS, EVAL_MAX_PIXELS)
        return (height // factor) * (width // factor)

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
        return VLMBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(loaded.dtype),
            image_sizes=grids,
            image_token_counts=counts,
            image_sizes_keyword="image_grid_thw",
            extra_inputs={"mm_token_type_ids": (input_ids == loaded.image_token_id).int()},
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

    def vision_grids(self, image_sizes: torch.Tensor | None, batch: int) -> list[tuple[int, int, int] | None]:
        """`image_sizes` is image_grid_thw: the tower's attention windows and cost follow each image's grid."""
        if image_sizes is None:
            return [None] * batch
        return [(int(t), int(h), int(w)) for t, h, w in image_sizes.tolist()]

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
        """The language model and the windowed ViT with its patch merger (the merger is the projector)."""
        vision = config.vision_config
        tower = WindowedVisionShape(
            hidden=vision.hidden_size,
            ffn=vision.intermediate_size,
            layers=vision.depth,
            patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size,
            merge=vision.spatial_merge_size,
            window_size=vision.window_size,
            full_attention_layers=tuple(vision.fullatt_block_indexes),
            out_hidden=vision.out_hidden_size,
            channels=vision.in_channels,
        )
        return ModelShape(text=text_shape(config), vision=tower)

    @staticmethod
    def _merge(model: nn.Module) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def model_view(self, loaded: LoadedVLM, image: Image.Image) -> Image.Image | None:
        """The JPEG-round-tripped image at its resized size: each image token covers a 28×28 px cell of it."""
        return self._eval_views(loaded, [image])[0]

    def token_layout(self, loaded: LoadedVLM, image: Image.Image) -> tuple[Image.Image, TokenLayout] | None:
        """The image as the model saw it (`model_view`); its tokens are the merged patches, row-major over its
        (h / 28) × (w / 28) grid (the merger's output order)."""
        view = self.model_view(loaded, image)
        factor = loaded.image_processor.patch_size * loaded.image_processor.merge_size
        return view, TokenLayout.single_grid(view.width, view.height, view.height // factor, view.width // factor)

    @staticmethod
    def _eval_views(loaded: LoadedVLM, images: Sequence[Image.Image]) -> list[Image.Image]:
        processor = loaded.image_processor
        factor = processor.patch_size * processor.merge_size
        return [eval_view(image, factor, EVAL_MIN_PIXELS, EVAL_MAX_PIXELS) for image in images]

    @classmethod
    def _grids(cls, loaded: LoadedVLM, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches of every image as lmms-eval prepares it (`eval_view`) and their (t, h, w) grids."""
        out = loaded.image_processor(images=cls._eval_views(loaded, images), return_tensors="pt")
        return out["pixel_values"], torch.as_tensor(out["image_grid_thw"], dtype=torch.long)
