"""Original-format checkpoints whose Vicuna tokenizer is only a SentencePiece `tokenizer.model` (liuhaotian/
llava-v1.5-7b, PDrop-trained ones) load, and tokenise prompts exactly as LLaVA's evaluation does.

The reference ids come from the sentencepiece library itself, the engine LLaVA's slow `LlamaTokenizer` wraps: on a
chunk that holds no special token and does not start with a space, `LlamaTokenizer(legacy=False)` of transformers
4.37.2 (LLaVA's pin) gives BOS + `SentencePieceProcessor.encode(chunk)`.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sentencepiece import SentencePieceProcessor

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models import build_batch, decode, load_vlm
from pdrop_eval.models.cache import CACHE_ENV, cache_root
from pdrop_eval.models.convert import main as convert_main
from pdrop_eval.models.prompts import IMAGE_PLACEHOLDER, TEMPLATES, format_prompt
from pdrop_eval.models.tiny import tiny_model_dir
from tests.checkpoint_fixtures import save_sentencepiece_tokenizer, write_clip, write_original

pytestmark = pytest.mark.engine

PROMPTS = [
    "What color is the circle?",
    "How many squares?\nAnswer the question using a single word or phrase.",
    "Zebra 2023: é, 中 and  two  spaces\n\nthen more",
]


@pytest.fixture(scope="module")
def spm_checkpoint(tmp_path_factory, tiny_vlm):
    root = tmp_path_factory.mktemp("original_spm")
    hf_dir = tiny_model_dir("tiny-llava")
    weights = tiny_vlm("tiny-llava").model.state_dict()
    write_clip(weights, json.loads((hf_dir / "config.json").read_text())["vision_config"], root / "clip")
    write_original(hf_dir, weights, root / "vicuna", str(root / "clip"), False, save_sentencepiece_tokenizer)
    return root


def test_fixture_has_only_a_sentencepiece_tokenizer(spm_checkpoint):
    files = {path.name for path in (spm_checkpoint / "vicuna").iterdir()}
    assert "tokenizer.model" in files and "tokenizer.json" not in files
    assert json.loads((spm_checkpoint / "vicuna" / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "LlamaTokenizer"
    )


def test_converts_on_load_with_llava_prompt_ids(spm_checkpoint):
    loaded = load_vlm(str(spm_checkpoint / "vicuna"))
    assert loaded.path.parent == cache_root() / "converted"
    sp = SentencePieceProcessor(model_file=str(spm_checkpoint / "vicuna" / "tokenizer.model"))
    assert (loaded.tokenizer.bos_token_id, loaded.eos_token_ids, loaded.pad_token_id) == (1, (2,), 0)
    assert loaded.image_token_id == sp.get_piece_size()  # <image> appended after the SentencePiece vocabulary
    image = Image.new("RGB", (120, 90), (0, 128, 255))
    for text in PROMPTS:
        before, after = format_prompt(loaded.template, text).split(IMAGE_PLACEHOLDER)
        expected = [sp.bos_id(), *sp.encode(before), *[loaded.image_token_id] * 576, *sp.encode(after)]
        assert build_batch(loaded, [text], [image]).input_ids[0].tolist() == expected
        after_image = expected[expected.index(loaded.image_token_id) + 576 :][:2]
        assert after_image == [sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")]  # REFERENCE §4: `▁ \n` after <image>


def test_answers_decode_to_their_text(spm_checkpoint):
    loaded = load_vlm(str(spm_checkpoint / "vicuna"))
    sp = SentencePieceProcessor(model_file=str(spm_checkpoint / "vicuna" / "tokenizer.model"))
    for answer in ("Two red circles", "yes", "Zebra 2023 é 中"):
        assert decode(loaded, [*sp.encode(answer), sp.eos_id(), *sp.encode("junk")]) == answer


def test_weights_and_generation_survive_conversion(spm_checkpoint):
    loaded = load_vlm(str(spm_checkpoint / "vicuna"))
    original = load_file(spm_checkpoint / "vicuna" / "model.safetensors")
    vocab = original["model.embed_tokens.weight"].shape[0]
    assert torch.equal(loaded.model.get_input_embeddings().weight[:vocab], original["model.embed_tokens.weight"])
    assert torch.equal(loaded.model.get_output_embeddings().weight[:vocab], original["lm_head.weight"])
    batch = build_batch(loaded, PROMPTS[:2], [Image.new("RGB", (64, 64), (255, 0, 0))] * 2)
    with torch.no_grad():
        generated = loaded.model.generate(**batch.model_inputs(), max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, batch.input_ids.shape[1] + 4)


def test_no_template_chunk_starts_with_a_space():
    """A chunk starting with a space is the one place transformers 5.x's converted tokenizer differs from LLaVA's
    slow one (one `▁` fewer): no template may produce it."""
    for template in TEMPLATES:
        for chunk in format_prompt(template, "How many?").split(IMAGE_PLACEHOLDER):
            assert not chunk.startswith(" "), (template, chunk)


@pytest.mark.parametrize(("module", "package"), [("sentencepiece", "sentencepiece"), ("google.protobuf", "protobuf")])
def test_missing_sentencepiece_is_one_clear_line(spm_checkpoint, tmp_path, monkeypatch, module, package):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # no cached conversion to fall back on
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to importlib
    with pytest.raises(PdropEvalError) as raised:
        load_vlm(str(spm_checkpoint / "vicuna"))
    message = str(raised.value)
    assert "pip install sentencepiece protobuf" in message and "tokenizer.model" in message
    assert f"needs the {package} package" in message
    assert "tiktoken" not in message.lower() and "\n" not in message


def test_missing_sentencepiece_in_the_command_line_converter(spm_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    out = tmp_path / "converted"
    args = [str(spm_checkpoint / "vicuna"), "--vision-tower", str(spm_checkpoint / "clip"), "--out", str(out)]
    assert convert_main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install sentencepiece protobuf" in error
    assert not out.exists()


def test_the_converted_copy_needs_no_sentencepiece(spm_checkpoint, monkeypatch):
    """Only the conversion reads tokenizer.model; the cached HF copy has a tokenizer.json."""
    converted = load_vlm(str(spm_checkpoint / "vicuna")).path
    assert (converted / "tokenizer.json").is_file()
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    assert load_vlm(str(spm_checkpoint / "vicuna")).path == converted
