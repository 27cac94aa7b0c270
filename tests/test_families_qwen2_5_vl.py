"""Qwen2.5-VL as a model family: the tiny random checkpoint loads through `load_vlm` like a real one, dynamic
resolution gives (H/28)·(W/28) tokens, and the engine with no drop (M-RoPE prompt positions from the model's own
`get_rope_index`, decode positions continuing from the largest + 1) equals HF `generate`."""

import functools
import json

import pytest
import torch
from PIL import Image, ImageDraw

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.qwen2_5_vl import Qwen25VLFamily
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate

PROMPTS = ["What color is the circle?", "How many shapes are there?", "Describe the picture.", "Is it red?"]
SIZES = [(64, 48), (40, 100), (120, 90), (56, 56)]  # (width, height): four different token grids


@functools.cache
def _loaded():
    return load_vlm("tiny-qwen2.5-vl")


def _images():
    images = []
    for index, size in enumerate(SIZES):
        image = Image.new("RGB", size, (40 * index, 200 - 30 * index, 90))
        ImageDraw.Draw(image).ellipse((3, 3, size[0] // 2, size[1] // 2), fill=(255, 50 * index, 0))
        images.append(image)
    return images


def test_tiny_qwen_is_a_real_model_directory_loaded_like_a_checkpoint():
    loaded = _loaded()
    assert isinstance(loaded.family, Qwen25VLFamily) and loaded.kind == "qwen2_5_vl"
    files = {path.name for path in loaded.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    assert json.loads((loaded.path / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert loaded.image_token_id == loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.eos_token_ids


def test_dynamic_resolution_token_counts():
    """120×90 px resizes to 112×84 (multiples of 28): 4×3 = 12 tokens; 64×48 is below min_pixels (4 tokens' worth)
    and is scaled up to exactly 4; every count matches the batch's placeholder run."""
    loaded = _loaded()
    images = _images()
    assert image_token_count(loaded, images[2]) == 12
    assert image_token_count(loaded, images[0]) == 4
    batch = build_batch(loaded, PROMPTS, images)
    placeholders = ((batch.input_ids == loaded.image_token_id) & batch.attention_mask.bool()).sum(-1).tolist()
    assert placeholders == batch.image_token_counts == [image_token_count(loaded, image) for image in images]


def test_schedule_none_equals_hf_generate_on_a_mixed_size_batch():
    """Rows have different rope deltas (max M-RoPE position + 1 − length), so a decode position rule of 'cache
    length' or positions taken from the mask instead of the image grids changes the logits."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS, _images())
    reference = loaded.model.generate(
        **batch.model_inputs(), max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    result = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        DropSchedule.none(),
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        max_new_tokens=8,
        eos_token_ids=loaded.eos_token_ids,
        pad_token_id=loaded.pad_token_id,
        return_logits=True,
    )
    prompt_length = batch.input_ids.shape[1]
    for row, generation in enumerate(result.generations):
        expected = reference.sequences[row, prompt_length:].tolist()
        assert generation.token_ids == expected[: len(generation.token_ids)]
    hf_logits = torch.stack(reference.scores, dim=1)[:, : result.step_logits.shape[1]]
    scale = hf_logits.abs().max()
    assert torch.allclose(result.step_logits, hf_logits, rtol=0, atol=float(scale) * 1e-5)


def test_compact_positions_are_refused_for_mrope_and_original_drops_run():
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    inputs = {"pixel_values": batch.pixel_values, "image_sizes": batch.image_sizes, "max_new_tokens": 2}
    with pytest.raises(PdropEvalError, match="compact.*not defined for M-RoPE"):
        generate(loaded.model, batch.input_ids, batch.attention_mask, DropSchedule.pyramid(0.5), **inputs)
    method = DropSchedule.pyramid(0.5, positions="original")
    result = generate(loaded.model, batch.input_ids, batch.attention_mask, method, **inputs)
    for generation, count in zip(result.generations, batch.image_token_counts):
        kept = [len(stage) for stage in generation.trace.kept_image_indices]
        assert kept == [method.keep_count(count, stage) for stage in range(3)]
