"""What a run folder holds, read back from disk, so every command on a run can describe all of it.

Commands on one run add tasks and schedules to it (`--tasks gqa --lambda 0.5`, later `--lambda 0.3`, later
`--tasks textvqa`). Each writes metrics.json and the reports for everything whose predictions the folder holds, not
only its own tasks × schedules; that needs each prediction file's task card and schedule, which run.json records
before the first prediction of a new task or schedule is written (a command killed mid-way is described too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.registry import Task, get_task, load_card
from pdrop_eval.store import predictions_dir, write_json_atomic

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
_SHARD_SUFFIX = re.compile(r"\.rank\d+$")


def read_run_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PdropEvalError(f"{path} is not valid JSON: rerun with --overwrite to start afresh") from error
    return stored if isinstance(stored, dict) else {}


def previous_metrics(run_dir: Path) -> dict[str, Any]:
    """The last metrics.json, or {} when there is none or it cannot be read: it is rebuilt from predictions anyway,
    and only what predictions cannot give (vlmeval scores, data hashes of tasks not rerun) is taken from it."""
    try:
        previous = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def record_contents(run_dir: Path, cards: dict[str, str | None], schedules: Sequence[dict[str, Any]]) -> None:
    """Add this command's task cards and schedule records to run.json (kept in the order first seen)."""
    stored = read_run_file(run_dir)
    merged = {
        **stored,
        "cards": {**stored.get("cards", {}), **cards},
        "schedules": {**stored.get("schedules", {}), **{record["label"]: record for record in schedules}},
    }
    if merged != stored:
        write_json_atomic(run_dir / RUN_FILE, merged)


def held_tasks(run_dir: Path) -> list[str]:
    """Tasks with at least one prediction file (merged or a shard), in the order run.json recorded them."""
    folder = run_dir / "predictions"
    names = sorted(p.name for p in folder.iterdir() if any(p.glob("*.jsonl"))) if folder.is_dir() else []
    return in_recorded_order(names, read_run_file(run_dir).get("cards", {}))


def held_labels(run_dir: Path, task: str) -> list[str]:
    """Schedule labels of a task's prediction files: `<label>.jsonl` and the shards `<label>.rank<r>.jsonl`."""
    folder = predictions_dir(run_dir, task)
    stems = sorted(path.name[: -len(".jsonl")] for path in folder.glob("*.jsonl")) if folder.is_dir() else []
    return list(dict.fromkeys(_SHARD_SUFFIX.sub("", stem) for stem in stems))


def in_recorded_order(names: Collection[str], recorded: Collection[str]) -> list[str]:
    """`names` in the order they were first recorded; names never recorded last, in the order given."""
    position = {name: index for index, name in enumerate(recorded)}
    return sorted(dict.fromkeys(names), key=lambda name: position.get(name, len(position)))


def schedule_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every schedule the run recorded, by label: run.json's, else (runs made before run.json kept them) the last
    metrics.json's rows."""
    records = {row["schedule"]["label"]: row["schedule"] for row in _rows(previous_metrics(run_dir))}
    records.update(read_run_file(run_dir).get("schedules", {}))
    return records


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = metrics.get("results")
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("schedule"), dict) and "label" in r["schedule"]]


def previous_rows(metrics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(str(row.get("task")), row["schedule"]["label"]): row for row in _rows(metrics)}


def other_held_tasks(run_dir: Path, current: Collection[str], tasks_dir: str | None) -> list[Task]:
    """Cards of the tasks the folder holds predictions of that this command does not run: the card run.json
    recorded when it still exists, else the task of that name (built in or in `tasks_dir`)."""
    cards = read_run_file(run_dir).get("cards", {})
    tasks = []
    for name in held_tasks(run_dir):
        if name in current:
            continue
        card = cards.get(name)
        task = load_card(Path(card)) if card and Path(card).is_file() else None
        if task is None or task.name != name:
            try:
                task = get_task(name, tasks_dir)
            except PdropEvalError as error:
                raise PdropEvalError(
                    f"{run_dir} holds predictions of task {name!r} but its card ({card or 'not recorded'}) is not "
                    "found: pass the --tasks-dir that has it, or run this command under another --run-name; "
                    "nothing was deleted"
                ) from error
        tasks.append(task)
    return tasks
