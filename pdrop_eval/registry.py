"""Tasks are data: one YAML card per benchmark (`pdrop_eval/tasks/*.yaml`, plus a user's `--tasks-dir`).

A card names the task, its prompt suffix, generation length, metric(s), expected size, where the data is
published, the paper's reference numbers, and one or more data `sources`. Sources are tried in the card's order
(by convention: LLaVA eval folder under --data-root/$PDROP_DATA, then VLMEvalKit TSV in $LMUData, then Hugging
Face layouts under <data-root>/hf/<repo> or the hub cache); the first whose files all exist is used. Adding a
benchmark whose loader and metric exist is one new card.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pdrop_eval.data.formats import FORMATS, Format
from pdrop_eval.data.locate import DataLocations, locate
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError, PdropEvalWarning

CARD_KEYS = {
    "name", "description", "size", "prompt_suffix", "max_new_tokens", "metrics", "sources", "published",
    "reference", "vlmeval_dataset",
}
REQUIRED_KEYS = ("name", "description", "size", "prompt_suffix", "max_new_tokens", "metrics", "sources")
# A task's name becomes a folder of the run (predictions/<name>/, samples/<name>/), so it must be one plain
# path component: no separators, no "..", nothing absolute.
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Source:
    """One way to get a task's data: a format name, its files by role, and format options (fields, split...)."""

    format: str
    files: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Format:
        return FORMATS[self.format]


@dataclass(frozen=True)
class ReferenceRow:
    method: str
    score: float
    tflops: float | None = None


@dataclass(frozen=True)
class Reference:
    """Published numbers to print beside a run's ("paper vs this run")."""

    model: str
    source: str
    metric: str
    rows: tuple[ReferenceRow, ...]


@dataclass(frozen=True)
class Task:
    """`size` is the expected number of samples, None where the publisher does not state it (OCRVQA_TESTCORE)."""

    name: str
    description: str
    size: int | None
    prompt_suffix: str
    max_new_tokens: int
    metrics: tuple[str, ...]
    sources: tuple[Source, ...]
    published: tuple[str, ...] = ()
    reference: Reference | None = None
    vlmeval_dataset: str | None = None
    card: Path | None = None


@dataclass(frozen=True)
class ResolvedSource:
    """A source whose files were all found: what `load_samples` reads."""

    source: Source
    paths: dict[str, Any]
    where: str


def _card_error(path: Path, message: str) -> PdropEvalError:
    return PdropEvalError(f"task card {path}: {message}")


