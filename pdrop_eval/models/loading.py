"""`load_vlm`: one call from a name or path to a ready-to-run LLaVA / LLaVA-NeXT model, offline and safely.

Only safetensors weights and no remote code are loaded, so evaluating a downloaded checkpoint cannot execute
code from it. Checkpoints in the original LLaVA repository format are converted to HF format on the way in.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    CLIPImageProcessorPil,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    PretrainedConfig,
)

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.converted_cache import hf_format_dir
from pdrop_eval.models.images import mean_color
from pdrop_eval.models.loaded import LoadedVLM, VLMKind
from pdrop_eval.models.locate import model_dir
from pdrop_eval.models.original import is_original_llava_config
from pdrop_eval.models.tokenizer_files import load_tokenizer

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "auto": "auto",
}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
_MODEL_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
_IMAGE_PROCESSORS = {"llava": CLIPImageProcessorPil, "llava_next": LlavaNextImageProcessorPil}


def load_vlm(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    attn: str = "sdpa",
    template: str | None = None,
    vision_tower: str | None = None,
) -> LoadedVLM:
    """Load a LLaVA-1.5 or LLaVA-NeXT model (HF or original LLaVA format) with its tokenizer and image processor.

    `template` overrides the prompt template chosen from the language model; `vision_tower` names the CLIP
    checkpoint (path or cached HF id) an original-format checkpoint needs, when its config's name is not local.
    """
    torch_dtype = _parse_dtype(dtype)
    _check_attn(attn, device, torch_dtype)
    path = model_dir(name_or_path)
    raw_config = _read_config(path)
    if is_original_llava_config(raw_config):
        path = hf_format_dir(path, raw_config, vision_tower)
        raw_config = _read_config(path)
    kind = _kind(raw_config, path)

    try:
        model = _MODEL_CLASSES[kind].from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn, local_files_only=True, use_safetensors=True
        )
        tokenizer = load_tokenizer(path)
        image_processor = _IMAGE_PROCESSORS[kind].from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, SafetensorError) as error:
        # SafetensorError: a truncated or damaged weights file (an interrupted download or copy).
        raise PdropEvalError(f"could not load the model in {path}: {error}. {_weights_hint(path)}") from error
    model = model.to(torch.device(device)).eval()

    config = model.config
    eos = _eos_token_ids(tokenizer, model)
    return LoadedVLM(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        kind=kind,
        image_token_id=int(config.image_token_id),
        image_tokens_per_image=_fixed_image_tokens(config) if kind == "llava" else None,
        pad_color=mean_color(image_processor.image_mean) if kind == "llava" else None,
        template=template or _default_template(config),
        name=name_or_path,
        path=path,
        dtype=model.dtype,
        device=model.device,
        attn=attn,
        eos_token_ids=eos,
        pad_token_id=_pad_token_id(tokenizer, model, eos),
    )


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise PdropEvalError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _check_attn(attn: str, device: str, dtype: torch.dtype | str) -> None:
    if attn not in ATTN_IMPLEMENTATIONS:
        raise PdropEvalError(
            f"unknown attention implementation {attn!r}; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    if attn != "flash_attention_2":
        return
    if importlib.util.find_spec("flash_attn") is None:
        raise PdropEvalError(
            "attn='flash_attention_2' needs the flash-attn package, which is not installed: "
            "`pip install flash-attn --no-build-isolation` on a CUDA machine, or use attn='sdpa'"
        )
    if not str(device).startswith("cuda"):
        raise PdropEvalError(f"attn='flash_attention_2' runs on CUDA only, not on device {device!r}; use attn='sdpa'")
    if dtype == torch.float32:
        raise PdropEvalError("attn='flash_attention_2' needs dtype float16 or bfloat16, not float32")


def _read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PdropEvalError(f"{path} has no config.json: it is not a model directory")
    try:
        return json.loads(config_file.read_text())
    except ValueError as error:
        raise PdropEvalError(
            f"{config_file} is not valid JSON ({error}): the download is incomplete or corrupt"
        ) from error


def _kind(raw_config: dict, path: Path) -> VLMKind:
    model_type = raw_config.get("model_type")
    if model_type not in _MODEL_CLASSES:
        raise PdropEvalError(
            f"{path} holds a {model_type!r} model; supported: LLaVA-1.5 ('llava', LlavaForConditionalGeneration) and "
            "LLaVA-NeXT ('llava_next', LlavaNextForConditionalGeneration) in HF format, or original LLaVA checkpoints"
        )
    return model_type


def _fixed_image_tokens(config: PretrainedConfig) -> int:
    """Patches per image, plus the CLS token when the "full" feature strategy keeps it (576 for LLaVA-1.5)."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def _default_template(config: PretrainedConfig) -> str:
    return "mistral_instruct" if config.text_config.model_type == "mistral" else "vicuna_v1"


def _eos_token_ids(tokenizer, model) -> tuple[int, ...]:
    """The tokenizer's EOS plus every EOS the generation config lists, without duplicates, tokenizer first."""
    ids: list[int] = []
    generation_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    for value in (tokenizer.eos_token_id, generation_eos):
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id is not None and int(token_id) not in ids:
                ids.append(int(token_id))
    if not ids:
        raise PdropEvalError("the model defines no end-of-sequence token (neither tokenizer nor generation config)")
    return tuple(ids)


def _pad_token_id(tokenizer, model, eos: tuple[int, ...]) -> int:
    """Left padding is masked out, so any id works; prefer the model's own pad token, else its EOS."""
    for candidate in (tokenizer.pad_token_id, getattr(model.generation_config, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return eos[0]


def _weights_hint(path: Path) -> str:
    if any(path.glob("*.bin")) and not any(path.glob("*.safetensors")):
        return (
            "Only safetensors weights are loaded (pickled .bin files can run code); this directory has only .bin "
            "files: download the safetensors files of the model, or re-save it with safetensors in a trusted setting."
        )
    return "Check that the directory holds a complete HF model (config, safetensors weights, tokenizer, processor)."
