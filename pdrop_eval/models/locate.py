"""Find a model directory offline: a tiny model name, a local path, or a Hugging Face id already in the HF cache.

Nothing is ever downloaded; when a model is missing the error lists every place looked at and how to get it.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.tiny import TINY_MODELS, is_tiny_name, tiny_model_dir

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hf_cache_dir(repo_id: str) -> Path:
    """The directory the HF hub would cache `repo_id` in (`$HF_HUB_CACHE/models--org--name`)."""
    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name))


def find_local(name_or_path: str) -> Path | None:
    """The local directory for a path or a cached HF id, or None; never touches the network."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if looks_like_repo_id(name_or_path) and not path.exists():
        try:
            return Path(snapshot_download(name_or_path, local_files_only=True))
        except LocalEntryNotFoundError:
            return None
    return None


def model_dir(name_or_path: str) -> Path:
    """The directory holding the model's files; tiny models are built on first use."""
    if is_tiny_name(name_or_path):
        return tiny_model_dir(name_or_path)
    found = find_local(name_or_path)
    if found is not None:
        return found
    raise PdropEvalError(missing_message(name_or_path, "model"))


def missing_message(name_or_path: str, what: str) -> str:
    """One message naming every place looked at and the ways to make the model available."""
    looked = [f"local directory {Path(name_or_path).expanduser().resolve()} (not found)"]
    fixes = ["pass the path of a local model directory"]
    if looks_like_repo_id(name_or_path):
        looked.append(f"Hugging Face cache {hf_cache_dir(name_or_path)} (not downloaded)")
        fixes.insert(
            0,
            f"on a machine with network run `huggingface-cli download {name_or_path}` (or `hf download "
            f"{name_or_path}`) and copy the cache here, or point HF_HOME/HF_HUB_CACHE at a cache that has it",
        )
    if what == "model":
        fixes.append(f"or use a tiny random test model: {', '.join(TINY_MODELS)}")
    return f"{what} {name_or_path!r} not found offline. Looked in: {'; '.join(looked)}. To fix: {'; '.join(fixes)}."
