"""The model's depth and image-token count read from its config.json, so a budget that a method cannot reach is
refused before gigabytes of weights load (the same geometry once the model is loaded, from its config).

Only HF-format LLaVA / LLaVA-NeXT / LLaVA-OneVision configs are read; an original-format checkpoint (converted on
load) or a config
transformers cannot parse gives None, and budgets are then checked right after loading instead.
"""

from __future__ import annotations

import json

from transformers import PretrainedConfig

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.budgets import ModelGeometry

_KINDS = ("llava", "llava_next", "llava_onevision")


def read_model_geometry(name_or_path: str) -> ModelGeometry | None:
    """The geometry of a local HF-format LLaVA / LLaVA-NeXT checkpoint from its config.json; None where it cannot
    be read before loading (load_vlm then names the problem, or budgets are checked once the model is loaded)."""
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
    return llava_geometry(config)


def llava_geometry(config: PretrainedConfig) -> ModelGeometry:
    """Depth, heads and the image tokens budgets are a share of: LLaVA-1.5's patches per image (plus CLS under the
    "full" strategy, as pdrop_eval.models.loading counts them); LLaVA-NeXT's crops × patches per crop, the crops
    being the base view plus the tiles of its largest grid pinpoint (5 × 576 = 2880 for LLaVA-1.6: the count its
    pruning papers give budgets of, newline tokens and unpadding left out)."""
    layers = int(config.text_config.num_hidden_layers)
    heads = int(config.text_config.num_attention_heads)
    if config.model_type == "llava_onevision":  # SigLIP tiles: no CLS token, counts vary with the image
        return ModelGeometry(
            num_layers=layers,
            image_tokens=None,
            anyres=True,
            num_heads=heads,
            cls_token=False,
            tiling=config.model_type,
        )
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    per_crop = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
    if config.model_type != "llava_next":
        return ModelGeometry(layers, per_crop, num_heads=heads)
    tiles = max(
        (height // vision.image_size) * (width // vision.image_size) for height, width in config.image_grid_pinpoints
    )
    crops = 1 + tiles
    return ModelGeometry(layers, crops * per_crop, anyres=True, num_heads=heads, crops=crops, tiling="llava_next")
