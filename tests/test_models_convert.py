"""Original LLaVA-format checkpoints (language model + projector, CLIP tower referenced by name) convert to HF
Llava and give the same outputs as the HF model they were made from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.models.cache import cache_root
from pdrop_eval.models.convert import main as convert_main
from pdrop_eval.models.tiny import tiny_model_dir
from pdrop_eval.models.tiny_tokenizer import build_base_tokenizer
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine

_TO_ORIGINAL = {
    "model.language_model.": "model.",
    "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
    "lm_head.": "lm_head.",
}


def write_clip(hf_weights: dict, vision_config: dict, out: Path) -> None:
    """A full CLIP checkpoint (text tower included, pickled .bin) like openai/clip-vit-large-patch14-336."""
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(text_config=text, vision_config=vision_config, projection_dim=8)
    state = CLIPModel(config).state_dict()
    prefix = "model.vision_tower."
    vision = {key[len(prefix) :]: value for key, value in hf_weights.items() if key.startswith(prefix)}
    state.update(
        {key if key.startswith("vision_model.") else "vision_model." + key: value for key, value in vision.items()}
    )
    out.mkdir()
    config.save_pretrained(out)
    torch.save(state, out / "pytorch_model.bin")
    CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(out)


def write_original(hf_dir: Path, hf_weights: dict, out: Path, vision_tower: str, shards: bool) -> None:
    """tiny-llava as liuhaotian/llava-v1.5 stores it: llava_llama config with mm_* keys, no vision tower, no <image>."""
    tokenizer = build_base_tokenizer()
    vocab = len(tokenizer)
    state = {}
    for key, value in hf_weights.items():
        for hf_prefix, original_prefix in _TO_ORIGINAL.items():
            if key.startswith(hf_prefix):
                state[original_prefix + key[len(hf_prefix) :]] = value[:vocab] if "embed_tokens" in key else value
    state = {key: value[:vocab].clone() if key == "lm_head.weight" else value.clone() for key, value in state.items()}
    hf_config = json.loads((hf_dir / "config.json").read_text())
    config = {
        **hf_config["text_config"],
        "model_type": "llava_llama",
        "architectures": ["LlavaLlamaForCausalLM"],
        "vocab_size": vocab,
        "torch_dtype": "float32",
        "mm_vision_tower": vision_tower,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_hidden_size": hf_config["vision_config"]["hidden_size"],
        "image_aspect_ratio": "pad",
    }
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(out)
    if not shards:
        save_file(state, out / "model.safetensors")
        return
    keys = sorted(state)
    index = {}
    for number, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        name = f"pytorch_model-0000{number}-of-00002.bin"
        torch.save({key: state[key] for key in part}, out / name)
        index.update(dict.fromkeys(part, name))
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": index}))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    hf_dir = tiny_model_dir("tiny-llava")
    weights = load_vlm("tiny-llava").model.state_dict()
    vision_config = json.loads((hf_dir / "config.json").read_text())["vision_config"]
    write_clip(weights, vision_config, root / "clip")
    write_original(hf_dir, weights, root / "bin", str(root / "clip"), shards=True)
    write_original(hf_dir, weights, root / "safetensors", "openai/clip-vit-large-patch14-336", shards=False)
    return root


def assert_same_outputs(converted, reference) -> None:
    """Same inputs, logits within fp32 rounding of the reference, same tokens. Catches (checked by mutation) a
    converter that drops the checkpoint's rms_norm_eps (1e-5 -> transformers' 1e-6 default)."""
    images = [Image.new("RGB", (200, 120), (255, 0, 0)), Image.new("RGB", (90, 160), (0, 90, 255))]
    prompts = ["What color is the circle?", "How many squares?\nAnswer the question using a single word or phrase."]
    vocab = len(build_base_tokenizer())  # rows past it are the added <image>/<pad>, initialised differently
    pair = (converted, reference)
    batches = [build_batch(loaded, prompts, images) for loaded in pair]
    assert torch.equal(batches[0].input_ids, batches[1].input_ids)
    assert torch.equal(batches[0].pixel_values, batches[1].pixel_values)
    real = batches[0].attention_mask.bool()
    with torch.no_grad():
        logits = [loaded.model(**batch.model_inputs()).logits[real][:, :vocab] for loaded, batch in zip(pair, batches)]
        tokens = [
            loaded.model.generate(**batch.model_inputs(), max_new_tokens=5, do_sample=False)
            for loaded, batch in zip(pair, batches)
        ]
        exact_inputs = batches[1].model_inputs() | {"pixel_values": batches[1].pixel_values.double()}
        exact = copy.deepcopy(reference.model).double()(**exact_inputs).logits[real][:, :vocab]
    assert_fp32_close(logits[0], logits[1], exact)
    assert torch.equal(tokens[0], tokens[1])


def test_bin_shards_convert_on_load(checkpoints, tiny_vlm):
    converted = load_vlm(str(checkpoints / "bin"))
    assert converted.path.parent == cache_root() / "converted"
    assert converted.kind == "llava" and converted.image_tokens_per_image == 576
    assert converted.model.get_output_embeddings().weight.shape[0] % 64 == 0
    assert_same_outputs(converted, tiny_vlm("tiny-llava"))
    assert load_vlm(str(checkpoints / "bin")).path == converted.path


def test_refused_with_the_command_when_the_vision_tower_is_missing(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PdropEvalError) as raised:
        load_vlm(str(checkpoints / "safetensors"))
    message = str(raised.value)
    assert "openai/clip-vit-large-patch14-336" in message
    assert str(tmp_path / "hub" / "models--openai--clip-vit-large-patch14-336") in message
    assert f"python -m pdrop_eval.models.convert {checkpoints / 'safetensors'} --vision-tower " in message


def test_command_line_conversion(checkpoints, tmp_path, tiny_vlm, capsys):
    out = tmp_path / "converted"
    assert (
        convert_main([str(checkpoints / "safetensors"), "--vision-tower", str(checkpoints / "clip"), "--out", str(out)])
        == 0
    )
    assert_same_outputs(load_vlm(str(out)), tiny_vlm("tiny-llava"))
    assert (
        convert_main([str(checkpoints / "safetensors"), "--vision-tower", str(checkpoints / "clip"), "--out", str(out)])
        == 2
    )
    assert "already exists" in capsys.readouterr().err
