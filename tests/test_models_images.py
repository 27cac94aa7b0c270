"""LLaVA-1.5 image preprocessing: RGB always, pad to square with the truncated mean colour, PIL CLIP pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pdrop_eval.models.images import expand_to_square, mean_color, preprocess_padded, to_rgb
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def test_pad_colour_truncates():
    assert mean_color(CLIP_MEAN) == (122, 116, 104)


@pytest.mark.parametrize(("size", "offset"), [((200, 101), (0, 49)), ((37, 100), (31, 0))])
def test_pad_to_square_centres_the_original(size, offset):
    image = Image.new("RGB", size, (255, 0, 0))
    square = np.asarray(expand_to_square(image, (122, 116, 104)))
    side = max(size)
    assert square.shape == (side, side, 3)
    x, y = offset
    assert (square[y : y + size[1], x : x + size[0]] == (255, 0, 0)).all()
    padding = np.ones((side, side), dtype=bool)
    padding[y : y + size[1], x : x + size[0]] = False
    assert (square[padding] == (122, 116, 104)).all()


def test_square_image_is_untouched():
    image = Image.new("RGB", (50, 50), (1, 2, 3))
    assert expand_to_square(image, (122, 116, 104)) is image


def test_rgb_conversion():
    gray = Image.new("L", (4, 4), 200)
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 250, 100, 50] + [0] * 762)
    assert np.asarray(to_rgb(gray))[0, 0].tolist() == [200, 200, 200]
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [10, 20, 30]
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [250, 100, 50]
    assert all(to_rgb(image).mode == "RGB" for image in (gray, rgba, palette))


def test_pixels_equal_llava_pil_pipeline(tiny_vlm):
    """pad -> bicubic resize to 336 (square, so the centre crop is a no-op) -> /255 -> CLIP normalise, in float32.
    Catches (checked by mutation) a pad colour rounded instead of truncated."""
    processor = tiny_vlm("tiny-llava").image_processor
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (120, 200, 3), dtype=np.uint8))
    pixels = preprocess_padded([image.convert("L"), image], processor)
    expected = {np.float32: [], np.float64: []}  # float64: the exact twin the fp32 tolerance is taken from
    for original in (image.convert("L").convert("RGB"), image):
        square = expand_to_square(original, (122, 116, 104)).resize((336, 336), Image.BICUBIC)
        for dtype, arrays in expected.items():
            array = np.asarray(square, dtype=dtype) * dtype(1 / 255)
            array = (array - np.array(CLIP_MEAN, dtype=dtype)) / np.array(CLIP_STD, dtype=dtype)
            arrays.append(torch.from_numpy(array).permute(2, 0, 1))
    assert pixels.shape == (2, 3, 336, 336)
    assert_fp32_close(pixels, torch.stack(expected[np.float32]), torch.stack(expected[np.float64]))
