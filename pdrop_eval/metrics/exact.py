"""Exact-match scorers: GQA as LLaVA scores it, and OCRVQA as VLMEvalKit scores it.

GQA (LLaVA `scripts/v1_5/eval/gqa.sh`, haotian-liu/LLaVA@c121f04): the generated text is `.strip()`ped once, when
it is decoded (`llava/eval/model_vqa_loader.py`; ours: `pdrop_eval.models.batch.decode`), then
`scripts/convert_gqa_for_eval.py` writes `text.rstrip('.').lower()` and GQA's own `eval.py` counts
`predicted == question["answer"]`. The scorer therefore does not strip again: a prediction handed to it with
whitespace around it is scored as LLaVA's converter would score it. The gold answer is compared as stored.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import (
    Metric,
    ScoredRecord,
    as_answer_list,
    empty_result,
    percent_python,
    vlmeval_vqa_aggregate,
)

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_prediction(prediction: str) -> str:
    """`convert_gqa_for_eval.py`: trailing periods removed, then lowercased (the decoder already stripped it)."""
    return prediction.rstrip(".").lower()


def lmms_eval_exact(prediction: str, gold: str) -> bool:
    """lmms-eval 0.7.3's GQA rule: `ConfigurableTask.process_results` strips the generation, then `gqa.yaml`'s
    `exact_match` (`api/metrics.py` `exact_match_hf_evaluate`, ignore_case and ignore_punctuation) lowercases both
    sides, deletes every ASCII punctuation character and compares.

    Done, as there, on one-element numpy string arrays: their fixed width cuts what lowercasing lengthens
    ("İ" becomes two characters, the string's last one falls off), and trailing NULs vanish.
    """
    sides = [np.asarray([prediction.strip()]), np.asarray([gold])]
    pred, ref = (np.char.translate(np.char.lower(side), table=_DROP_PUNCTUATION) for side in sides)
    return bool((pred == ref)[0])


def _gqa_score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    if not isinstance(gold, str):
        raise PdropEvalError(f"metric 'exact_match' needs gold as a single answer string, got {gold!r}")
    return 1.0 if gqa_prediction(prediction) == gold else 0.0


def _gqa_aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """GQA `eval.py` accuracy (mean of 0/1 ×100), plus lmms-eval 0.7.3's looser rule as a labelled second column
    (its `mean` aggregation, ×100)."""
    if not records:
        return empty_result("accuracy")
    return {
        "accuracy": percent_python([r.score for r in records]),
        "n": float(len(records)),
        "lmms_eval/accuracy": percent_python([float(lmms_eval_exact(r.prediction, r.gold)) for r in records]),
    }


EXACT_MATCH = Metric(
    name="exact_match",
    primary="accuracy",
    score=_gqa_score,
    aggregate=_gqa_aggregate,
    reference="LLaVA scripts/convert_gqa_for_eval.py (rstrip('.').lower()) + GQA eval.py (predicted == gold)",
)


def ocrvqa_hit(prediction: str, answers: Sequence[str]) -> bool:
    """VLMEvalKit `process_line(method='accuracy')` + `hit_calculate` (max): some answer equals the prediction
    after `.strip().lower()` on both sides."""
    pred = prediction.strip().lower()
    return any(a.strip().lower() == pred for a in answers)


def _ocrvqa_score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return 1.0 if ocrvqa_hit(prediction, as_answer_list(gold, "ocrvqa_exact")) else 0.0


OCRVQA_EXACT = Metric(
    name="ocrvqa_exact",
    primary="accuracy",
    score=_ocrvqa_score,
    aggregate=lambda records: vlmeval_vqa_aggregate(records, "accuracy"),
    reference="VLMEvalKit vlmeval/dataset/utils/vqa_eval.py process_line(method='accuracy'), max over answers",
)
