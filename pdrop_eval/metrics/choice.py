"""Multiple-choice scoring as VLMEvalKit does it without an LLM judge ("exact_matching").

The letter is read with VLMEvalKit's rule-based matcher (`vlmeval/utils/matching_util.py`, `can_infer`), pinned
to upstream main after PR #1175 (July 2025: letter must sit among the last four words; option-text matching
skipped for answers over twice the options' total length) and PR #1552 (May 2026: "answer is B" fallback).
What the matcher cannot read counts as wrong: VLMEvalKit gives it "Z" when no judge model is configured.

MMBench (`mcq_circular_eval`): rows whose `index % 1_000_000` agree are rotations of one question; the question
is right only if every rotation is. MMStar (`mcq_vanilla_eval`): plain per-row accuracy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import (
    Metric,
    ScoredRecord,
    breakdown_percent,
    empty_result,
    percent_numpy,
    require_meta,
)
from pdrop_eval.metrics.lmms_eval_mcq import mmstar_letter_hit

CIRCULAR_MODULUS = 1_000_000

_API_FAILURE = "Failed to obtain answer via API"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_SEPARATORS = ".()[],:;!*#{}"
# PR #1552's fallback, case-insensitive as upstream writes it (so "the answer is a ..." reads as A).
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def infer_letter(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_option`: the one option letter standing alone as a word.

    Brackets, periods, commas, colons... become spaces, then the words are compared to the letters. Exactly one
    letter present and among the last four words -> that letter; no letter but a lone "Z" -> "Z"; otherwise
    "answer is X" anywhere; else None. Refusal phrases give "Z" (a wrong answer). The VERBOSE-only check that
    treats a leading "A" as an article is off by default upstream, so it is not reproduced.
    """
    if _API_FAILURE in answer:
        return None
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    spaced = answer
    for sep in _SEPARATORS:
        spaced = spaced.replace(sep, " ")
    words = spaced.split()
    present = [letter for letter in choices if letter in words]
    if len(present) == 1:
        if words.index(present[0]) > len(words) - 5:
            return present[0]
    elif not present and "Z" in words:
        return "Z"
    declared = _ANSWER_IS.search(answer)
    if declared and declared.group(1).upper() in choices:
        return declared.group(1).upper()
    return None


def infer_option_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_text`: the one option whose (lowercased) text occurs in the lowercased answer.

    Skipped when the answer is longer than twice the options' combined length; two or more hits -> None.
    """
    lowered = answer.lower()
    if len(lowered) > 2 * sum(len(text) for text in choices.values()):
        return None
    hits = [letter for letter, text in choices.items() if text.lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def infer_choice(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer`: the letter rule first, then the option-text rule; None when neither reads it."""
    return infer_letter(answer, choices) or infer_option_text(answer, choices)


def option_map(meta: Mapping[str, Any], metric: str) -> dict[str, str]:
    """`meta["options"]` the way VLMEvalKit's `build_choices` sees a row: A..Z in order, missing/NaN options
    dropped, values as strings."""
    options = require_meta(meta, "options", metric)
    if not isinstance(options, Mapping):
        raise PdropEvalError(f"metric {metric!r} needs meta['options'] as a dict like {{'A': 'cat'}}, got {options!r}")
    return {
        letter: str(options[letter])
        for letter in sorted(options)
        if options[letter] is not None and not (isinstance(options[letter], float) and math.isnan(options[letter]))
    }


def _letter(gold: Any, metric: str) -> str:
    if not (isinstance(gold, str) and len(gold) == 1 and gold.isupper()):
        raise PdropEvalError(f"metric {metric!r} needs gold as one uppercase option letter, got {gold!r}")
    return gold


def _choice_hit(prediction: str, gold: Any, meta: Mapping[str, Any], metric: str) -> float:
    """1.0 when the matcher reads the gold letter from the prediction; unreadable or another letter is 0.0."""
    letter = _letter(gold, metric)
    return 1.0 if infer_choice(prediction, option_map(meta, metric)) == letter else 0.0


def _mmbench_score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    """One rotation: VLMEvalKit's circular prefetch reads the raw prediction (no strip) with `can_infer`."""
    return _choice_hit(prediction, gold, meta, "mmbench_circular")


def _circular_index(record: ScoredRecord) -> int:
    index = require_meta(record.meta, "index", "mmbench_circular", record.id)
    try:
        return int(index)
    except (TypeError, ValueError):
        raise PdropEvalError(
            f"metric 'mmbench_circular' needs an integer meta['index'] (sample {record.id!r}), got {index!r}"
        ) from None


