"""Where built and converted models live, and how a directory gets there without races.

Several processes (pytest workers, torchrun ranks) may ask for the same tiny model at once; each builds into its
own temporary directory next to the target and renames it into place, so a reader never sees a half-written
model and the loser of the race simply uses the winner's copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "PDROP_EVAL_CACHE"


def cache_root() -> Path:
    """`$PDROP_EVAL_CACHE`, else `~/.cache/pdrop_eval`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "pdrop_eval"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first filling it with `build(tmp_dir)` and an atomic rename if it does not exist yet."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
