"""ANLS for DocVQA / InfoVQA exactly as VLMEvalKit scores it (`vlmeval/dataset/utils/vqa_eval.py`).

Per answer, `anls_compute`: Levenshtein distance between the lowercased, whitespace-collapsed strings, divided
by the longer of the two RAW strings (`len(s.upper())`, not the normalised ones). Per question, `hit_calculate`:
take the smallest distance d over the answers; the score is 1 - d, or 0 when 1 - d < 0.5 (so exactly 0.5 is
kept, unlike the DocVQA paper's strict "< τ"). Aggregate: mean ×100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.metrics.base import Metric, as_answer_list, vlmeval_vqa_aggregate

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute all cost 1), one DP row at a time."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b, start=1):
        current = [j]
        for i, ca in enumerate(a, start=1):
            current.append(previous[i - 1] if ca == cb else 1 + min(previous[i - 1], previous[i], current[-1]))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def normalized_distance(answer: str, prediction: str) -> float:
    """VLMEvalKit `anls_compute`: distance of the normalised strings over the longer RAW length (0 if both empty)."""
    length = max(len(answer.upper()), len(prediction.upper()))
    return 0.0 if length == 0 else levenshtein(_collapse(answer), _collapse(prediction)) / length


def anls_score(prediction: str, answers: Sequence[str]) -> float:
    """VLMEvalKit `hit_calculate` for DocVQA/InfoVQA: `0 if 1 - min(d) < 0.5 else 1 - min(d)`."""
    similarity = 1 - min(normalized_distance(a, prediction) for a in answers)
    return 0.0 if similarity < ANLS_THRESHOLD else similarity


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return anls_score(prediction, as_answer_list(gold, "anls"))


ANLS = Metric(
    name="anls",
    primary="anls",
    score=_score,
    aggregate=lambda records: vlmeval_vqa_aggregate(records, "anls"),
    reference="VLMEvalKit vlmeval/dataset/utils/vqa_eval.py anls_compute + hit_calculate (threshold 0.5)",
)
