"""Tiny models: built offline, deterministic, loaded through load_vlm, usable by plain HF generate."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from pdrop_eval.models import TINY_MODELS, build_batch, decode, load_vlm
from pdrop_eval.models.cache import build_once
from pdrop_eval.models.tiny import tiny_model_dir, write_tiny_model

pytestmark = pytest.mark.engine

PROMPTS = [
    "What color is the circle?",
    "How many red squares are there?\nAnswer the question using a single word or phrase.",
]


def scene(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, size[0] // 2, size[1] // 2), fill=color)
    draw.rectangle((size[0] // 2, size[1] // 2, size[0] - 5, size[1] - 5), fill=(color[2], 128, color[0]))
    return image


def images() -> list[Image.Image]:
    return [scene((200, 100), (255, 0, 0)), scene((150, 300), (0, 200, 0)).convert("L")]


def logits(loaded, prompts, imgs) -> torch.Tensor:
    batch = build_batch(loaded, prompts, imgs)
    with torch.no_grad():
        return loaded.model(**batch.model_inputs()).logits[:, -1]


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_directory_is_a_real_hf_model(name):
    files = {p.name for p in tiny_model_dir(name).iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert expected | {"preprocessor_config.json", "processor_config.json"} <= files


def test_shapes(tiny_vlm):
    llava, qwen, nxt = tiny_vlm("tiny-llava"), tiny_vlm("tiny-llava-qwen2"), tiny_vlm("tiny-llava-next")
    for loaded in (llava, qwen, nxt):
        assert loaded.model.config.text_config.num_hidden_layers == 32
        assert loaded.model.config.vision_feature_layer == -2
        assert loaded.model.get_output_embeddings().weight.shape[0] == len(loaded.tokenizer)
    assert llava.kind == qwen.kind == "llava" and nxt.kind == "llava_next"
    assert llava.image_tokens_per_image == qwen.image_tokens_per_image == 576
    assert nxt.image_tokens_per_image is None
    assert qwen.model.config.text_config.model_type == "qwen2"
    assert qwen.model.config.text_config.num_key_value_heads == 2
    q_bias = qwen.model.model.language_model.layers[0].self_attn.q_proj.bias
    assert q_bias is not None and q_bias.abs().sum() > 0


def test_weights_are_deterministic(tmp_path):
    write_tiny_model("tiny-llava-qwen2", tmp_path / "again")
    fresh = load_file(tmp_path / "again" / "model.safetensors")
    cached = load_file(tiny_model_dir("tiny-llava-qwen2") / "model.safetensors")
    assert fresh.keys() == cached.keys()
    assert all(torch.equal(fresh[key], cached[key]) for key in fresh)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_reload_gives_identical_logits(name, tiny_vlm):
    prompt, image = PROMPTS[:1], images()[:1]
    assert torch.equal(logits(tiny_vlm(name), prompt, image), logits(load_vlm(name), prompt, image))


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_outputs_depend_on_image_and_prompt(name, tiny_vlm):
    image, other_image = images()[0], scene((200, 100), (0, 0, 255))
    prompts = [PROMPTS[0], PROMPTS[0], "What shape is the circle?"]
    base, changed_image, changed_prompt = logits(tiny_vlm(name), prompts, [image, other_image, image])
    assert (base - changed_image).abs().max() > 0.1
    assert (base - changed_prompt).abs().max() > 0.1


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_hf_generate_on_left_padded_batch(name, tiny_vlm):
    loaded = tiny_vlm(name)
    batch = build_batch(loaded, PROMPTS, images())
    assert batch.attention_mask[0].sum() != batch.attention_mask[1].sum()
    with torch.no_grad():
        out = loaded.model.generate(**batch.model_inputs(), max_new_tokens=6, do_sample=False)
    generated = out[:, batch.input_ids.shape[1] :]
    for row, (prompt, image) in enumerate(zip(PROMPTS, images())):
        single = build_batch(loaded, [prompt], [image])
        with torch.no_grad():
            alone = loaded.model.generate(**single.model_inputs(), max_new_tokens=6, do_sample=False)
        assert alone[0, single.input_ids.shape[1] :].tolist() == generated[row].tolist()
        assert len(set(generated[row].tolist())) > 2, "greedy decoding should not repeat one token"
        assert isinstance(decode(loaded, generated[row]), str)
    assert not set(generated.flatten().tolist()) & {loaded.image_token_id, loaded.pad_token_id}


def test_build_once_builds_once_and_cleans_up(tmp_path):
    calls = []

    def build(staging):
        calls.append(staging)
        (staging / "done").write_text("x")

    target = tmp_path / "model"
    assert build_once(target, build) == target and build_once(target, build) == target
    assert len(calls) == 1 and (target / "done").is_file()

    def fail(staging):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "broken", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
