"""load_vlm: offline resolution (path, HF cache), clear errors naming every place looked at, dtype/attn checks."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models import load_vlm
from pdrop_eval.models.tiny import tiny_model_dir

pytestmark = pytest.mark.engine


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_hub_id_names_every_place_and_the_fix(empty_hf_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PdropEvalError) as raised:
        load_vlm("llava-hf/llava-1.5-7b-hf")
    message = str(raised.value)
    assert str(tmp_path / "llava-hf" / "llava-1.5-7b-hf") in message
    assert str(empty_hf_cache / "models--llava-hf--llava-1.5-7b-hf") in message
    assert "huggingface-cli download llava-hf/llava-1.5-7b-hf" in message
    assert "local model directory" in message


def test_missing_path_is_named(tmp_path):
    with pytest.raises(PdropEvalError, match=str(tmp_path / "nowhere")):
        load_vlm(str(tmp_path / "nowhere"))


def test_hub_id_found_in_local_hf_cache(empty_hf_cache):
    repo = empty_hf_cache / "models--someone--tiny-vlm"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir("tiny-llava"), repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    loaded = load_vlm("someone/tiny-vlm")
    assert loaded.path == repo / "snapshots" / revision
    assert loaded.kind == "llava" and loaded.name == "someone/tiny-vlm"


def test_loaded_facts(tiny_vlm):
    loaded = tiny_vlm("tiny-llava")
    assert loaded.template == "vicuna_v1"
    assert loaded.pad_color == (122, 116, 104)
    assert loaded.image_token_id == loaded.tokenizer.convert_tokens_to_ids("<image>")
    assert loaded.pad_token_id == loaded.tokenizer.convert_tokens_to_ids("<pad>")
    assert loaded.eos_token_ids == (loaded.tokenizer.eos_token_id,)
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu") and loaded.attn == "sdpa"
    assert not loaded.model.training


@pytest.mark.parametrize(("dtype", "expected"), [("bfloat16", torch.bfloat16), ("auto", torch.float32)])
def test_dtype(dtype, expected):
    assert load_vlm("tiny-llava", dtype=dtype).model.dtype == expected


def test_eager_attention_loads():
    assert load_vlm("tiny-llava", attn="eager").model.config.text_config._attn_implementation == "eager"


@pytest.mark.parametrize(("kwargs", "match"), [({"dtype": "fp8"}, "unknown dtype"), ({"attn": "xformers"}, "sdpa")])
def test_bad_options(kwargs, match):
    with pytest.raises(PdropEvalError, match=match):
        load_vlm("tiny-llava", **kwargs)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_flash_attn():
    with pytest.raises(PdropEvalError, match="pip install flash-attn"):
        load_vlm("tiny-llava", dtype="float16", device="cuda", attn="flash_attention_2")


def test_pickled_weights_are_refused(tmp_path):
    model = tmp_path / "bin-only"
    shutil.copytree(tiny_model_dir("tiny-llava"), model)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(PdropEvalError, match="Only safetensors"):
        load_vlm(str(model))


def test_not_a_model_directory(tmp_path):
    with pytest.raises(PdropEvalError, match="no config.json"):
        load_vlm(str(tmp_path))


def test_corrupt_config_is_a_clear_error(tmp_path):
    from pdrop_eval.errors import PdropEvalError
    from pdrop_eval.models import load_vlm

    (tmp_path / "config.json").write_text('{"model_type": "llava", ')
    with pytest.raises(PdropEvalError, match="config.json is not valid JSON"):
        load_vlm(str(tmp_path))
