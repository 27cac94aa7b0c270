"""Image preprocessing exactly as LLaVA-1.5's evaluation does it, plus LLaVA-NeXT's anyres path.

LLaVA-1.5 (`image_aspect_ratio = pad`) pads to a square with the processor's mean colour, truncated to ints,
pastes the original centred, then runs the PIL CLIP pipeline. The PIL image-processor classes are used on
purpose: transformers' torchvision processors differ by 1-2 pixel levels, and transformers 5.17's
AutoImageProcessor refuses to work at all without torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import BaseImageProcessor


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette and RGBA inputs all become RGB (LLaVA's `.convert('RGB')`)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def mean_color(image_mean: Sequence[float]) -> tuple[int, ...]:
    """The pad colour LLaVA uses: `int(255 * mean)` per channel, truncated, e.g. (122, 116, 104) for CLIP."""
    return tuple(int(255 * m) for m in image_mean)


def expand_to_square(image: Image.Image, color: tuple[int, ...]) -> Image.Image:
    """Pad the short side with `color`, original centred with LLaVA's floor offsets ((long - short) // 2)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), color)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def preprocess_padded(images: Sequence[Image.Image], processor: BaseImageProcessor) -> torch.Tensor:
    """LLaVA-1.5 `pad` preprocessing: [B, 3, H, W] float32."""
    color = mean_color(processor.image_mean)
    squares = [expand_to_square(to_rgb(image), color) for image in images]
    return processor(images=squares, return_tensors="pt")["pixel_values"]


def preprocess_anyres(
    images: Sequence[Image.Image], processor: BaseImageProcessor
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaVA-NeXT anyres tiles: pixel_values [B, tiles, 3, H, W] (padded to the most tiles) and image_sizes [B, 2]."""
    out = processor(images=[to_rgb(image) for image in images], return_tensors="pt", do_pad=True)
    return out["pixel_values"], torch.as_tensor(out["image_sizes"], dtype=torch.long)
