"""`--check-batch-effect K`: after a run, the first K samples of each task × schedule again at batch 1, compared
with what the run wrote for them (pdrop_eval.batch_effect says why this matters).

The batch-1 outcomes are stored beside the predictions, in `batch_effect/<task>/<schedule>.jsonl`, and the agreement
is recomputed from them and the predictions whenever metrics.json is written: a later command on the run (with or
without the flag, or a rebuild of a finished run that loads no model) keeps the fields, and samples already checked
are never run again. The K are the first K by dataset order whose prediction the run holds (a failed sample has
no answer to compare), so the same command checks the same samples on any machine and any number of processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pdrop_eval.batch_effect import CheckInput, SampleOutcome, compare_outcomes, run_outcomes
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError, SampleError
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.models import LoadedVLM
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.store import is_failed, read_predictions, write_text_atomic

FOLDER = "batch_effect"


def parse_check_count(text: str | None) -> int:
    """The K of `--check-batch-effect K`: a whole number of at least 1 (absent: 0, no check)."""
    if text is None:
        return 0
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise PdropEvalError(
            f"--check-batch-effect {text!r}: give how many samples of each task × schedule to rerun at batch 1, "
            "a whole number of at least 1, e.g. --check-batch-effect 32"
        )
    return value


def outcomes_path(run_dir: Path, task: str, label: str) -> Path:
    return run_dir / FOLDER / task / f"{label}.jsonl"


def read_outcomes(run_dir: Path, task: str, label: str) -> dict[str, SampleOutcome]:
    """The batch-1 outcomes stored for a task × schedule, by sample key; a damaged file is one error line."""
    path = outcomes_path(run_dir, task, label)
    if not path.is_file():
        return {}
    outcomes = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            outcome = SampleOutcome.from_record(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            raise PdropEvalError(
                f"{path} line {number} is not a batch-1 outcome ({error}); the file was edited or damaged: delete it "
                "and rerun with --check-batch-effect to recompute it"
            ) from error
        outcomes[outcome.id] = outcome
    return outcomes


def to_check(
    samples: Sequence[Sample], key: Callable[[Sample], str], stored: Mapping[str, Mapping[str, Any]], count: int
) -> list[Sample]:
    """The first `count` samples, in dataset order, that the run answered (failed samples have nothing to compare)."""
    answered = [sample for sample in samples if key(sample) in stored and not is_failed(stored[key(sample)])]
    return answered[:count]


def pending(
    run_dir: Path, task: str, label: str, samples: Sequence[Sample], key: Callable[[Sample], str], count: int
) -> list[Sample]:
    """The samples of the first `count` that still need their batch-1 run."""
    done = read_outcomes(run_dir, task, label)
    stored = read_predictions(run_dir, task, label)
    return [sample for sample in to_check(samples, key, stored, count) if key(sample) not in done]


def run_checks(
    run_dir: Path,
    loaded: LoadedVLM,
    task: str,
    samples: Sequence[Sample],
    schedules: Sequence[PruningMethod],
    count: int,
    max_new_tokens: int,
    key: Callable[[Sample], str],
    seed: Callable[[Sample], int],
) -> None:
    """Run each schedule's unchecked samples among the first `count` at batch 1 and store what came out; the
    comparison is made when metrics.json is written (`agreement_field`)."""
    parts = DecoderParts.from_model(loaded.model, loaded.family.positions)
    for schedule in schedules:
        inputs = []
        for sample in pending(run_dir, task, schedule.label, samples, key, count):
            try:
                inputs.append(CheckInput.from_sample(sample, seed(sample)))
            except SampleError:
                continue  # its image opened during the run but not now; it is left unchecked
        if not inputs:
            continue
        outcomes = run_outcomes(loaded, schedule, inputs, 1, max_new_tokens, parts)
        merged = {**read_outcomes(run_dir, task, schedule.label), **{o.id: o for o in outcomes}}
        text = "".join(json.dumps(o.to_json(), ensure_ascii=False) + "\n" for o in merged.values())
        write_text_atomic(outcomes_path(run_dir, task, schedule.label), text)


def agreement_field(run_dir: Path, task: str, label: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`{"batch_effect": {...}}` for a metrics.json row when samples of it were checked, else nothing: the checked
    samples' agreement with the records the run holds now, and the batch sizes those records were made at (a
    record made at batch 1 agrees trivially)."""
    single = read_outcomes(run_dir, task, label)
    if not single:
        return {}
    compared = [r for r in records if str(r["id"]) in single and not is_failed(r)]
    agreement = compare_outcomes([SampleOutcome.from_record(r) for r in compared], list(single.values()))
    sizes = sorted({int((r.get("timing") or {}).get("batch_size", 0)) for r in compared})
    return {"batch_effect": {**agreement.to_json(), "run_batch_sizes": sizes}}
