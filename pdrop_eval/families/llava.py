"""LLaVA-1.5 (`llava`, LlavaForConditionalGeneration) and LLaVA-NeXT (`llava_next`, anyres tiles) as one family.

Both put a CLIP tower's projected patches (CLS dropped under the "default" feature strategy) into a 1-D RoPE
decoder (Vicuna, Mistral, Qwen2), so they share positions and rotary rule (`LinearPositions`) and differ only in
preprocessing: LLaVA-1.5 pads to a square with the mean colour (LLaVA `model/mm_utils.py:process_images`, aspect
`pad`), NeXT tiles the image on the best grid pinpoint and adds a newline token per row. Checkpoints in the
original LLaVA repository format are converted to HF format on the way in (pdrop_eval.models.original).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import (
    BaseImageProcessor,
    CLIPImageProcessorPil,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.base import ModelFamily
from pdrop_eval.families.layout import Tile, TokenLayout
from pdrop_eval.models.anyres import anyres_grid, anyres_token_count
from pdrop_eval.models.batch import VLMBatch, check_prompt, left_padded
from pdrop_eval.models.converted_cache import hf_format_dir
from pdrop_eval.models.images import expand_to_square, mean_color, preprocess_anyres, preprocess_padded, to_rgb
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.original import is_original_llava_config
from pdrop_eval.models.prompts import format_prompt, tokenize_with_images
from pdrop_eval.pyramid.flops import ModelShape

_MODEL_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
_IMAGE_PROCESSORS = {"llava": CLIPImageProcessorPil, "llava_next": LlavaNextImageProcessorPil}


def tiled_view(image: Image.Image, tile: int, tile_rows: int, tile_columns: int) -> tuple[Image.Image, int]:
    """The base view (the image squashed to one tile) beside the anyres tiles (the image fitted into the
    tile_rows × tile_columns pinpoint and centred on black, as the processor's resize-for-patching and pad do), and
    the x offset where the tiles start."""
    best_width, best_height = tile_columns * tile, tile_rows * tile
    scale = min(best_width / image.width, best_height / image.height)
    fit = (min(best_width, math.ceil(image.width * scale)), min(best_height, math.ceil(image.height * scale)))
    tiles_view = Image.new("RGB", (best_width, best_height))
    tiles_view.paste(image.resize(fit), ((best_width - fit[0]) // 2, (best_height - fit[1]) // 2))
    left = tile + max(1, tile // 8)
    view = Image.new("RGB", (left + best_width, max(tile, best_height)), (255, 255, 255))
    view.paste(image.resize((tile, tile)), (0, 0))
    view.paste(tiles_view, (left, 0))
    return view, left


class LlavaFamily(ModelFamily):
    name = "llava"
    model_types = tuple(_MODEL_CLASSES)
    description = (
        "LLaVA-1.5 ('llava', LlavaForConditionalGeneration) and LLaVA-NeXT ('llava_next', "
        "LlavaNextForConditionalGeneration) in HF format, or original LLaVA checkpoints"
    )
    anyres_kinds = ("llava_next",)

    def claims(self, raw_config: dict) -> bool:
        return super().claims(raw_config) or is_original_llava_config(raw_config)

    def hf_format_dir(self, path: Path, raw_config: dict, vision_tower: str | None) -> Path:
        if is_original_llava_config(raw_config):
            return hf_format_dir(path, raw_config, vision_tower)
        return path

    def load_model(self, path: Path, model_type: str, dtype: torch.dtype | str, attn: str) -> PreTrainedModel:
        return _MODEL_CLASSES[model_type].from_pretrained(
            path, dtype=dtype, attn_implementation=attn, local_files_only=True, use_safetensors=True
        )

    def load_image_processor(self, path: Path, model_type: str) -> BaseImageProcessor:
        return _IMAGE_PROCESSORS[model_type].from_pretrained(path, local_files_only=True)

    def default_template(self, config: PretrainedConfig) -> str:
        return "mistral_instruct" if config.text_config.model_type == "mistral" else "vicuna_v1"

    def fixed_image_tokens(self, model_type: str, config: PretrainedConfig) -> int | None:
        """Patches per image, plus the CLS token when the "full" feature strategy keeps it (576 for LLaVA-1.5)."""
        if model_type != "llava":
            return None
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        return patches + (1 if config.vision_feature_select_strategy == "full" else 0)

    def pad_color(self, model_type: str, image_processor: BaseImageProcessor) -> tuple[int, ...] | None:
        """LLaVA-1.5's `pad` aspect mode pads with the mean colour; NeXT tiles instead of padding."""
        return mean_color(image_processor.image_mean) if model_type == "llava" else None

    def image_token_count(self, loaded: LoadedVLM, image: Image.Image) -> int:
        """Fixed for LLaVA-1.5, size-dependent for NeXT."""
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

    def build_batch(self, loaded: LoadedVLM, prompts: Sequence[str], images: Sequence[Image.Image]) -> VLMBatch:
        """LLaVA's `model_vqa_loader.py`: the conversation template around `<image>\\n` + message, the prompt split
        at `<image>` and each chunk tokenised alone, the image span expanded to the image's token count."""
        images = [to_rgb(image) for image in images]
        counts = [self.image_token_count(loaded, image) for image in images]
        rows = []
        for text, count in zip(prompts, counts):
            check_prompt(text)
            prompt = format_prompt(loaded.template, text)
            rows.append(tokenize_with_images(loaded.tokenizer, prompt, loaded.image_token_id, [count]))
        input_ids, attention_mask = left_padded(rows, loaded.pad_token_id)
        if loaded.kind == "llava_next":
            pixel_values, image_sizes = preprocess_anyres(images, loaded.image_processor)
        else:
            pixel_values, image_sizes = preprocess_padded(images, loaded.image_processor), None
        return VLMBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(loaded.dtype),
            image_sizes=image_sizes,
            image_token_counts=counts,
        )

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """The model's own `get_image_features` (tower layer and CLS strategy from its config; NeXT unpads and
        packs its tiles there): [N_i, d] per image."""
        config = model.config
        kwargs = {
            "pixel_values": pixel_values,
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
        }
        if image_sizes is not None:
            kwargs["image_sizes"] = image_sizes
        output = model.model.get_image_features(**kwargs)
        features = getattr(output, "pooler_output", output)
        if isinstance(features, torch.Tensor) and features.dim() == 2:
            return [features]
        return list(features)

    def count_crops(self, model: nn.Module, image_sizes: torch.Tensor | None, batch: int) -> list[int]:
        """One for LLaVA-1.5; the base view plus anyres tiles for LLaVA-NeXT."""
        if image_sizes is None:
            return [1] * batch
        config = model.config
        return [
            int(image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size))
            for size in image_sizes.tolist()
        ]

    def embed(
        self, model: nn.Module, input_ids: torch.Tensor, image_features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The features written over the placeholder tokens in order, as the HF model's `forward` does."""
        image_mask = input_ids == int(model.config.image_token_id)
        embeds = model.get_input_embeddings()(input_ids)
        features = torch.cat(list(image_features), dim=0).to(embeds.device, embeds.dtype)
        placeholders = int(image_mask.sum())
        if placeholders != features.shape[0]:
            raise PdropEvalError(
                f"the prompts hold {placeholders} image placeholder tokens but the images give {features.shape[0]} "
                "features: build inputs with pdrop_eval.models (one <image> per prompt, expanded to the image's count)"
            )
        return embeds.masked_scatter(image_mask[..., None], features), image_mask

    def model_shape(self, config: PretrainedConfig) -> ModelShape:
        """CLIP tower with its CLS token, two-layer projector, the language model (pdrop_eval.pyramid.flops)."""
        return ModelShape.from_config(config)

    def model_view(self, loaded: LoadedVLM, image: Image.Image) -> Image.Image | None:
        """LLaVA-1.5: the padded square at the tower's size; NeXT's tiles have no single view."""
        if loaded.pad_color is None:
            return None
        size = loaded.model.config.vision_config.image_size
        return expand_to_square(to_rgb(image), loaded.pad_color).resize((size, size))

    def token_layout(self, loaded: LoadedVLM, image: Image.Image) -> tuple[Image.Image, TokenLayout] | None:
        """LLaVA-1.5: the padded square and its patch grid. NeXT: the base view (the image squashed to one tile)
        beside the anyres tiles (the image fitted into the best pinpoint and centred on black, as the processor's
        resize-for-patching and pad do), each tile its own S×S grid; tokens: the base grid, then the stitched tile
        grid row by row within what unpadding keeps, a newline token (no cell) after each row."""
        if loaded.kind != "llava_next":
            return super().token_layout(loaded, image)
        config = loaded.model.config
        if config.vision_feature_select_strategy == "full":
            return None  # each crop's CLS token has no cell to draw
        tile = config.vision_config.image_size
        image = to_rgb(image)
        grid = anyres_grid(
            image.height,
            image.width,
            tile_size=tile,
            patch_size=config.vision_config.patch_size,
            grid_pinpoints=config.image_grid_pinpoints,
        )
        side, columns = grid.side, grid.tile_columns
        view, left = tiled_view(image, tile, grid.tile_rows, columns)
        tiles = [Tile((0, 0, tile, tile), side, side)] + [
            Tile((left + c * tile, r * tile, left + (c + 1) * tile, (r + 1) * tile), side, side)
            for r in range(grid.tile_rows)
            for c in range(columns)
        ]
        tokens: list[tuple[int, int] | None] = [(0, cell) for cell in range(side * side)]
        for row in grid.kept_rows:
            tokens += [(1 + row // side * columns + c // side, row % side * side + c % side) for c in grid.kept_columns]
            tokens.append(None)
        return view, TokenLayout(tiles=tuple(tiles), tokens=tuple(tokens))

    def image_grid(self, loaded: LoadedVLM) -> tuple[int, int] | None:
        """LLaVA-1.5's square patch grid (24×24 at 336/14) when the tokens are exactly its patches."""
        if loaded.image_tokens_per_image is None:
            return None
        vision = loaded.model.config.vision_config
        side = vision.image_size // vision.patch_size
        return (side, side) if side * side == loaded.image_tokens_per_image else None
