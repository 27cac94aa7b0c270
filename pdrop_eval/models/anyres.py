"""How many image tokens LLaVA-NeXT gives one image: base tile, unpadded anyres grid, and one newline per row.

The model only accepts a prompt whose image-token count equals the features it computes, so this must follow
the model's packing (config grid pinpoints, CLS dropped under the "default" strategy) token for token.
"""

from __future__ import annotations

from transformers.image_processing_utils import select_best_resolution


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
    best_height, best_width = select_best_resolution((height, width), grid_pinpoints)
    side = tile_size // patch_size
    grid_height = side * (best_height // tile_size)
    grid_width = side * (best_width // tile_size)
    if width / height > grid_width / grid_height:
        scaled_height = int(round(height * (grid_width / width), 7))
        grid_height -= 2 * ((grid_height - scaled_height) // 2)
    else:
        scaled_width = int(round(width * (grid_height / height), 7))
        grid_width -= 2 * ((grid_width - scaled_width) // 2)
    base = side * side + (1 if keep_cls else 0)
    return base + grid_height * grid_width + grid_height
