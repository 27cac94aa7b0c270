"""Predictions on disk: append-only JSON Lines, flushed and fsynced per batch, so a run killed at any moment resumes.

Each task × schedule has one merged file `predictions/<task>/<label>.jsonl`; while a run is in progress each
process appends to its own shard `<label>.rank<r>.jsonl`. Readers take every file of a task × schedule, skip a
torn last line, and keep the first record per id, so a crash between merging and removing shards duplicates
nothing. Every other output (metrics.json, run.json, results.xlsx, report.md/html, PNGs) goes through
`atomic_path`: a kill or a full disk leaves the previous complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pdrop_eval.errors import PdropEvalError


def predictions_dir(run_dir: Path, task: str) -> Path:
    return run_dir / "predictions" / task


def merged_path(run_dir: Path, task: str, label: str) -> Path:
    return predictions_dir(run_dir, task) / f"{label}.jsonl"


def shard_path(run_dir: Path, task: str, label: str, rank: int) -> Path:
    return predictions_dir(run_dir, task) / f"{label}.rank{rank}.jsonl"


def _files_for(run_dir: Path, task: str, label: str) -> list[Path]:
    directory = predictions_dir(run_dir, task)
    merged = merged_path(run_dir, task, label)
    shards = sorted(directory.glob(f"{label}.rank*.jsonl")) if directory.is_dir() else []
    return ([merged] if merged.exists() else []) + shards


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete records of one file; a last line without its newline is a write the process did not finish."""
    records = []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise PdropEvalError(
                f"{path} line {number} is not valid JSON ({error.msg}); the file was edited or corrupted: "
                "remove that line to resume, or rerun with --overwrite"
            ) from error
    return records


def read_predictions(run_dir: Path, task: str, label: str) -> dict[str, dict[str, Any]]:
    """Every finished record of a task × schedule, keyed by the id as a string (first occurrence wins)."""
    records: dict[str, dict[str, Any]] = {}
    for path in _files_for(run_dir, task, label):
        for record in _read_lines(path):
            records.setdefault(str(record["id"]), record)
    return records


class ShardWriter:
    """Appends records for one task × schedule from one process; each `append` is durable when it returns."""

    def __init__(self, run_dir: Path, task: str, label: str, rank: int):
        self.path = shard_path(run_dir, task, label, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        """Drop a half-written last line left by a killed run, so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(keep)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(record, ensure_ascii=False, default=_plain) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


def _plain(value: Any) -> Any:
    """numpy scalars (from pandas-read data) as Python numbers, other containers as lists."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a prediction record")


def merge_shards(
    run_dir: Path,
    task: str,
    label: str,
    order: Sequence[str],
    refresh: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One merged file in sample order from all shards, each record passed through `refresh` (re-scoring) first;
    shards are removed only after the merge is on disk."""
    records = read_predictions(run_dir, task, label)
    known = set(order)
    ordered = [records[key] for key in order if key in records]
    ordered += [record for key, record in records.items() if key not in known]
    if refresh is not None:
        ordered = [refresh(record) for record in ordered]
    target = merged_path(run_dir, task, label)
    write_text_atomic(target, "".join(json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for r in ordered))
    for shard in _files_for(run_dir, task, label):
        if shard != target:
            shard.unlink()
    return ordered


# `.<name>.<pid>.tmp<suffix>`: hidden, owned by one process, and ending in the real suffix so writers that pick a
# format from the file name (matplotlib, PIL, pandas) write the right one.
_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp(\.[^.]+)?$")
# Where outputs are written inside a run folder (or a report's --out folder), for `remove_stale_temporaries`.
_OUTPUT_FOLDERS = ("", "report_files", "predictions/*", "samples/*", "vlmeval/*/*")


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for any writer that takes a file name; when the block ends it is fsynced and
    renamed over `path`, so readers (and the next run) see the previous complete file or the new one, never half.

    On any failure, a full disk or Ctrl-C included, the temporary is removed; an OSError becomes one error line
    saying the previous file is kept.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise PdropEvalError(
                f"cannot write {path} ({error.strerror or error}): free some space or fix the folder's permissions "
                "and rerun; the previous copy, if any, is kept"
            ) from error
        raise
    _fsync_folder(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a directory, and then the rename must do."""
    try:
        _fsync(folder)
    except OSError:
        pass


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Temporaries a killed writer (SIGKILL, power loss) left in `folder`'s output folders; call only while holding
    the folder's lock, when no other writer can own one."""
    removed = []
    for pattern in _OUTPUT_FOLDERS:
        for parent in folder.glob(pattern) if pattern else [folder]:
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if _TEMPORARY.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
