"""Tiny random LLaVA models, written to disk as real HF model directories and loaded back like user models.

They keep the shapes that matter to PyramidDrop (576 image tokens at 336 px / patch 14, 32 decoder layers so the
default (8, 16, 24) stages are valid, GQA and q/k/v biases on the Qwen2 variant, anyres tiles on NeXT) and
shrink everything else, so the whole suite can build and run them on a CPU in seconds. Weights are drawn from a
seeded generator in a fixed parameter order, so the same version builds the same model on every transformers
release. The scales are chosen so the model is not degenerate: large token embeddings keep each step's token
visible through 32 layers (greedy decoding wanders instead of repeating one token); output rows are small, so
logits stay near unit scale and float noise between equivalent computations stays ~1e-5 absolute; large
query/key weights make attention peaked, so image tokens get clearly different PyramidDrop scores; small
value/output and MLP weights keep the layers from washing out the token; a strong vision path makes the answer
depend on the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from pdrop_eval.models.cache import build_once, cache_root
from pdrop_eval.models.tiny_onevision import write_tiny_onevision
from pdrop_eval.models.tiny_qwen import write_tiny_qwen
from pdrop_eval.models.tiny_tokenizer import IMAGE_TOKEN, build_tiny_tokenizer

TINY_VERSION = 3
SEED = 1234
EMBED_STD = 1.0
OUTPUT_STD = 0.1
QUERY_KEY_STD = 0.3
VALUE_OUTPUT_STD = 0.1
MLP_STD = 0.03
VISION_STD = 0.3
PATCH_SIZE = 14


@dataclass(frozen=True)
class TinySpec:
    """What distinguishes one tiny model from another."""

    kind: str
    backbone: str
    image_size: int
    num_kv_heads: int
    grid_pinpoints: tuple[tuple[int, int], ...] = ()


TINY_MODELS: dict[str, TinySpec] = {
    "tiny-llava": TinySpec(kind="llava", backbone="llama", image_size=336, num_kv_heads=4),
    "tiny-llava-qwen2": TinySpec(kind="llava", backbone="qwen2", image_size=336, num_kv_heads=2),
    "tiny-llava-next": TinySpec(
        kind="llava_next",
        backbone="llama",
        image_size=112,
        num_kv_heads=4,
        grid_pinpoints=((112, 224), (224, 112), (224, 224), (112, 336), (336, 112)),
    ),
    # dynamic resolution: no fixed image size (tiny_qwen.py bounds it by min/max pixels)
    "tiny-qwen2.5-vl": TinySpec(kind="qwen2_5_vl", backbone="qwen2_5_vl", image_size=0, num_kv_heads=2),
    # SigLIP 56 px tiles, anyres_max_9 over 1-4 tiles a side, Qwen2 decoder (tiny_onevision.py)
    "tiny-llava-onevision": TinySpec(kind="llava_onevision", backbone="qwen2", image_size=56, num_kv_heads=2),
}


def is_tiny_name(name: str) -> bool:
    return name in TINY_MODELS


def tiny_model_dir(name: str) -> Path:
    """The cached directory of tiny model `name`, built on first use."""
    target = cache_root() / "tiny" / f"{name}-v{TINY_VERSION}"
    return build_once(target, lambda staging: write_tiny_model(name, staging))


def write_tiny_model(name: str, out_dir: Path) -> None:
    """Write config, safetensors weights, tokenizer, processor configs and generation config to `out_dir`."""
    spec = TINY_MODELS[name]
    if spec.kind == "qwen2_5_vl":
        write_tiny_qwen(out_dir, _init_weights, _never_generate)
        return
    if spec.kind == "llava_onevision":
        write_tiny_onevision(out_dir, _init_weights, _never_generate)
        return
    tokenizer = build_tiny_tokenizer()
    config = _model_config(spec, tokenizer)
    model_class = LlavaNextForConditionalGeneration if spec.kind == "llava_next" else LlavaForConditionalGeneration
    model = model_class(config)
    _init_weights(model)
    _never_generate(model, [config.image_token_id, tokenizer.pad_token_id])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    processor = _processor(spec, tokenizer)
    processor.save_pretrained(out_dir)
    processor.image_processor.save_pretrained(out_dir)


def _text_config(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig | Qwen2Config:
    shared = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    return Qwen2Config(**shared) if spec.backbone == "qwen2" else LlamaConfig(**shared)


def _model_config(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> LlavaConfig | LlavaNextConfig:
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    common = {
        "vision_config": vision,
        "text_config": _text_config(spec, tokenizer),
        "image_token_index": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        "image_seq_length": (spec.image_size // PATCH_SIZE) ** 2,
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "tie_word_embeddings": False,
    }
    if spec.kind == "llava_next":
        return LlavaNextConfig(**common, image_grid_pinpoints=[list(p) for p in spec.grid_pinpoints])
    return LlavaConfig(**common)


def _processor(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor | LlavaNextProcessor:
    """The llava-hf style processor files (image processor config + processor config), as a user model has them."""
    image_args = {
        "size": {"shortest_edge": spec.image_size},
        "crop_size": {"height": spec.image_size, "width": spec.image_size},
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
    }
    processor_args = {
        "tokenizer": tokenizer,
        "patch_size": PATCH_SIZE,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,
    }
    if spec.kind == "llava_next":
        image_processor = LlavaNextImageProcessorPil(
            **image_args, image_grid_pinpoints=[list(p) for p in spec.grid_pinpoints]
        )
        return LlavaNextProcessor(image_processor=image_processor, **processor_args)
    return LlavaProcessor(image_processor=CLIPImageProcessorPil(**image_args), **processor_args)


@torch.no_grad()
def _init_weights(model: PreTrainedModel) -> None:
    """Norms start as identity; every other parameter (q/k/v biases included) is normal, drawn in name order."""
    generator = torch.Generator().manual_seed(SEED)
    norm_params = {
        id(param)
        for module in model.modules()
        if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")
        for param in module.parameters(recurse=False)
    }
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if id(param) in norm_params:
            param.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * _init_std(name))


def _init_std(name: str) -> float:
    if "embed_tokens" in name:
        return EMBED_STD
    if name.startswith("lm_head"):
        return OUTPUT_STD
    if "language_model.layers" in name:
        if ".q_proj." in name or ".k_proj." in name:
            return QUERY_KEY_STD
        return VALUE_OUTPUT_STD if ".v_proj." in name or ".o_proj." in name else MLP_STD
    return VISION_STD


@torch.no_grad()
def _never_generate(model: PreTrainedModel, token_ids: list[int]) -> None:
    """Zero output rows score 0 while the best random row scores ~+2: `<image>`, `<pad>` are never greedy picks."""
    model.lm_head.weight[token_ids] = 0.0
