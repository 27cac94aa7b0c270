"""LLaVA-OneVision (`llava_onevision`, LlavaOnevisionForConditionalGeneration): SigLIP tiles, anyres_max_9, Qwen2.

An image becomes a base view (the whole image resized to the tower's 384 px) plus tiles of the best grid pinpoint,
each run through a SigLIP tower that has no CLS token (every one of its 27 × 27 patch outputs is a feature:
`vision_feature_select_strategy = "full"`, `vision_feature_layer = -1`, no pooling head). The tiles' features are
unpadded, bilinearly downsized when they exceed nine tiles' worth by more than 1.1× per side (`anyres_max_9`), and
given a learned newline token after every row; the base view's features come first. The model's own
`LlavaOnevisionModel.pack_image_features` does all of that, and `image_token_count` runs it on zero features of
width 1, so the prompt's placeholder count is by construction what the model packs (transformers
models/llava_onevision/modeling_llava_onevision.py). The decoder is Qwen2 with 1-D RoPE (`LinearPositions`), and
newline tokens are image tokens like any other: in-LLM methods may drop them, as on LLaVA-NeXT.

The prompt follows lmms-eval 0.7.3's `llava_onevision` model (lmms_eval/models/simple/llava_onevision.py:
Llava_OneVision.generate_until, `conv_template="qwen_1_5"`): the question becomes `"<image>\\n" + context` (the
image token is not already in the context), goes into a copy of LLaVA-NeXT's `conv_templates["qwen_1_5"]`
(LLaVA-VL/LLaVA-NeXT@19ddd2e llava/conversation.py:conv_qwen, SeparatorStyle.CHATML) as the user turn with an
empty assistant turn, and `get_prompt()` renders

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n{message}<|im_end|>\\n
    <|im_start|>assistant\\n

(one string; the line break above is for reading). `tokenizer_image_token` then tokenises the text on either side
of `<image>` on its own and puts the image between them (`tokenize_with_images`: no BOS, Qwen2 has none). The
same string is what transformers' conversion script checks the llava-hf checkpoints against.

SigLIP has no CLS token, so methods that rank patches by the tower's CLS attention (VisionZip) refuse this family
(`ModelGeometry.cls_token`): VisionZip's code supports only CLIP towers, and we found no agreed substitute to use in
its place. Kept-token maps (`token_layout`) draw the base view beside the tiles: the base tokens on its 27 × 27 grid, the
tile tokens on the unpadded part of the stitched tiles, cut into the grid the model packs there (coarser than the
patches once anyres_max_9 has downsized it), newline tokens nowhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import (
    BaseImageProcessor,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.llava_onevision.modeling_llava_onevision import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
)

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.base import ModelFamily
from pdrop_eval.families.layout import Tile, TokenLayout
from pdrop_eval.families.llava import LlavaFamily, tiled_view
from pdrop_eval.models.batch import VLMBatch, check_prompt, left_padded
from pdrop_eval.models.images import preprocess_anyres, to_rgb
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.prompts import IMAGE_PLACEHOLDER, tokenize_with_images
from pdrop_eval.pyramid.flops import ModelShape

TEMPLATE = "qwen_1_5"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant."  # conv_qwen.system
ROLES = ("<|im_start|>user", "<|im_start|>assistant")  # conv_qwen.roles
SEPARATOR = "<|im_end|>"  # conv_qwen.sep


def chat_prompt(message: str) -> str:
    """conv_qwen's CHATML rendering of one user turn `<image>\\n{message}` and an empty assistant turn."""
    user, assistant = ROLES
    turn = f"{IMAGE_PLACEHOLDER}\n{message}"
    return f"{SYSTEM}{SEPARATOR}\n{user}\n{turn}{SEPARATOR}\n{assistant}\n"