def _parse_source(raw: Any, path: Path) -> Source:
    if not isinstance(raw, Mapping) or "format" not in raw:
        raise _card_error(path, f"each source needs a `format`; got {raw!r}")
    name = raw["format"]
    if not isinstance(name, str) or name not in FORMATS:
        raise _card_error(path, f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    files = raw.get("files") or {}
    if not isinstance(files, Mapping):
        raise _card_error(path, f"`files` of format {name} must map file roles to paths; got {files!r}")
    missing = [role for role in FORMATS[name].roles if role not in files]
    if missing:
        raise _card_error(path, f"format {name} needs files for {missing}")
    if FORMATS[name].location == "hf" and "repo" not in raw:
        raise _card_error(path, f"format {name} needs `repo` (e.g. lmms-lab/GQA)")
    options = {key: value for key, value in raw.items() if key not in ("format", "files")}
    _check_split_options(options, files, path)
    return Source(format=name, files={role: str(rel) for role, rel in files.items()}, options=options)


def _check_split_options(options: Mapping[str, Any], files: Mapping[str, Any], path: Path) -> None:
    """`splits` (a table spread over several splits), `meta_required` and `{split}` in a file pattern are read
    as lists and names later; a slip there would read the wrong files silently, so it is caught with the card."""
    for key in ("splits", "meta_required"):
        value = options.get(key)
        names = isinstance(value, list) and value and all(isinstance(item, str) for item in value)
        if value is not None and not names:
            raise _card_error(path, f"`{key}` must be a non-empty list of names like [adversarial, random]: {value!r}")
    has_split = options.get("splits") or options.get("split")
    if any("{split}" in str(pattern) for pattern in files.values()) and not has_split:
        raise _card_error(path, "a file pattern holds {split} but the source names no `split` or `splits`")


def _parse_reference(raw: Any, path: Path) -> Reference | None:
    if raw is None:
        return None
    try:
        rows = tuple(ReferenceRow(method=str(row["method"]), score=float(row["score"]),
                                  tflops=None if row.get("tflops") is None else float(row["tflops"]))
                     for row in raw["rows"])
        return Reference(model=str(raw["model"]), source=str(raw["source"]), metric=str(raw["metric"]), rows=rows)
    except (KeyError, TypeError, ValueError) as err:
        raise _card_error(path, f"`reference` needs model, source, metric and rows of method/score/tflops ({err})")


def load_card(path: Path) -> Task:
    """Parse and validate one card; every mistake is reported with the card's path."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise _card_error(path, f"cannot read it ({err}); save it as UTF-8 YAML") from err
    if not isinstance(raw, Mapping):
        raise _card_error(path, "it must be a YAML mapping")
    unknown = sorted(set(raw) - CARD_KEYS)
    if unknown:
        raise _card_error(path, f"unknown key(s) {unknown}; allowed: {sorted(CARD_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise _card_error(path, f"missing key(s) {missing}")
    name = raw["name"]
    if not isinstance(name, str) or not _TASK_NAME.fullmatch(name):
        raise _card_error(
            path, f"`name` {name!r} must be letters, digits, '.', '_' or '-' (it names the task's folders in a run)"
        )
    metrics = raw["metrics"] if isinstance(raw["metrics"], list) else [raw["metrics"]]
    if not metrics or not all(isinstance(metric, str) and metric for metric in metrics):
        raise _card_error(path, f"`metrics` must name at least one metric, e.g. [exact_match]; got {raw['metrics']!r}")
    sources = raw["sources"]
    if not isinstance(sources, list) or not sources:
        raise _card_error(path, "`sources` must be a non-empty list")
    try:
        size = None if raw["size"] is None else int(raw["size"])
        max_new_tokens = int(raw["max_new_tokens"])
    except (TypeError, ValueError) as err:
        raise _card_error(path, f"`size` (or null) and `max_new_tokens` must be whole numbers ({err})") from err
    return Task(
        name=name,
        description=str(raw["description"]).strip(),
        size=size,
        prompt_suffix=str(raw["prompt_suffix"]),
        max_new_tokens=max_new_tokens,
        metrics=tuple(str(metric) for metric in metrics),
        sources=tuple(_parse_source(source, path) for source in sources),
        published=tuple(str(item) for item in raw.get("published") or ()),
        reference=_parse_reference(raw.get("reference"), path),
        vlmeval_dataset=raw.get("vlmeval_dataset"),
        card=Path(path),
    )


def _builtin_cards() -> list[Path]:
    folder = resources.files("pdrop_eval") / "tasks"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def available_tasks(tasks_dir: str | Path | None = None) -> dict[str, Task]:
    """Built-in cards, then the user's `tasks_dir` cards (which replace built-ins of the same name)."""
    cards = _builtin_cards()
    if tasks_dir is not None:
        folder = Path(tasks_dir)
        if not folder.is_dir():
            raise PdropEvalError(f"--tasks-dir {folder} is not a directory")
        cards += sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    tasks: dict[str, Task] = {}
    for path in cards:
        task = load_card(path)
        tasks[task.name] = task
    return tasks


def _check_metrics(task: Task) -> None:
    """Validate metric names once the metrics package publishes its registry; skip while it does not."""
    try:
        from pdrop_eval.metrics import METRICS
    except ImportError:
        return
    unknown = [name for name in task.metrics if name not in METRICS]
    if unknown:
        raise PdropEvalError(
            f"task {task.name} ({task.card}) uses unknown metric(s) {unknown}; known: {', '.join(sorted(METRICS))}"
        )


def get_task(name: str, tasks_dir: str | Path | None = None) -> Task:
    tasks = available_tasks(tasks_dir)
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise PdropEvalError(f"unknown task {name!r}; {hint}known tasks: {', '.join(sorted(tasks))}")
    task = tasks[name]
    _check_metrics(task)
    return task


def find_data(task: Task, locations: DataLocations, source: str | None = None) -> ResolvedSource | None:
    """The first source (or the one of format `source`) whose files all exist, else None."""
    for candidate in _candidates(task, source):
        found = locate(candidate.spec, candidate.files, candidate.options, locations)
        if found.paths is not None:
            return ResolvedSource(source=candidate, paths=found.paths, where=found.where)
    return None


def _candidates(task: Task, source: str | None) -> tuple[Source, ...]:
    if source is None:
        return task.sources
    chosen = tuple(candidate for candidate in task.sources if candidate.format == source)
    if not chosen:
        known = ", ".join(candidate.format for candidate in task.sources)
        raise PdropEvalError(f"task {task.name} has no source of format {source!r}; it has: {known}")
    return chosen


def check_data(
    task: Task,
    data_root: str | Path | None = None,
    *,
    lmu_data: str | Path | None = None,
    hf_cache: str | Path | None = None,
    source: str | None = None,
) -> ResolvedSource:
    """Find the task's data before any model is loaded; when nothing is there, raise one error naming every
    expected path of every source and where the data is published."""
    locations = DataLocations.from_env(data_root, lmu_data, hf_cache)
    found = find_data(task, locations, source)
    if found is not None:
        return found
    looked = []
    for candidate in _candidates(task, source):
        expected = locate(candidate.spec, candidate.files, candidate.options, locations).expected
        looked.append(f"[{candidate.format}] " + ", ".join(expected))
    published = f" Published at: {'; '.join(task.published)}." if task.published else ""
    raise PdropEvalError(
        f"no data found for task {task.name!r}. Looked for: {' | '.join(looked)}.{published} "
        "Set --data-root / $PDROP_DATA (LLaVA folders and <root>/hf/<repo>), $LMUData (VLMEvalKit TSVs) or "
        "$HF_HUB_CACHE to where the files are."
    )


def load_samples(
    task: Task | str,
    data_root: str | Path | None = None,
    limit: int | None = None,
    *,
    lmu_data: str | Path | None = None,
    hf_cache: str | Path | None = None,
    source: str | None = None,
) -> list[Sample]:
    """All samples of a task (the first `limit` in file order), from the first source whose files exist."""
    if isinstance(task, str):
        task = get_task(task)
    resolved = check_data(task, data_root, lmu_data=lmu_data, hf_cache=hf_cache, source=source)
    request = LoadRequest(paths=resolved.paths, options=resolved.source.options, prompt_suffix=task.prompt_suffix)
    try:
        samples = resolved.source.spec.load(request)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        what = f"missing field {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
        files = ", ".join(
            str(path) for value in resolved.paths.values() for path in (value if isinstance(value, list) else [value])
        )
        raise PdropEvalError(
            f"task {task.name}: the data in {files} does not have the {resolved.source.format} layout ({what}); "
            "check that the files are the official ones, unmodified"
        ) from error
    repeated = [str(sample_id) for sample_id, count in Counter(s.id for s in samples).items() if count > 1]
    if repeated:
        raise PdropEvalError(f"task {task.name}: sample ids repeat in {resolved.where} (e.g. {repeated[:5]})")
    if not samples:
        raise PdropEvalError(
            f"task {task.name}: its data in {resolved.where} holds no samples; check the files (or the card's "
            f"{resolved.source.format} options) against the official ones"
        )
    if request.absent_columns:
        warnings.warn(
            f"task {task.name}: the data in {resolved.where} ({resolved.source.format}) has no metadata column(s) "
            f"{sorted(request.absent_columns)}; the task runs without the breakdowns they give",
            PdropEvalWarning,
            stacklevel=2,
        )
    return samples if limit is None else samples[:limit]


def describe_tasks(
    tasks_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    *,
    lmu_data: str | Path | None = None,
    hf_cache: str | Path | None = None,
) -> str:
    """What `--list-tasks` prints: per task its size, metrics, whether and where data was found, its sources in
    search order and where the data is published. Cheap: files are looked up, never read."""
    locations = DataLocations.from_env(data_root, lmu_data, hf_cache)
    blocks = []
    for name, task in sorted(available_tasks(tasks_dir).items()):
        found = find_data(task, locations)
        status = (f"found ({found.source.format}, {found.where})" if found is not None
                  else "not found (see --data-root / $PDROP_DATA, $LMUData, $HF_HUB_CACHE)")
        size = "size not published" if task.size is None else f"{task.size} samples"
        blocks.append("\n".join([
            f"{name}  [{size}, metrics: {', '.join(task.metrics)}]",
            f"  data: {status}",
            f"  sources, in search order: {', '.join(source.format for source in task.sources)}",
            *(f"  published: {where}" for where in task.published),
        ]))
    return "\n".join(blocks)
