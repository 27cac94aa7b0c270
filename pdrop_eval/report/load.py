"""Read a run directory's metrics.json and check its shape before anything is drawn from it.

Reports are rebuilt from disk long after the run (and merged across runs written by other machines), so a
truncated or hand-edited file must fail here with the file and the broken field named, not as a KeyError deep in
pandas or openpyxl.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdrop_eval.errors import PdropEvalError

METRICS_FILE = "metrics.json"

# (field, expected type) for every result row; the rest of a row is optional and read with .get.
_RESULT_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("task", str),
    ("schedule", dict),
    ("metrics", dict),
    ("primary_metric", str),
)
_SCHEDULE_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("label", str),
    ("method", str),
    ("layers", list),
    ("ratios", list),
)


@dataclass(frozen=True)
class Run:
    """One run directory as the report sees it; `name` is unique among the runs of one report."""

    name: str
    directory: Path
    info: dict[str, Any]
    tasks: dict[str, Any]
    results: list[dict[str, Any]]

    @property
    def image_grid(self) -> tuple[int, int] | None:
        grid = (self.info.get("model") or {}).get("image_grid")
        return (int(grid[0]), int(grid[1])) if grid else None


def load_run(directory: Path) -> Run:
    """Parse and validate `<directory>/metrics.json`."""
    directory = Path(directory)
    path = directory / METRICS_FILE
    if not directory.is_dir():
        raise PdropEvalError(f"run directory {directory} does not exist: pass a folder like results/<run-name>/")
    if not path.is_file():
        raise PdropEvalError(
            f"{directory} has no {METRICS_FILE}: pass a run directory written by the evaluation (results/<run-name>/)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PdropEvalError(f"{path} is not valid JSON ({err}); rerun the evaluation to rewrite it") from err
    return _validated(path, directory, data)


def _validated(path: Path, directory: Path, data: Any) -> Run:
    if not isinstance(data, dict):
        raise PdropEvalError(f"{path} must hold a JSON object with 'run', 'tasks' and 'results', got {_kind(data)}")
    for key, kind in (("run", dict), ("tasks", dict), ("results", list)):
        if not isinstance(data.get(key), kind):
            raise PdropEvalError(f"{path}: '{key}' must be a JSON {_json_name(kind)}, got {_kind(data.get(key))}")
    name = data["run"].get("name")
    if not isinstance(name, str) or not name:
        raise PdropEvalError(f"{path}: 'run.name' must be a non-empty string, got {name!r}")
    for i, row in enumerate(data["results"]):
        where = f"{path}: results[{i}]"
        if not isinstance(row, dict):
            raise PdropEvalError(f"{where} must be a JSON object, got {_kind(row)}")
        _require(row, _RESULT_FIELDS, where)
        _require(row["schedule"], _SCHEDULE_FIELDS, f"{where}.schedule")
        if not _is_number_or_null(row.get("primary")):
            raise PdropEvalError(f"{where}.primary must be a number or null, got {row.get('primary')!r}")
    return Run(name=name, directory=directory, info=data["run"], tasks=data["tasks"], results=data["results"])


def _require(obj: dict[str, Any], fields: tuple[tuple[str, type | tuple[type, ...]], ...], where: str) -> None:
    for key, kind in fields:
        if key not in obj:
            raise PdropEvalError(f"{where} has no '{key}'")
        if not isinstance(obj[key], kind):
            raise PdropEvalError(f"{where}.{key} must be a JSON {_json_name(kind)}, got {_kind(obj[key])}")


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


_JSON_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                                 bool: "boolean"}


def _json_name(kind: type | tuple[type, ...]) -> str:
    return _JSON_NAMES.get(kind, "value") if isinstance(kind, type) else "value"


def _kind(value: Any) -> str:
    return "nothing (missing or null)" if value is None else f"a {_json_name(type(value))}"


def unique_names(runs: list[Run]) -> list[Run]:
    """Give runs that share a name (two nodes launched with the same --name) distinct names: name#2, name#3.

    The Provenance sheet keeps each run's directory, so a suffixed name can always be traced back.
    """
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run = Run(f"{run.name}#{seen[run.name]}", run.directory, run.info, run.tasks, run.results)
        out.append(run)
    return out


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """A predictions file's records, lazily (finding the first few samples need not parse a whole task); a
    damaged line (not UTF-8, not JSON, not an object) is one error naming the file and line."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise PdropEvalError(
                    f"{path} line {number} is not valid JSON text ({err}); the file may be truncated or damaged"
                ) from err
            if not isinstance(record, dict):
                raise PdropEvalError(f"{path} line {number} is not a prediction record (a JSON object)")
            yield record
