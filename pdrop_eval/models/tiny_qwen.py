"""The tiny random Qwen2.5-VL, written as a real HF model directory (config, safetensors, tokenizer, image processor
config) and loaded back through `load_vlm` like a downloaded Qwen/Qwen2.5-VL checkpoint.

It keeps what matters to pruning on this family: M-RoPE with a real (temporal, height, width) section split,
dynamic resolution with 2×2 patch merging (token counts vary with the image's size, within the evaluation's
min/max pixels that the family applies), GQA and q/k/v biases, window and full attention blocks in the tower, 32
decoder layers. The tokenizer is the tiny BPE of tiny_tokenizer.py plus Qwen's chat and vision special tokens; weights follow tiny.py's seeded
initialisation so every transformers release builds the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    AddedToken,
    GenerationConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from pdrop_eval.models.tiny_tokenizer import build_tiny_tokenizer

QWEN_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def build_tiny_qwen_tokenizer() -> PreTrainedTokenizerBase:
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS], special_tokens=True
    )
    return tokenizer


def tiny_qwen_config(tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        # head_dim 16: 8 rotary frequencies split temporal 2, height 3, width 3 (the 7B's 16/24/24 scaled down)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def write_tiny_qwen(out_dir: Path, init_weights, never_generate) -> None:
    """Config, weights (drawn by tiny.py's `init_weights`), tokenizer, image processor and generation config."""
    tokenizer = build_tiny_qwen_tokenizer()
    config = tiny_qwen_config(tokenizer)
    model = Qwen2_5_VLForConditionalGeneration(config)
    init_weights(model)
    never_generate(model, [config.image_token_id, config.video_token_id, tokenizer.pad_token_id])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    Qwen2VLImageProcessorPil().save_pretrained(out_dir)  # the family applies the evaluation's pixel bounds
    # What Qwen2_5_VLProcessor.save_pretrained writes (it cannot run here: its video processor needs torchvision).
    (out_dir / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}, indent=2))
