"""LLaVA-NeXT's crops as a method that works per crop needs them: the tower's projected grid of each crop before
the model packs them, and the model's own packing redone at any grid size.

LLaVA-NeXT (transformers `LlavaNextModel.get_image_features` and `pack_image_features`) runs the tower on the base
view and every anyres tile, projects each crop's S×S patch grid, then packs one image as: the base grid row-major;
the tiles stitched into one (rows·S)×(columns·S) grid (tiles row-major), unpadded to the image's aspect ratio
(`unpad_image`), with the `image_newline` token after every row. Downsampling pools each crop's grid first, and the
pooled G×G crops are packed by the same rule at G (what NeXT would give if its tower made G×G grids); VisionZip's
official NeXT path arranges its crops differently and does its own arrangement (pdrop_eval.methods.visionzip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)

from pdrop_eval.errors import PdropEvalError


@dataclass(frozen=True)
class TiledImage:
    """One image's crops as the tower takes them: the base view first, then the tiles row-major."""

    crops: torch.Tensor  # [1 + rows · columns, 3, H, W]
    rows: int
    columns: int
    size: torch.Tensor  # (height, width) of the original image, as LLaVA-NeXT's `image_sizes` holds it


def is_anyres(model: nn.Module) -> bool:
    """Whether the model packs anyres tiles the LLaVA-NeXT way."""
    return getattr(model.config, "model_type", None) == "llava_next"


def split_crops(model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None) -> list[TiledImage]:
    """Each image's crops out of the processor's [B, max_crops, 3, H, W] (padded with empty crops) and its grid."""
    if image_sizes is None or pixel_values.dim() != 5:
        raise PdropEvalError(
            "LLaVA-NeXT inputs need pixel_values per crop and image_sizes: build them with build_batch"
        )
    config = model.config
    tile = config.vision_config.image_size
    tiled = []
    for pixels, size in zip(pixel_values, image_sizes):
        count = image_size_to_num_patches(size, config.image_grid_pinpoints, tile)
        rows, columns = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, tile)
        tiled.append(TiledImage(crops=pixels[:count], rows=int(rows), columns=int(columns), size=size))
    return tiled


def project_crops(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """[n, S·S, d]: each crop's projected patches, as `get_image_features` computes them before packing."""
    config = model.config
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise PdropEvalError(
            f"vision_feature_layer {layer!r} concatenates several tower layers; per-crop methods read one layer"
        )
    hidden = model.model.vision_tower(crops, output_hidden_states=True).hidden_states[layer]
    if config.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]
    return model.model.multi_modal_projector(hidden)


def crop_grid(features: torch.Tensor) -> int:
    """The side S of a crop's square grid of S·S tokens."""
    side = round(features.shape[-2] ** 0.5)
    if side * side != features.shape[-2]:
        raise PdropEvalError(
            f"a LLaVA-NeXT crop gave {features.shape[-2]} features, not a square grid: its tower keeps a CLS token "
            "(vision_feature_select_strategy 'full'), which per-crop methods cannot place"
        )
    return side


def pack_crops(model: nn.Module, crops: torch.Tensor, image: TiledImage) -> torch.Tensor:
    """[N, d]: one image's crop grids [1 + rows·columns, G·G, d] packed as LLaVA-NeXT packs its S×S grids."""
    side = crop_grid(crops)
    base, tiles = crops[0], crops[1:]
    width = tiles.shape[-1]
    grid = tiles.view(image.rows, image.columns, side, side, width).permute(4, 0, 2, 1, 3)
    grid = unpad_image(grid.reshape(width, image.rows * side, image.columns * side), image.size)
    newline = model.model.image_newline.to(grid.device, grid.dtype)[:, None, None].expand(*grid.shape[:-1], 1)
    grid = torch.cat((grid, newline), dim=-1)
    return torch.cat((base, grid.flatten(1, 2).T))
