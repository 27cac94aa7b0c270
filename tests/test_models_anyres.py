"""LLaVA-NeXT: our per-image token count and pixels equal what the HF processor produces."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import LlavaNextProcessor

from pdrop_eval.models import build_batch, image_token_count

pytestmark = pytest.mark.engine

SIZES = [(100, 200), (200, 100), (300, 90), (112, 112), (500, 400), (37, 311), (640, 480)]


def hf_processor(loaded) -> LlavaNextProcessor:
    """Built from the saved processor config (AutoProcessor needs torchvision on transformers 5.17)."""
    saved = json.loads((loaded.path / "processor_config.json").read_text())
    return LlavaNextProcessor(
        image_processor=loaded.image_processor,
        tokenizer=loaded.tokenizer,
        patch_size=saved["patch_size"],
        vision_feature_select_strategy=saved["vision_feature_select_strategy"],
        num_additional_image_tokens=saved["num_additional_image_tokens"],
    )


@pytest.mark.parametrize("size", SIZES)
def test_token_count_equals_hf_processor(size, tiny_vlm):
    loaded = tiny_vlm("tiny-llava-next")
    image = Image.new("RGB", size, (30, 60, 90))
    inserted = hf_processor(loaded)(text="<image>\nWhat?", images=image)["input_ids"][0]
    assert image_token_count(loaded, image) == list(inserted).count(loaded.image_token_id)


def test_counts_differ_by_aspect_ratio(tiny_vlm):
    loaded = tiny_vlm("tiny-llava-next")
    counts = {image_token_count(loaded, Image.new("RGB", size)) for size in SIZES}
    assert len(counts) >= 4


def test_batch_pixels_equal_hf_processor(tiny_vlm):
    loaded = tiny_vlm("tiny-llava-next")
    images = [Image.new("RGB", (100, 200), (200, 10, 10)), Image.new("L", (640, 480), 90)]
    batch = build_batch(loaded, ["What?", "Which colour?"], images)
    rgb = [image.convert("RGB") for image in images]
    reference = hf_processor(loaded)(text=["<image>\nWhat?"] * 2, images=rgb, return_tensors="pt", padding=True)
    assert torch.equal(batch.pixel_values, reference["pixel_values"])
    assert batch.image_sizes.tolist() == [[200, 100], [480, 640]]
    assert batch.image_token_counts == [image_token_count(loaded, image) for image in images]
