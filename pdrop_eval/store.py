"""Predictions on disk: append-only JSON Lines, flushed and fsynced per batch, so a run killed at any moment resumes.

Each task × schedule has one merged file `predictions/<task>/<label>.jsonl`; while a run is in progress each
process appends to its own shard `<label>.rank<r>.jsonl`. Readers take every file of a task × schedule, skip a
torn last line, and keep one record per id, so a crash between merging and removing shards duplicates nothing.
A record whose sample failed (its `failed` field gives the reason) is retried by the next run, and the retry's
record replaces it; two records of one id with different predictions mean the files were mixed up or edited, and
are refused rather than resolved silently. Every other output (metrics.json, run.json, results.xlsx,
report.md/html, PNGs) goes through `atomic_path`: a kill or a full disk leaves the previous complete file, never a
torn one. A full disk is one error line: what was fsynced stays, and the next run resumes from it.
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


def _damaged(path: Path, number: int, problem: str) -> PdropEvalError:
    return PdropEvalError(
        f"{path} line {number} {problem}; the file was edited or corrupted: remove that line to resume, "
        "or rerun with --overwrite"
    )


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete records of one file; a last line without its newline is a write the process did not finish."""
    records = []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise _damaged(path, number, f"is not UTF-8 text ({error.reason})") from error
        except json.JSONDecodeError as error:
            raise _damaged(path, number, f"is not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or "id" not in record:
            raise _damaged(path, number, "is not a prediction record (a JSON object with an `id`)")
        records.append(record)
    return records


def is_failed(record: dict[str, Any]) -> bool:
    """Whether the record stands for a sample whose input could not be used (see `SampleError`)."""
    return bool(record.get("failed"))


def read_predictions(run_dir: Path, task: str, label: str) -> dict[str, dict[str, Any]]:
    """Every finished record of a task × schedule, keyed by the id as a string.

    A record of a sample that ran wins over a failed one; between two failed ones the later (the latest reason)
    wins; two that ran must agree on the prediction (a merge interrupted before removing its shards repeats
    records exactly), else the files hold two different answers for one sample and no rule can pick one."""
    records: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for path in _files_for(run_dir, task, label):
        for record in _read_lines(path):
            key = str(record["id"])
            before = records.get(key)
            if before is None or is_failed(before):
                records[key], origin[key] = record, path
            elif not is_failed(record) and record.get("prediction") != before.get("prediction"):
                raise PdropEvalError(
                    f"sample {key!r} of {task} / {label} has two different predictions ({origin[key]} and {path}): "
                    "predictions of different runs were mixed; keep only one of them, or rerun with --overwrite"
                )
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
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            # A partial write leaves a torn last line, which readers skip and the next writer cuts off.
            raise write_error(self.path, error) from error


def write_error(path: Path, error: OSError) -> PdropEvalError:
    """A failed write (a full disk, a lost mount) as one line: the previous copy of an output and every fsynced
    prediction are safe, so say so."""
    return PdropEvalError(
        f"cannot write {path} ({error.strerror or error}): free space or fix the output folder, then rerun the "
        "same command; the previous copy, if any, is kept, as are the predictions written before this"
    )


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
_OUTPUT_FOLDERS = ("", "report_files", "predictions/*", "samples/*", "vlmeval/*/*", "batch_effect/*")


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
            raise write_error(path, error) from error
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
