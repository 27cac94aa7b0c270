"""How many image tokens LLaVA-NeXT gives one image, and where each lies: base tile, unpadded anyres grid, and one
newline per row.

The model only accepts a prompt whose image-token count equals the features it computes, so this must follow
the model's packing (config grid pinpoints, CLS dropped under the "default" strategy) token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers.image_processing_utils import select_best_resolution


@dataclass(frozen=True)
class AnyresGrid:
    """One image's tiles and the part of their stitched patch grid that survives unpadding."""

    side: int  # patches per tile side
    tile_rows: int
    tile_columns: int
    kept_rows: range  # rows of the stitched (tile_rows·side) × (tile_columns·side) grid that are kept
    kept_columns: range


def anyres_grid(height: int, width: int, *, tile_size: int, patch_size: int, grid_pinpoints: list[list[int]]):
    """The tiles of an image of `height` x `width` pixels and what transformers' `unpad_image` keeps of them."""
    best_height, best_width = select_best_resolution((height, width), grid_pinpoints)
    side = tile_size // patch_size
    tile_rows, tile_columns = best_height // tile_size, best_width // tile_size
    grid_height, grid_width = side * tile_rows, side * tile_columns
    kept_rows, kept_columns = range(grid_height), range(grid_width)
    if width / height > grid_width / grid_height:
        scaled_height = int(round(height * (grid_width / width), 7))
        pad = (grid_height - scaled_height) // 2
        kept_rows = range(pad, grid_height - pad)
    else:
        scaled_width = int(round(width * (grid_height / height), 7))
        pad = (grid_width - scaled_width) // 2
        kept_columns = range(pad, grid_width - pad)
    return AnyresGrid(side, tile_rows, tile_columns, kept_rows, kept_columns)


def anyres_token_count(
    height: int,
    width: int,
    *,
    tile_size: int,
    patch_size: int,
    grid_pinpoints: list[list[int]],
    keep_cls: bool,
) -> int:
    """Image tokens for an image of `height` x `width` pixels (its original size, before any resizing)."""
    grid = anyres_grid(height, width, tile_size=tile_size, patch_size=patch_size, grid_pinpoints=grid_pinpoints)
    base = grid.side * grid.side + (1 if keep_cls else 0)
    rows, columns = len(grid.kept_rows), len(grid.kept_columns)
    return base + rows * columns + rows
