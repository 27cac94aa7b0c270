"""Original-format checkpoints converted on load: where the HF-format copy is cached and when it must be rebuilt.

The cache directory's name carries a digest of everything the conversion reads (the checkpoint's files and the CLIP
tower's files, see fingerprint.py) and of what writes it (converter and transformers versions), so any change to a
source leads to a new directory and a fresh conversion instead of the old weights. Once the new conversion is in
place, the ones it replaces (same checkpoint and tower paths, same versions, older content) are deleted: at 14 GB
each they would otherwise pile up with every re-save.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import transformers

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.cache import build_once, cache_root
from pdrop_eval.models.fingerprint import directory_fingerprint
from pdrop_eval.models.locate import find_local, missing_message
from pdrop_eval.models.original import CONVERTER_VERSION, convert_original

MANIFEST = "pdrop_eval_source.json"


def hf_format_dir(src: Path, raw_config: dict, vision_tower: str | None = None) -> Path:
    """The HF-format copy of original checkpoint `src`: cached, converted now, or refused with the command to run."""
    tower_name = vision_tower or raw_config.get("mm_vision_tower")
    tower_dir = find_local(tower_name) if tower_name else None
    if tower_dir is None:
        raise PdropEvalError(
            f"{src} is an original-format LLaVA checkpoint; converting it needs its CLIP vision tower "
            f"{tower_name!r}, which is not available offline ({missing_message(str(tower_name), 'vision tower')}) "
            f"Then pass load_vlm(..., vision_tower=PATH_TO_CLIP), or convert once with: "
            f"python -m pdrop_eval.models.convert {src} --vision-tower PATH_TO_CLIP --out DIR and load DIR"
        )
    target = converted_cache_dir(src, tower_dir)
    if target.is_dir():
        return target
    identity = _identity(src, tower_dir)

    def build(staging: Path) -> None:
        convert_original(src, tower_dir, staging)
        (staging / MANIFEST).write_text(json.dumps(identity))

    build_once(target, build)
    _remove_replaced(target, identity)
    return target


def converted_cache_dir(src: Path, tower_dir: Path) -> Path:
    """Where the conversion of `src` with CLIP tower `tower_dir` is cached, named by a digest of both contents."""
    key = [_identity(src, tower_dir), directory_fingerprint(src), directory_fingerprint(tower_dir)]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    return cache_root() / "converted" / f"{src.resolve().name}-{digest}"


def _identity(src: Path, tower_dir: Path) -> dict:
    """What a conversion was made from and by, short of file contents: equal identities mean one replaces the other."""
    return {
        "checkpoint": str(src.resolve()),
        "vision_tower": str(tower_dir.resolve()),
        "converter": CONVERTER_VERSION,
        "transformers": transformers.__version__,
    }


def _remove_replaced(target: Path, identity: dict) -> None:
    """Delete earlier conversions of the same sources; staging directories (dot names) are another build's, kept."""
    for other in target.parent.iterdir():
        if other == target or other.name.startswith(".") or not (other / MANIFEST).is_file():
            continue
        try:
            replaced = json.loads((other / MANIFEST).read_text()) == identity
        except (OSError, ValueError):
            continue
        if replaced:
            shutil.rmtree(other, ignore_errors=True)
