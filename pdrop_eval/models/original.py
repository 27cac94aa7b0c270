"""Convert a checkpoint in the original LLaVA repository format (liuhaotian/llava-v1.5-*, PDrop-trained models)
to a HF `LlavaForConditionalGeneration` directory, so the rest of the harness sees one format only.

An original checkpoint holds the language model and the projector but not the vision tower, which its config
names (`mm_vision_tower`, e.g. openai/clip-vit-large-patch14-336); that CLIP checkpoint must be available
locally. Key mapping (checked against transformers' convert_llava_weights_to_hf.py, written for the 5.x layout):

    model.embed_tokens / model.layers.* / model.norm  ->  model.language_model.*
    lm_head                                           ->  lm_head
    model.mm_projector.0 / .2                         ->  model.multi_modal_projector.linear_1 / linear_2
    CLIP vision_model.*                               ->  model.vision_tower.* (5.x; .vision_model.* if present)

The mapped names are checked against the key set of the installed transformers' own (meta-device) Llava model,
so a layout change fails loudly here instead of loading half-random weights.

The tokenizer is read with tokenizer_files.load_tokenizer (Vicuna's is often a bare SentencePiece
`tokenizer.model`). `<image>` (and `<pad>` when missing) are added to it; their new embedding and lm_head rows are the
mean of the existing rows, so they never win a greedy argmax. The vocabulary is padded to a multiple of 64 as
llava-hf does.

The command-line entry point is `python -m pdrop_eval.models.convert SRC --vision-tower PATH --out DIR`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AddedToken,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.checkpoint import read_state_dict
from pdrop_eval.models.tokenizer_files import load_tokenizer

CONVERTER_VERSION = 2
VOCAB_MULTIPLE = 64
_TEXT_MODEL_TYPES = {"llava_llama": "llama", "llava": "llama", "llava_mistral": "mistral", "llava_qwen": "qwen2"}
_EMBEDDED_VISION_PREFIX = "model.vision_tower.vision_tower."
_KEY_RULES = (
    (re.compile(r"^model\.mm_projector\.0\."), "model.multi_modal_projector.linear_1."),
    (re.compile(r"^model\.mm_projector\.2\."), "model.multi_modal_projector.linear_2."),
    (re.compile(r"^model\.(embed_tokens|layers|norm)\b"), r"model.language_model.\1"),
    (re.compile(r"^lm_head\."), "lm_head."),
)


def is_original_llava_config(raw_config: dict) -> bool:
    """Original LLaVA configs are a language-model config with `mm_*` keys added."""
    return "mm_vision_tower" in raw_config or raw_config.get("model_type") in ("llava_llama", "llava_mistral")


def convert_original(src: Path, vision_tower_dir: Path, out_dir: Path) -> None:
    """Write the HF-format model (config, safetensors, tokenizer, processor, generation config) to `out_dir`."""
    raw_config = json.loads((src / "config.json").read_text())
    _check_supported(raw_config, src)
    text_config_class = CONFIG_MAPPING[_TEXT_MODEL_TYPES[raw_config["model_type"]]]
    tokenizer = load_tokenizer(src, config=text_config_class())  # AutoConfig does not know the `llava_llama` type
    base_vocab = int(raw_config["vocab_size"])
    tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    vocab = -(-max(len(tokenizer), base_vocab) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    vision_config = CLIPVisionConfig.from_pretrained(vision_tower_dir, local_files_only=True)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=_text_config(raw_config, vocab, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=int(raw_config.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="full"
        if raw_config.get("mm_vision_select_feature") == "cls_patch"
        else "default",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    config.dtype = raw_config.get("torch_dtype") or raw_config.get("dtype") or "float16"
    config.save_pretrained(out_dir)

    with torch.device("meta"):
        expected_keys = set(LlavaForConditionalGeneration(config).state_dict())
    state = convert_state_dict(read_state_dict(src), read_state_dict(vision_tower_dir), vocab, expected_keys)
    save_file({k: v.contiguous() for k, v in state.items()}, out_dir / "model.safetensors", metadata={"format": "pt"})

    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(out_dir)
    image_processor = CLIPImageProcessorPil.from_pretrained(vision_tower_dir, local_files_only=True)
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    ).save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)


def convert_state_dict(
    llava_state: dict[str, torch.Tensor], clip_state: dict[str, torch.Tensor], vocab: int, expected_keys: set[str]
) -> dict[str, torch.Tensor]:
    """Map original LLaVA + CLIP tensors to HF Llava names; a vision tower stored in the LLaVA checkpoint wins."""
    nested = any(key.startswith("model.vision_tower.vision_model.") for key in expected_keys)
    vision_prefix = "model.vision_tower.vision_model." if nested else "model.vision_tower."
    out: dict[str, torch.Tensor] = {}
    for key, tensor in clip_state.items():
        if key.startswith("vision_model."):
            out[vision_prefix + key[len("vision_model.") :]] = tensor
    unknown = []
    for key, tensor in llava_state.items():
        if key.endswith(".rotary_emb.inv_freq"):
            continue
        if key.startswith(_EMBEDDED_VISION_PREFIX + "vision_model."):
            out[vision_prefix + key[len(_EMBEDDED_VISION_PREFIX + "vision_model.") :]] = tensor
            continue
        new_key = _map_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            out[new_key] = tensor
    if unknown:
        raise PdropEvalError(
            f"unexpected tensors in the original LLaVA checkpoint: {unknown[:5]} ({len(unknown)} in all)"
        )
    embed_key = "model.language_model.embed_tokens.weight"
    out.setdefault("lm_head.weight", out[embed_key].clone())
    for key in (embed_key, "lm_head.weight"):
        out[key] = _grow_rows(out[key], vocab)
    missing, extra = sorted(expected_keys - out.keys()), sorted(out.keys() - expected_keys)
    if missing or extra:
        raise PdropEvalError(
            f"converted weights do not match transformers' Llava layout: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)}); is the vision tower a CLIP checkpoint of the right size?"
        )
    return out


def _map_key(key: str) -> str | None:
    for pattern, replacement in _KEY_RULES:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    return None


def _grow_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean of the existing ones (added tokens score an average logit, never the max)."""
    extra = rows - matrix.shape[0]
    if extra <= 0:
        return matrix
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(extra, -1)], dim=0)


def _check_supported(raw_config: dict, src: Path) -> None:
    projector = raw_config.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise PdropEvalError(
            f"{src}: projector {projector!r} is not supported; LLaVA-1.5 style checkpoints use 'mlp2x_gelu'"
        )
    if str(raw_config.get("image_aspect_ratio", "pad")).startswith("anyres"):
        raise PdropEvalError(
            f"{src}: original-format LLaVA-NeXT (anyres) checkpoints are not converted here; use the llava-hf "
            "LLaVA-NeXT checkpoints (e.g. llava-hf/llava-v1.6-vicuna-7b-hf)"
        )
    if raw_config.get("model_type") not in _TEXT_MODEL_TYPES:
        raise PdropEvalError(f"{src}: unknown original LLaVA model_type {raw_config.get('model_type')!r}")


def _text_config(raw_config: dict, vocab: int, tokenizer):
    """The language-model config: the original's own fields, minus the LLaVA (`mm_*`) additions."""
    config_class = CONFIG_MAPPING[_TEXT_MODEL_TYPES[raw_config["model_type"]]]
    known = set(config_class().to_dict())
    fields = {k: v for k, v in raw_config.items() if k in known and k not in ("model_type", "architectures")}
    fields.update(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return config_class(**fields)
