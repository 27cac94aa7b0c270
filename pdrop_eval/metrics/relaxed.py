"""ChartQA relaxed accuracy exactly as VLMEvalKit scores it (`vlmeval/dataset/utils/vqa_eval.py`).

`relaxed_correctness` (from pix2struct): if both strings parse as numbers (a trailing "%" divides by 100) and
the gold number is non-zero, the prediction is right when within 5% of it; otherwise the strings must be equal
ignoring case. The prediction is `.strip()`ped first, the gold is not. A question is right when any gold
answer accepts the prediction; the task number is the mean ×100, also per split (human_test / augmented_test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.metrics.base import Metric, as_answer_list, vlmeval_vqa_aggregate

MAX_RELATIVE_CHANGE = 0.05


def _to_float(text: str) -> float | None:
    """pix2struct `_to_float`: Python's float() (so "1,000" fails but " 7 " and "1e3" parse); "12%" -> 0.12."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correct(target: str, prediction: str) -> bool:
    """VLMEvalKit / pix2struct `relaxed_correctness` with max_relative_change 0.05 (the boundary counts)."""
    pred_value = _to_float(prediction)
    target_value = _to_float(target)
    if pred_value is not None and target_value:
        return abs(pred_value - target_value) / abs(target_value) <= MAX_RELATIVE_CHANGE
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VLMEvalKit `process_line(method='relaxed_accuracy')` + `hit_calculate` (max over answers)."""
    pred = prediction.strip()
    return 1.0 if any(relaxed_correct(a, pred) for a in answers) else 0.0


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return relaxed_accuracy(prediction, as_answer_list(gold, "relaxed_accuracy"))


RELAXED_ACCURACY = Metric(
    name="relaxed_accuracy",
    primary="relaxed_accuracy",
    score=_score,
    aggregate=lambda records: vlmeval_vqa_aggregate(records, "relaxed_accuracy"),
    reference="VLMEvalKit vlmeval/dataset/utils/vqa_eval.py relaxed_correctness, max over answers, per split",
)