class LlavaOnevisionFamily(ModelFamily):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    description = "LLaVA-OneVision ('llava_onevision', LlavaOnevisionForConditionalGeneration) in HF format"
    anyres_kinds = ("llava_onevision",)
    vision_cls_token = False

    def load_model(self, path: Path, model_type: str, dtype: torch.dtype | str, attn: str) -> PreTrainedModel:
        return LlavaOnevisionForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=attn, local_files_only=True, use_safetensors=True
        )

    def load_image_processor(self, path: Path, model_type: str) -> BaseImageProcessor:
        return LlavaOnevisionImageProcessorPil.from_pretrained(path, local_files_only=True)

    def default_template(self, config: PretrainedConfig) -> str:
        return TEMPLATE

    def token_layout(self, loaded: LoadedVLM, image: Image.Image) -> tuple[Image.Image, TokenLayout] | None:
        """The base view beside the tiles (as LLaVA-NeXT's maps draw them); the tile tokens cut the unpadded part of
        the stitched tiles into the grid the model packs there, read from the model's own packing: once without
        downsizing for the unpadded rows and columns, once as configured for the grid's shape."""
        model = loaded.model
        vision = model.config.vision_config
        tile, side = vision.image_size, vision.image_size // vision.patch_size
        image = to_rgb(image)
        rows, columns = get_anyres_image_grid_shape(
            (image.height, image.width), model.config.image_grid_pinpoints, tile
        )
        view, left = tiled_view(image, tile, rows, columns)
        unpadded = _packed_coordinates(model, image.height, image.width, "anyres_max_1000000")
        unpadded = unpadded[unpadded[:, 0] >= 0]
        packed = _packed_coordinates(model, image.height, image.width, model.config.vision_aspect_ratio)
        grid_rows = int((packed[:, 0] == -1).sum())
        grid_columns = packed.shape[0] // grid_rows - 1
        pixel = tile / side
        top, first = (int(value) for value in unpadded.amin(0))
        bottom, last = (int(value) + 1 for value in unpadded.amax(0))
        box = (left + round(first * pixel), round(top * pixel), left + round(last * pixel), round(bottom * pixel))
        tokens: list[tuple[int, int] | None] = [(0, cell) for cell in range(side * side)]
        for row in range(grid_rows):
            tokens += [(1, row * grid_columns + column) for column in range(grid_columns)] + [None]
        tiles = (Tile((0, 0, tile, tile), side, side), Tile(box, grid_rows, grid_columns))
        return view, TokenLayout(tiles=tiles, tokens=tuple(tokens))

    def image_token_count(self, loaded: LoadedVLM, image: Image.Image) -> int:
        width, height = image.size
        return packed_length(loaded.model, height, width)

    def build_batch(self, loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
        if loaded.template != TEMPLATE:
            raise PdropEvalError(
                f"LLaVA-OneVision prompts use lmms-eval's {TEMPLATE} conversation, not {loaded.template!r}: "
                "drop the template override"
            )
        images = [to_rgb(image) for image in images]
        counts = [self.image_token_count(loaded, image) for image in images]
        rows = []
        for text, count in zip(prompts, counts):
            check_prompt(text)
            rows.append(tokenize_with_images(loaded.tokenizer, chat_prompt(text), loaded.image_token_id, [count]))
        input_ids, attention_mask = left_padded(rows, loaded.pad_token_id)
        pixel_values, image_sizes = preprocess_anyres(images, loaded.image_processor)
        return VLMBatch(
            input_ids=input_ids.to(loaded.device),
            attention_mask=attention_mask.to(loaded.device),
            pixel_values=pixel_values.to(device=loaded.device, dtype=loaded.dtype),
            image_sizes=image_sizes.to(loaded.device),
            image_token_counts=counts,
        )

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """The model's own tower, projector and packing (tiles unpadded, downsized, newline per row)."""
        if image_sizes is None:
            raise PdropEvalError("LLaVA-OneVision images need their sizes (image_sizes) to be tiled and packed")
        config = model.config
        output = model.model.get_image_features(
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            vision_aspect_ratio=config.vision_aspect_ratio,
        )
        return list(getattr(output, "pooler_output", output))

    def count_crops(self, model: nn.Module, image_sizes: torch.Tensor | None, batch: int) -> list[int]:
        """The base view plus the best pinpoint's tiles, each a full tower pass."""
        if image_sizes is None:
            raise PdropEvalError("LLaVA-OneVision crop counts need each image's size (image_sizes)")
        config = model.config
        tile = config.vision_config.image_size
        return [
            int(image_size_to_num_patches(size, config.image_grid_pinpoints, tile)) for size in image_sizes.tolist()
        ]

    embed = LlavaFamily.embed  # the same placeholder scatter as LLaVA's forward

    def model_shape(self, config: PretrainedConfig) -> ModelShape:
        """SigLIP runs on the patches alone (no CLS row) in every layer of every crop; the projector maps every
        crop's patches before packing (newline tokens are a learned vector, not projected); then Qwen2."""
        shape = ModelShape.from_config(config)
        return dataclasses.replace(shape, vision=dataclasses.replace(shape.vision, cls_token=False))


@torch.no_grad()
def _packed_coordinates(model: nn.Module, height: int, width: int, aspect_ratio: str) -> torch.Tensor:
    """[tokens, 2]: each packed tile token's (row, column) in the stitched tile grid, (-1, -1) for a newline, from
    the model's own `pack_image_features` run on features that hold their coordinates (bilinear downsizing blends
    them, so only their count per row is read after it)."""
    config = model.config
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    rows, columns = get_anyres_image_grid_shape((height, width), config.image_grid_pinpoints, vision.image_size)
    stitched = torch.stack(
        torch.meshgrid(torch.arange(rows * side), torch.arange(columns * side), indexing="ij"), dim=-1
    ).float()
    tiles = stitched.view(rows, side, columns, side, 2).permute(0, 2, 1, 3, 4).reshape(rows * columns, side * side, 2)
    features = torch.cat([torch.zeros(1, side * side, 2), tiles])
    packed, _ = model.model.pack_image_features(
        [features],
        torch.tensor([[height, width]]),
        image_newline=torch.full((2,), -1.0),
        vision_aspect_ratio=aspect_ratio,
    )
    return packed[0][side * side :]


def packed_length(model: nn.Module, height: int, width: int) -> int:
    """Image tokens the model packs for an image of `height` × `width` px: its `pack_image_features` run on zero
    features of width 1 (the crop count and tile grid come from the config's pinpoints, as in `get_image_features`),
    so unpadding, anyres_max downsizing and newlines are the model's own."""
    config = model.config
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    crops = int(image_size_to_num_patches((height, width), config.image_grid_pinpoints, vision.image_size))
    zeros = torch.zeros(crops, side * side, 1)
    packed, _ = model.model.pack_image_features(
        [zeros],
        torch.tensor([[height, width]]),
        image_newline=torch.zeros(1),
        vision_aspect_ratio=config.vision_aspect_ratio,
    )
    return int(packed[0].shape[0])
