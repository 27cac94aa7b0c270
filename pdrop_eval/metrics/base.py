"""The shape every scorer shares: a per-sample `score` and a task-level `aggregate`.

A metric is a value, not a class hierarchy: two pure functions and the name of the headline key. Per-sample
scores are fractions in [0, 1] (1.0/0.0, or VQA-accuracy / ANLS partial credit); aggregates are percentages
(×100) as the papers print them, unless a key says otherwise (`n...`, POPE's `tp/...` counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pdrop_eval.errors import PdropEvalError


@dataclass(frozen=True)
class ScoredRecord:
    """One scored prediction: what `aggregate` consumes (and what a results table shows per row).

    `failed`: the sample's input could not be used, so there is no prediction; it scores 0 and every aggregate
    must count it wrong (an aggregate that parses `prediction` itself, like POPE's, checks this flag)."""

    id: str | int
    prediction: str
    gold: Any
    score: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    failed: bool = False


ScoreFn = Callable[[str, Any, Mapping[str, Any]], float]
AggregateFn = Callable[[Sequence[ScoredRecord]], dict[str, float]]


@dataclass(frozen=True)
class Metric:
    """A registered scorer.

    `score(prediction, gold, meta)` scores one sample; `aggregate(records)` turns scored records into flat
    `{key: value}`; `primary` names the key of the headline number (the one the paper's table prints);
    `reference` says which official evaluator the numbers reproduce; `unit` is what the headline number counts
    ("%" for accuracies, "score out of 2000" for MME perception), so reports label their axes truthfully.
    """

    name: str
    primary: str
    score: ScoreFn
    aggregate: AggregateFn
    reference: str
    unit: str = "%"

    def record(self, id: str | int, prediction: str, gold: Any, meta: Mapping[str, Any] | None = None) -> ScoredRecord:
        """Score one sample and wrap it as the `ScoredRecord` that `aggregate` expects."""
        meta = {} if meta is None else meta
        score = self.score(prediction, gold, meta)
        return ScoredRecord(id=id, prediction=prediction, gold=gold, score=score, meta=meta)


def empty_result(primary: str) -> dict[str, float]:
    """What every aggregate returns for zero records: no data is NaN, never a fake 0%."""
    return {primary: math.nan, "n": 0.0}


def percent_numpy(values: Sequence[float]) -> float:
    """`np.mean(values) * 100`, exactly as VLMEvalKit computes its percentages (numpy's pairwise sum)."""
    return float(np.mean(np.asarray(values, dtype=np.float64)) * 100)


def percent_python(values: Sequence[float]) -> float:
    """`sum(values) / len(values) * 100`, as LLaVA's scripts compute their means (plain left-to-right sum)."""
    return sum(values) / len(values) * 100


def as_answer_list(gold: Any, metric: str) -> list[str]:
    """Gold answers as a list of strings: VLMEvalKit wraps a single answer into a one-element list."""
    if isinstance(gold, str):
        return [gold]
    if isinstance(gold, (list, tuple)) and gold and all(isinstance(g, str) for g in gold):
        return list(gold)
    raise PdropEvalError(
        f"metric {metric!r} needs gold as a string or a non-empty list of strings, got {gold!r}; "
        "fix the task's loader so `gold` holds the answer list"
    )


def require_meta(meta: Mapping[str, Any], key: str, metric: str, record_id: str | int | None = None) -> Any:
    """`meta[key]`, or a PdropEvalError naming the metric, the missing key and the sample."""
    if key not in meta:
        where = "" if record_id is None else f" (sample {record_id!r})"
        raise PdropEvalError(
            f"metric {metric!r} needs meta[{key!r}]{where}, but the sample's meta has only {sorted(meta)}; "
            "fix the task's loader to provide it"
        )
    return meta[key]


def breakdown_percent(
    records: Sequence[ScoredRecord], prefix: str, group_key: str, mean: Callable[[Sequence[float]], float]
) -> dict[str, float]:
    """`{f"{prefix}/{group_key}={value}": mean score of that group}` for each value of `meta[group_key]`."""
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(str(r.meta[group_key]), []).append(r.score)
    return {f"{prefix}/{group_key}={g}": mean(scores) for g, scores in sorted(groups.items())}


def vlmeval_vqa_aggregate(records: Sequence[ScoredRecord], primary: str) -> dict[str, float]:
    """Aggregate like VLMEvalKit's `ImageVQADataset.evaluate`: Overall = mean hit ×100, then one number per
    `split` when the data has a split column (ChartQA: human_test / augmented_test), else per `category` when
    it has one. A column counts as present when every record's meta carries it.
    """
    if not records:
        return empty_result(primary)
    out = {primary: percent_numpy([r.score for r in records]), "n": float(len(records))}
    for key in ("split", "category"):
        if all(key in r.meta for r in records):
            out.update(breakdown_percent(records, primary, key, percent_numpy))
            break
    return out