def circular_hits(records: Sequence[ScoredRecord]) -> dict[int, tuple[ScoredRecord, float]]:
    """`{base index: (the question's main row, 1.0 if every rotation is right else 0.0)}`.

    As upstream, a question is defined by its main row (index < 1e6, i.e. index == index % 1e6); copies whose
    main row is absent are not scored.
    """
    groups: dict[int, list[ScoredRecord]] = {}
    for r in records:
        groups.setdefault(_circular_index(r) % CIRCULAR_MODULUS, []).append(r)
    hits = {}
    for base, rows in sorted(groups.items()):
        main = [r for r in rows if _circular_index(r) == base]
        if main:
            hits[base] = (main[0], 1.0 if all(r.score == 1.0 for r in rows) else 0.0)
    return hits


def _mmbench_aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """VLMEvalKit `report_acc` on the circular hits (Overall, per l2-category, per category), plus the plain
    per-row accuracy over every rotation (`vanilla_accuracy`, not an official MMBench number)."""
    if not records:
        return empty_result("circular_accuracy")
    hits = circular_hits(records)
    mains = [replace(main, score=hit) for main, hit in hits.values()]
    if not mains:
        raise PdropEvalError(
            "metric 'mmbench_circular' found no main rows (meta['index'] < 1,000,000) among the records; "
            "circular evaluation needs each question's original row"
        )
    out = {
        "circular_accuracy": percent_numpy([m.score for m in mains]),
        "vanilla_accuracy": percent_numpy([r.score for r in records]),
        "n": float(len(records)),
        "n_questions": float(len(mains)),
    }
    for key in ("l2-category", "category"):
        if all(key in m.meta for m in mains):
            out.update(breakdown_percent(mains, "circular_accuracy", key, percent_numpy))
    return out


MMBENCH_CIRCULAR = Metric(
    name="mmbench_circular",
    primary="circular_accuracy",
    score=_mmbench_score,
    aggregate=_mmbench_aggregate,
    reference="VLMEvalKit vlmeval/dataset/utils/multiple_choice.py mcq_circular_eval, exact matching (no judge)",
)


def _mcq_score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    """VLMEvalKit `extract_answer_from_item` hands the prediction to `can_infer` as stored (the decoder already
    stripped it); unreadable -> "Z" -> wrong."""
    return _choice_hit(prediction, gold, meta, "mcq_accuracy")


def _macro_over_l2(records: Sequence[ScoredRecord]) -> float:
    """lmms-eval 0.7.3 `mmstar/utils.py` `mmstar_aggregate_results`: each l2-category's mean letter hit, then the
    plain mean of those (categories in order of first appearance, as its dict fills), ×100."""
    per_l2: dict[str, list[float]] = {}
    for r in records:
        per_l2.setdefault(str(r.meta["l2-category"]), []).append(mmstar_letter_hit(r.prediction, r.gold))
    means = [sum(hits) / len(hits) for hits in per_l2.values()]
    return sum(means) / len(means) * 100


def _lmms_eval_keys(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """lmms-eval's MMStar metrics: `average` over every record, and one per `category` (its metric names) over that
    category's records, all with the macro-over-l2-category aggregation."""
    out = {"lmms_eval/average": _macro_over_l2(records)}
    if all("category" in r.meta for r in records):
        by_category: dict[str, list[ScoredRecord]] = {}
        for r in records:
            by_category.setdefault(str(r.meta["category"]), []).append(r)
        out.update({f"lmms_eval/{c}": _macro_over_l2(rows) for c, rows in sorted(by_category.items())})
    return out


def _mcq_aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """VLMEvalKit `report_acc`: Overall (micro), per l2-category, per category; plus lmms-eval's macro averages."""
    if not records:
        return empty_result("accuracy")
    out = {"accuracy": percent_numpy([r.score for r in records]), "n": float(len(records))}
    for key in ("l2-category", "category"):
        if all(key in r.meta for r in records):
            out.update(breakdown_percent(records, "accuracy", key, percent_numpy))
    if all("l2-category" in r.meta for r in records):
        out.update(_lmms_eval_keys(records))
    return out


MCQ_ACCURACY = Metric(
    name="mcq_accuracy",
    primary="accuracy",
    score=_mcq_score,
    aggregate=_mcq_aggregate,
    reference="VLMEvalKit vlmeval/dataset/utils/multiple_choice.py mcq_vanilla_eval, exact matching (no judge)",
)
