"""The model's depth and image-token count read from its config.json, so a budget that a method cannot reach is
refused before gigabytes of weights load.

Only HF-format LLaVA / LLaVA-NeXT / LLaVA-OneVision configs are read; an original-format checkpoint (converted on load) or a config
transformers cannot parse gives None, and budgets are then checked right after loading instead.
"""

from __future__ import annotations

import json

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.budgets import ModelGeometry

_KINDS = ("llava", "llava_next", "llava_onevision")


def read_model_geometry(name_or_path: str) -> ModelGeometry | None:
    """Depth and, for LLaVA-1.5, the fixed image tokens per image (patches, plus CLS under the "full" strategy, as
    pdrop_eval.models.loading counts them); LLaVA-NeXT's count depends on each image's size (None here)."""
    from transformers import AutoConfig

    from pdrop_eval.models.locate import model_dir

    try:
        path = model_dir(name_or_path)
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (PdropEvalError, OSError, ValueError):
        return None  # load_vlm names the problem with its own line
    if not isinstance(raw, dict) or raw.get("model_type") not in _KINDS:
        return None
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    layers = int(config.text_config.num_hidden_layers)
    heads = int(config.text_config.num_attention_heads)
    if config.model_type == "llava_next":
        return ModelGeometry(num_layers=layers, image_tokens=None, anyres=True, num_heads=heads)
    if config.model_type == "llava_onevision":  # SigLIP tiles: no CLS token, counts vary with the image
        return ModelGeometry(num_layers=layers, image_tokens=None, anyres=True, num_heads=heads, cls_token=False)
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    full = 1 if config.vision_feature_select_strategy == "full" else 0
    return ModelGeometry(layers, patches + full, num_heads=heads)
