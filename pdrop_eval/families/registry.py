"""Every model family by name, and the look-ups that pick one for a checkpoint or a loaded model."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.base import ModelFamily
from pdrop_eval.families.llava import LlavaFamily
from pdrop_eval.families.llava_onevision import LlavaOnevisionFamily
from pdrop_eval.families.qwen2_5_vl import Qwen25VLFamily

FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (LlavaFamily(), Qwen25VLFamily(), LlavaOnevisionFamily())
}


def family_for_config(raw_config: dict, path: Path) -> ModelFamily:
    """The family whose checkpoints look like `raw_config` (a model directory's parsed config.json)."""
    for family in FAMILIES.values():
        if family.claims(raw_config):
            return family
    supported = "; ".join(family.description for family in FAMILIES.values())
    raise PdropEvalError(f"{path} holds a {raw_config.get('model_type')!r} model; supported: {supported}")


def family_for_model(name_or_path: str) -> ModelFamily | None:
    """The family of a model named on the command line, from its config.json alone (no weights load); None when
    the config cannot be read, which loading then reports in its own words."""
    from pdrop_eval.models.locate import model_dir

    try:
        path = model_dir(name_or_path)
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return family_for_config(raw, path) if isinstance(raw, dict) else None
    except (PdropEvalError, OSError, ValueError):
        return None


def family_of(model: nn.Module) -> ModelFamily:
    """The family of a loaded HF model, from its config's model_type."""
    model_type = getattr(model.config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise PdropEvalError(f"{type(model).__name__} (model_type {model_type!r}) belongs to no registered model family")
