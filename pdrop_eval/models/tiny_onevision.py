"""The tiny random LLaVA-OneVision, written as a real HF model directory (config, safetensors, tokenizer, image
processor and processor configs) and loaded back through `load_vlm` like llava-hf/llava-onevision-qwen2-7b-ov-hf.

It keeps what matters to pruning on this family: a SigLIP tower (no CLS token, no head, every patch a feature),
`anyres_max_9` tiling with a newline token per row and the bilinear downsizing of grids above nine tiles' worth of
features, a Qwen2 decoder with GQA and q/k/v biases, 32 layers. It shrinks the rest: 56 px tiles of 14 px patches
(16 features per tile instead of 729) and grid pinpoints of 1 to 4 tiles a side (instead of 1 to 6), so a
224 × 224 grid gives 16 × 16 features, more than 1.1² × 9 × 16, and is downsized to 12 × 12 as the 7B's largest
grids are. The tokenizer is byte-level BPE like Qwen2's (no BOS, `<|im_end|>` ends a turn), trained offline on
tiny_tokenizer.py's corpus plus the qwen_1_5 conversation's own text; weights follow tiny.py's seeded initialisation.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    GenerationConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    PreTrainedTokenizerBase,
    Qwen2Tokenizer,
)

from pdrop_eval.models.tiny_tokenizer import VOCAB_SIZE, training_corpus

TILE = 56
PATCH = 14
GRID_PINPOINTS = tuple((rows * TILE, cols * TILE) for rows in range(1, 5) for cols in range(1, 5))
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)  # SigLIP's normalisation (llava-hf OV's preprocessor_config.json)
END_OF_TEXT = "<|endoftext|>"
ADDED_TOKENS = ("<|im_start|>", "<|im_end|>", "<image>", "<video>")
_CHAT_TEXT = ("<|im_start|>system", "You are a helpful assistant.", "<|im_start|>user", "<|im_start|>assistant")


def build_tiny_onevision_tokenizer() -> PreTrainedTokenizerBase:
    """Byte-level BPE wrapped as transformers' Qwen2Tokenizer, with Qwen2-Instruct's specials and llava-hf's
    `<image>`/`<video>` added after them, as the OV conversion adds them."""
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    trained.train_from_iterator([*training_corpus(), *_CHAT_TEXT], trainer)
    spec = json.loads(trained.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=spec["vocab"], merges=merges, unk_token=None, bos_token=None, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS], special_tokens=True)
    tokenizer.eos_token = "<|im_end|>"  # Qwen2-Instruct's tokenizer_config: a reply ends at <|im_end|>
    return tokenizer


def tiny_onevision_config(tokenizer: PreTrainedTokenizerBase) -> LlavaOnevisionConfig:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ADDED_TOKENS}
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": TILE,
        "patch_size": PATCH,
        "vision_use_head": False,
    }
    return LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[list(p) for p in GRID_PINPOINTS],
        tie_word_embeddings=False,
    )


def tiny_onevision_image_processor() -> LlavaOnevisionImageProcessorPil:
    return LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE},
        image_grid_pinpoints=[list(p) for p in GRID_PINPOINTS],
        image_mean=list(SIGLIP_MEAN_STD),
        image_std=list(SIGLIP_MEAN_STD),
    )


def write_tiny_onevision(out_dir: Path, init_weights, never_generate) -> None:
    """Config, weights (drawn by tiny.py's `init_weights`), tokenizer, processor configs and generation config."""
    tokenizer = build_tiny_onevision_tokenizer()
    config = tiny_onevision_config(tokenizer)
    model = LlavaOnevisionForConditionalGeneration(config)
    init_weights(model)
    never_generate(model, [config.image_token_id, config.video_token_id, tokenizer.pad_token_id])
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tiny_onevision_image_processor().save_pretrained(out_dir)
    # What LlavaOnevisionProcessor.save_pretrained writes (its video processor needs torchvision, absent here).
    processor = {
        "processor_class": "LlavaOnevisionProcessor",
        "num_image_tokens": (TILE // PATCH) ** 2,
        "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": "anyres_max_9",
    }
    (out_dir / "processor_config.json").write_text(json.dumps(processor, indent=2))
