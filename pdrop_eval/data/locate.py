"""Finding a source's files on disk, and naming every place they were looked for when they are not there."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdrop_eval.data.formats import Format
from pdrop_eval.data.hf import HFSplit, HFTable


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


def _source_splits(options: Mapping[str, Any]) -> list[str | None]:
    """The splits a source reads: the card's `splits` list (a table spread over several splits), else its `split`."""
    if options.get("splits"):
        return [str(split) for split in options["splits"]]
    split = options.get("split")
    return [None if split is None else str(split)]


def _config_of(pattern: str, options: Mapping[str, Any]) -> str:
    """The HF config a file pattern belongs to: the card's `config`, else the pattern's first folder (the hub keeps
    a named config's shards in `<config>/`), else `default` (shards in `data/` or at the repo root)."""
    if options.get("config"):
        return str(options["config"])
    folder = pattern.split("/", 1)[0] if "/" in pattern else ""
    return folder if folder not in ("", "data") else "default"


def _disk_candidates(base: Path, pattern: str, config: str) -> list[Path]:
    """Where a save_to_disk copy of this config may sit: `<repo>/<config>/` (`Full/`, `default/`), the pattern's
    own folder (`data/`, `en/`), or the repo folder itself."""
    folder = pattern.split("/", 1)[0] if "/" in pattern else ""
    names = [config] + ([folder] if folder and folder != config else [])
    return [base / name for name in names] + [base]


def _saved_config(folder: Path) -> str | None:
    """The config name `datasets` recorded when the copy was loaded from the hub (dataset_info.json), if any."""
    try:
        return json.loads((folder / "dataset_info.json").read_text(encoding="utf-8")).get("config_name")
    except (OSError, ValueError, AttributeError):
        return None


def _saved_splits(folder: Path, splits: list[str | None], config: str, at_root: bool) -> tuple[HFSplit, ...] | None:
    """The wanted splits in a save_to_disk folder. A copy at the repo root could be any of the repo's configs
    (lmms-lab/DocVQA's two configs both have `validation`), so there the config `datasets` recorded must match."""

    def config_matches(split_folder: Path) -> bool:
        return not at_root or _saved_config(split_folder) in (None, config)

    if (folder / "dataset_dict.json").is_file():
        wanted = [split for split in splits if split is not None]
        if len(wanted) != len(splits) or not all((folder / split).is_dir() for split in wanted):
            return None
        if not all(config_matches(folder / split) for split in wanted):
            return None
        return tuple(HFSplit(split, disk_dir=folder) for split in wanted)
    if (folder / "state.json").is_file() and len(splits) == 1 and config_matches(folder):
        return (HFSplit(None, disk_dir=folder),)
    return None


def _parquet_split(base: Path, pattern: str, split: str | None) -> HFSplit | None:
    shards = sorted(base.glob(pattern.replace("{split}", split or "")))
    return HFSplit(split, parquet_files=tuple(shards)) if shards else None


def _hf_table(base: Path, pattern: str, options: Mapping[str, Any]) -> HFTable | None:
    splits = _source_splits(options)
    parts = [_parquet_split(base, pattern, split) for split in splits]
    if all(parts):
        return HFTable(splits=tuple(parts))
    config = _config_of(pattern, options)
    for folder in _disk_candidates(base, pattern, config):
        saved = _saved_splits(folder, splits, config, at_root=folder == base)
        if saved:
            return HFTable(splits=saved)
    return None


def _locate_hf(files: Mapping[str, str], options: Mapping[str, Any], where: DataLocations) -> Located:
    for base in _hf_bases(options["repo"], where):
        tables = {role: _hf_table(base, pattern, options) for role, pattern in files.items()}
        if all(tables.values()):
            return Located(paths=tables, expected=[], where=str(base))
    local = where.data_root / "hf" / options["repo"]
    owner, _, name = str(options["repo"]).partition("/")
    cache = where.hf_cache / f"datasets--{owner}--{name}" / "snapshots" / "*"
    splits = [split for split in _source_splits(options) if split is not None]
    with_splits = f" for split(s) {', '.join(splits)}" if "{split}" in "".join(files.values()) else ""
    expected = []
    for pattern in files.values():
        config = _config_of(pattern, options)
        disk = " or ".join(str(folder) for folder in _disk_candidates(local, pattern, config))
        saved = f"a save_to_disk copy of config {config!r} with split(s) {', '.join(splits) or '(one)'}"
        expected.append(f"{local / pattern}{with_splits} (or {saved}: {disk})")
        expected.append(str(cache / pattern))
    return Located(paths=None, expected=expected)
