"""Finding a source's files on disk, and naming every place they were looked for when they are not there."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdrop_eval.data.formats import Format
from pdrop_eval.data.hf import HFTable


@dataclass(frozen=True)
class DataLocations:
    """The roots data is searched under; `from_env` fills what the caller leaves out."""

    data_root: Path
    lmu_data: Path
    hf_cache: Path

    @classmethod
    def from_env(
        cls, data_root: str | Path | None = None, lmu_data: str | Path | None = None,
        hf_cache: str | Path | None = None,
    ) -> DataLocations:
        """data_root: argument, $PDROP_DATA, ./data. lmu_data: argument, $LMUData, ~/LMUData.
        hf_cache: argument, $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub."""
        hf_home = os.environ.get("HF_HOME")
        default_cache = Path(hf_home) / "hub" if hf_home else Path("~/.cache/huggingface/hub")
        return cls(
            data_root=Path(data_root or os.environ.get("PDROP_DATA") or "data").expanduser(),
            lmu_data=Path(lmu_data or os.environ.get("LMUData") or "~/LMUData").expanduser(),
            hf_cache=Path(hf_cache or os.environ.get("HF_HUB_CACHE") or default_cache).expanduser(),
        )


@dataclass(frozen=True)
class Located:
    """The outcome of looking for one source: `paths` when every file was found, and always `expected`."""

    paths: dict[str, Any] | None
    expected: list[str]
    where: str = ""


def locate(fmt: Format, files: Mapping[str, str], options: Mapping[str, Any], where: DataLocations) -> Located:
    if fmt.location == "generated":
        return Located(paths={}, expected=[], where="generated on the fly")
    if fmt.location == "hf":
        return _locate_hf(files, options, where)
    root = where.data_root if fmt.location == "data_root" else where.lmu_data
    paths = {role: root / relative for role, relative in files.items()}
    if all(path.exists() for path in paths.values()):
        return Located(paths=paths, expected=[str(path) for path in paths.values()], where=str(root))
    return Located(paths=None, expected=[f"{path}{'' if path.exists() else ' (missing)'}" for path in paths.values()])


def _hf_bases(repo: str, where: DataLocations) -> list[Path]:
    owner, _, name = repo.partition("/")
    snapshots = where.hf_cache / f"datasets--{owner}--{name}" / "snapshots"
    cached = sorted(snapshots.iterdir(), key=lambda path: path.stat().st_mtime, reverse=True) \
        if snapshots.is_dir() else []
    return [where.data_root / "hf" / repo, *cached]


def _disk_candidates(base: Path, pattern: str) -> list[Path]:
    config = pattern.split("/", 1)[0] if "/" in pattern else ""
    return [base / config] + ([base] if config in ("", "data") else [])


def _hf_table(base: Path, pattern: str, split: str | None) -> HFTable | None:
    shards = sorted(base.glob(pattern))
    if shards:
        return HFTable(parquet_files=tuple(shards))
    for folder in _disk_candidates(base, pattern):
        if (folder / "dataset_dict.json").is_file() and (folder / str(split)).is_dir():
            return HFTable(disk_dir=folder, split=split)
        if (folder / "state.json").is_file():
            return HFTable(disk_dir=folder)
    return None


def _locate_hf(files: Mapping[str, str], options: Mapping[str, Any], where: DataLocations) -> Located:
    repo, split = options["repo"], options.get("split")
    for base in _hf_bases(repo, where):
        tables = {role: _hf_table(base, pattern, split) for role, pattern in files.items()}
        if all(tables.values()):
            return Located(paths=tables, expected=[], where=str(base))
    local = where.data_root / "hf" / repo
    owner, _, name = repo.partition("/")
    cache = where.hf_cache / f"datasets--{owner}--{name}" / "snapshots" / "*"
    expected = []
    for pattern in files.values():
        disk = " or ".join(str(folder) for folder in _disk_candidates(local, pattern))
        expected.append(f"{local / pattern} (or a save_to_disk folder: {disk})")
        expected.append(str(cache / pattern))
    return Located(paths=None, expected=expected)
