"""Full-size model shapes as HF configs, for FLOPs from the config alone and for random-weight speed benchmarks.

The numbers are those of the published checkpoints (REFERENCE §3; Qwen2.5-VL: the config.json of
Qwen/Qwen2.5-VL-7B-Instruct and -3B-Instruct), so no download is needed to count what they cost or to time a model
of their size.
"""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaOnevisionConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
)

from pdrop_eval.errors import PdropEvalError

_CLIP_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}
_VICUNA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
_VICUNA_13B = {
    **_VICUNA_7B,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
}
# Scaled for 2 CPU cores: the real 576 image tokens and 32 layers, narrow widths.
_CPU_SMALL_TEXT = {
    **_VICUNA_7B,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "vocab_size": 4096,
}
_CPU_SMALL_VISION = {**_CLIP_L_336, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4}
_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _image_token_id(text: dict) -> int:
    """llava-hf puts `<image>` at 32000, the first of 64 padding rows past Vicuna's 32000 tokens."""
    return text["vocab_size"] - 64


def _llava(text: dict, vision: dict) -> LlavaConfig:
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text),
        image_token_id=_image_token_id(text),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def _llava_next(text: dict, vision: dict) -> LlavaNextConfig:
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text),
        image_token_id=_image_token_id(text),
        image_grid_pinpoints=_NEXT_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


# llava-hf/llava-onevision-qwen2-7b-ov-hf as transformers' conversion script builds it
# (models/llava_onevision/convert_llava_onevision_weights_to_hf.py): SigLIP so400m at 384/14 with its last layer
# dropped and no head, Qwen2-7B-Instruct with its vocabulary grown by <image>, <video> and padded to 64; the
# config's default anyres_max_9 pinpoints (1 to 6 tiles of 384 a side).
_SIGLIP_SO400M_OV = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "vision_use_head": False,
}
_QWEN2_7B_OV = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152128,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
}


def _llava_onevision(text: dict, vision: dict) -> LlavaOnevisionConfig:
    return LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **vision},
        text_config={"model_type": "qwen2", **text},
        image_token_index=151646,
        video_token_index=151647,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


# Qwen2.5-VL's ViT is the same in every size; only out_hidden_size follows the language model.
_QWEN25_VL_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "in_channels": 3,
    "hidden_act": "silu",
}
_QWEN25_VL_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
_QWEN25_VL_3B = {
    **_QWEN25_VL_7B,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
}
# Scaled for 2 CPU cores: the 7B's 28 layers and GQA, narrow widths, a 4-block tower with its last block full.
_QWEN_CPU_SMALL_TEXT = {
    **_QWEN25_VL_7B,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
    # head_dim 32: 16 rotary frequencies split 4/6/6 as the 7B's 16/24/24 of 64
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
}
_QWEN_CPU_SMALL_VISION = {
    **_QWEN25_VL_VISION,
    "depth": 4,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 2,
    "fullatt_block_indexes": [3],
}
# <|vision_start|>, <|vision_end|>, <|image_pad|>, <|video_pad|> in Qwen2.5-VL's tokenizer.
_QWEN_SPECIAL_IDS = {
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}


def _qwen2_5_vl(text: dict, vision: dict, tie_word_embeddings: bool) -> Qwen2_5_VLConfig:
    """The published special ids where the vocabulary holds them, else the same ones (and bos/eos) at its top."""
    ids, ends = _QWEN_SPECIAL_IDS, {}
    vocab = text["vocab_size"]
    if vocab <= max(ids.values()):
        ids = {name: vocab - 8 + index for index, name in enumerate(_QWEN_SPECIAL_IDS)}
        ends = {"bos_token_id": vocab - 2, "eos_token_id": vocab - 1}
    return Qwen2_5_VLConfig(
        text_config={**text, **ends, "tie_word_embeddings": tie_word_embeddings},
        vision_config={**vision, "out_hidden_size": text["hidden_size"]},
        tie_word_embeddings=tie_word_embeddings,
        **ids,
    )


PRESETS = {
    "llava-1.5-7b": lambda: _llava(_VICUNA_7B, _CLIP_L_336),
    "llava-1.5-13b": lambda: _llava(_VICUNA_13B, _CLIP_L_336),
    "llava-next-vicuna-7b": lambda: _llava_next(_VICUNA_7B, _CLIP_L_336),
    "cpu-small": lambda: _llava(_CPU_SMALL_TEXT, _CPU_SMALL_VISION),
    "llava-onevision-7b": lambda: _llava_onevision(_QWEN2_7B_OV, _SIGLIP_SO400M_OV),
    "qwen2.5-vl-7b": lambda: _qwen2_5_vl(_QWEN25_VL_7B, _QWEN25_VL_VISION, tie_word_embeddings=False),
    "qwen2.5-vl-3b": lambda: _qwen2_5_vl(_QWEN25_VL_3B, _QWEN25_VL_VISION, tie_word_embeddings=True),
    "qwen2.5-vl-cpu-small": lambda: _qwen2_5_vl(
        _QWEN_CPU_SMALL_TEXT, _QWEN_CPU_SMALL_VISION, tie_word_embeddings=False
    ),
}


def preset_config(name: str) -> PretrainedConfig:
    if name not in PRESETS:
        raise PdropEvalError(f"unknown shape preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
