"""Checkpoints on disk in the layouts real ones use: CLIP towers, original-format LLaVA checkpoints (safetensors or
pickled shards), and Vicuna-style tokenizers that exist only as a SentencePiece `tokenizer.model`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from pdrop_eval.models.tiny_tokenizer import build_base_tokenizer, training_corpus

SENTENCEPIECE_VOCAB = 400
_TO_ORIGINAL = {
    "model.language_model.": "model.",
    "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
    "lm_head.": "lm_head.",
}
_SPECIAL = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


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


def save_base_tokenizer(out: Path) -> int:
    """tiny-llava's own language-model tokenizer, saved by transformers (tokenizer.json); returns its size."""
    tokenizer = build_base_tokenizer()
    tokenizer.save_pretrained(out)
    return len(tokenizer)


def train_sentencepiece() -> bytes:
    """A SentencePiece BPE model trained offline with the options Llama's `tokenizer.model` records.

    Byte fallback (unseen characters and `\\n` become `<0x..>` pieces), digits split, identity normalisation,
    whitespace kept as it is (not collapsed), whitespace-only pieces allowed, unk/bos/eos = 0/1/2, no pad piece.
    """
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=SENTENCEPIECE_VOCAB,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def save_sentencepiece_tokenizer(out: Path) -> int:
    """The tokenizer files of an original LLaVA-1.5 checkpoint (Vicuna's, saved by LLaVA's training): only
    `tokenizer.model`, a `tokenizer_config.json` naming the slow `LlamaTokenizer` with `legacy: false`, and a
    special_tokens_map.json padding with `<unk>` (llava/train/train.py:train sets pad = unk for Vicuna
    templates). No tokenizer.json. Returns the vocabulary size."""
    (out / "tokenizer.model").write_bytes(train_sentencepiece())
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", "content": "<s>", **_SPECIAL},
        "eos_token": {"__type": "AddedToken", "content": "</s>", **_SPECIAL},
        "unk_token": {"__type": "AddedToken", "content": "<unk>", **_SPECIAL},
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {
        name: {"content": config[name]["content"], **_SPECIAL} for name in ("bos_token", "eos_token", "unk_token")
    }
    (out / "special_tokens_map.json").write_text(json.dumps({**special, "pad_token": "<unk>"}, indent=2))
    return SENTENCEPIECE_VOCAB


def write_original(
    hf_dir: Path,
    hf_weights: dict,
    out: Path,
    vision_tower: str,
    shards: bool,
    write_tokenizer: Callable[[Path], int] = save_base_tokenizer,
) -> None:
    """tiny-llava as liuhaotian/llava-v1.5 stores it: llava_llama config with mm_* keys, no vision tower, no <image>.

    The embedding and lm_head keep the first rows of tiny-llava's, one per token of the tokenizer written.
    """
    out.mkdir()
    vocab = write_tokenizer(out)
    state = {}
    for key, value in hf_weights.items():
        for hf_prefix, original_prefix in _TO_ORIGINAL.items():
            if key.startswith(hf_prefix):
                state[original_prefix + key[len(hf_prefix) :]] = value
    state = {
        key: value[:vocab].clone() if key in ("model.embed_tokens.weight", "lm_head.weight") else value.clone()
        for key, value in state.items()
    }
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
    (out / "config.json").write_text(json.dumps(config))
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
