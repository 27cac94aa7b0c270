"""Prompts and token ids exactly as LLaVA-1.5's evaluation builds them (REFERENCE §4)."""

from __future__ import annotations

import pytest
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models import build_batch, decode
from pdrop_eval.models.prompts import format_prompt, tokenize_with_images

pytestmark = pytest.mark.engine

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)


def test_vicuna_template_text():
    assert format_prompt("vicuna_v1", "Is there a cat?") == f"{VICUNA_SYSTEM} USER: <image>\nIs there a cat? ASSISTANT:"


def test_user_text_is_inserted_verbatim():
    assert "{0} {text} %s" in format_prompt("vicuna_v1", "{0} {text} %s")


def test_unknown_template_is_refused():
    with pytest.raises(PdropEvalError, match="vicuna_v1"):
        format_prompt("chatml", "hi")


def test_chunked_ids_equal_hand_computed_list(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    tokenizer = loaded.tokenizer
    ids = tokenize_with_images(tokenizer, format_prompt("vicuna_v1", "Is there a cat?"), loaded.image_token_id, [3])
    system = [
        "▁A",
        "▁chat",
        "▁between",
        "▁a",
        "▁curious",
        "▁user",
        "▁and",
        "▁an",
        "▁artificial",
        "▁intelligence",
        "▁assistant.",
        "▁The",
        "▁assistant",
        "▁gives",
        "▁helpful,",
        "▁detailed,",
        "▁and",
        "▁polite",
        "▁answers",
        "▁to",
        "▁the",
        "▁user's",
        "▁questions.",
    ]
    image = ["<image>"] * 3
    expected = ["<s>", *system, "▁USER:", "▁", *image, "▁", "<0x0A>", "Is", "▁there", "▁a", "▁cat", "?", "▁ASSISTANT:"]
    assert ids == tokenizer.convert_tokens_to_ids(expected)


def test_chunked_differs_from_whole_string_by_the_space_after_the_image(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    tokenizer = loaded.tokenizer
    prompt = format_prompt("vicuna_v1", "Is there a cat?")
    chunked = tokenize_with_images(tokenizer, prompt, loaded.image_token_id, [1])
    whole = tokenizer(prompt).input_ids
    space, newline = tokenizer.convert_tokens_to_ids(["▁", "<0x0A>"])
    image_at = chunked.index(loaded.image_token_id)
    assert chunked[image_at + 1 : image_at + 3] == [space, newline]
    assert whole[image_at + 1] == newline
    assert chunked[: image_at + 1] + chunked[image_at + 2 :] == whole


def test_marker_count_must_match_images(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    with pytest.raises(PdropEvalError, match="2 <image> markers"):
        tokenize_with_images(loaded.tokenizer, "<image> and <image>", loaded.image_token_id, [576])


def test_batch_is_left_padded_with_the_pad_id(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    images = [Image.new("RGB", (64, 64))] * 2
    batch = build_batch(
        loaded, ["Is there a cat?", "Is there a cat?\nAnswer the question using a single word."], images
    )
    short = int(batch.attention_mask[0].sum())
    width = batch.input_ids.shape[1]
    assert batch.attention_mask[1].all() and short < width
    assert (batch.input_ids[0, : width - short] == loaded.pad_token_id).all()
    assert not batch.attention_mask[0, : width - short].any()
    assert batch.image_token_counts == [576, 576]
    assert [int((row == loaded.image_token_id).sum()) for row in batch.input_ids] == [576, 576]
    alone = build_batch(loaded, ["Is there a cat?"], images[:1])
    assert batch.input_ids[0, width - short :].tolist() == alone.input_ids[0].tolist()
    assert batch.pixel_values.shape == (2, 3, 336, 336)
    assert batch.image_sizes is None


def test_build_batch_rejects_bad_input(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    with pytest.raises(PdropEvalError, match="one image per prompt"):
        build_batch(loaded, ["a", "b"], [Image.new("RGB", (8, 8))])
    with pytest.raises(PdropEvalError, match="contains a literal <image>"):
        build_batch(loaded, ["<image>\nWhat?"], [Image.new("RGB", (8, 8))])


def test_decode_strips_and_stops_at_eos(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    answer = loaded.tokenizer(" Yes", add_special_tokens=False).input_ids
    eos = loaded.eos_token_ids[0]
    assert decode(loaded, [*answer, eos, *answer, loaded.pad_token_id]) == "Yes"
    assert eos == loaded.tokenizer.eos_token_id
