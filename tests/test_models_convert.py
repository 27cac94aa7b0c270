"""Original LLaVA-format checkpoints (language model + projector, CLIP tower referenced by name) convert to HF
Llava and give the same outputs as the HF model they were made from; a cached conversion is used only while
nothing it was made from has changed."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models import build_batch, fingerprint, load_vlm
from pdrop_eval.models.cache import cache_root
from pdrop_eval.models.convert import main as convert_main
from pdrop_eval.models.tiny import tiny_model_dir
from pdrop_eval.models.tiny_tokenizer import build_base_tokenizer
from tests.checkpoint_fixtures import write_clip, write_original
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine


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


def resave_in_place(shard: Path, key: str) -> torch.Tensor:
    """Overwrite tensor `key` in pickled shard `shard` with other values: same names, shapes and dtypes, so the file
    keeps its size (what a training run re-saving its checkpoint does). Returns the new tensor."""
    state = torch.load(shard, weights_only=True)
    state[key] = -2.0 * state[key] + 0.5
    size = shard.stat().st_size
    torch.save(state, shard)
    assert shard.stat().st_size == size
    return state[key]


def shard_of(checkpoint: Path, key: str) -> Path:
    return checkpoint / json.loads((checkpoint / "pytorch_model.bin.index.json").read_text())["weight_map"][key]


@pytest.mark.parametrize("hashed_max_bytes", [fingerprint.HASHED_MAX_BYTES, 0], ids=["hashed", "stat"])
def test_weights_resaved_in_place_are_converted_again(checkpoints, tmp_path, monkeypatch, hashed_max_bytes):
    """Both ways a file is fingerprinted notice a same-size re-save; the replaced conversion is deleted."""
    monkeypatch.setattr(fingerprint, "HASHED_MAX_BYTES", hashed_max_bytes)
    source = tmp_path / "checkpoint"
    shutil.copytree(checkpoints / "bin", source)
    first = load_vlm(str(source))
    assert load_vlm(str(source)).path == first.path
    key = "model.embed_tokens.weight"
    embedding = resave_in_place(shard_of(source, key), key)
    second = load_vlm(str(source))
    assert second.path != first.path
    assert not first.path.exists()
    rows = second.model.get_input_embeddings().weight[: embedding.shape[0]]
    assert torch.equal(rows, embedding)


def test_another_vision_tower_is_another_conversion(checkpoints, tmp_path):
    tower = tmp_path / "clip"
    shutil.copytree(checkpoints / "clip", tower)
    key = "vision_model.post_layernorm.weight"
    weight = resave_in_place(tower / "pytorch_model.bin", key)
    default = load_vlm(str(checkpoints / "bin"))
    other = load_vlm(str(checkpoints / "bin"), vision_tower=str(tower))
    assert other.path != default.path and default.path.exists()
    converted = dict(other.model.named_parameters())
    names = [name for name in converted if name.endswith("post_layernorm.weight") and "vision_tower" in name]
    assert len(names) == 1 and torch.equal(converted[names[0]], weight)
