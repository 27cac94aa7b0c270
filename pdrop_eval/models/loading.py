"""`load_vlm`: one call from a name or path to a ready-to-run VLM of a registered family, offline and safely.

Only safetensors weights and no remote code are loaded, so evaluating a downloaded checkpoint cannot execute
code from it. The family (pdrop_eval.families) is chosen from config.json; it may convert another checkpoint
format first (LLaVA's original repository format).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors import SafetensorError

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.locate import model_dir
from pdrop_eval.models.tokenizer_files import load_tokenizer

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "auto": "auto",
}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def load_vlm(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    attn: str = "sdpa",
    template: str | None = None,
    vision_tower: str | None = None,
) -> LoadedVLM:
    """Load a model of a registered family (LLaVA-1.5 or LLaVA-NeXT, HF or original LLaVA format) with its tokenizer
    and image processor.

    `template` overrides the prompt template chosen from the language model; `vision_tower` names the CLIP
    checkpoint (path or cached HF id) an original-format checkpoint needs, when its config's name is not local.
    """
    from pdrop_eval.families.registry import family_for_config  # here: the families import pdrop_eval.models

    torch_dtype = _parse_dtype(dtype)
    _check_attn(attn, device, torch_dtype)
    path = model_dir(name_or_path)
    raw_config = _read_config(path)
    family = family_for_config(raw_config, path)
    converted = family.hf_format_dir(path, raw_config, vision_tower)
    if converted != path:
        path, raw_config = converted, _read_config(converted)
    kind = raw_config["model_type"]

    try:
        model = family.load_model(path, kind, torch_dtype, attn)
        tokenizer = load_tokenizer(path)
        image_processor = family.load_image_processor(path, kind)
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
        family=family,
        kind=kind,
        image_token_id=int(config.image_token_id),
        image_tokens_per_image=family.fixed_image_tokens(kind, config),
        pad_color=family.pad_color(kind, image_processor),
        template=template or family.default_template(config),
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
