"""ScienceQA as LLaVA scores it: `llava/eval/eval_science_qa.py` (haotian-liu/LLaVA@c121f0432da2, the script
`scripts/v1_5/eval/sqa.sh` runs; PyramidDrop's `scripts/v1_5/pdrop_eval/sqa.sh` at Cooperx521/PyramidDrop@6444f304
runs the same file unchanged).

How that script reads a prediction (the model output, already `.strip()`ped by `model_vqa_science.py`), in order:
1. the whole text is one of the letters `A`-`E` (its `--options` default) -> that letter;
2. the text has 3+ characters, starts with one of those letters and continues with `". "` (`"B. dog"`) -> the letter;
3. `re.findall(r'The answer is ([A-Z]).', text)` finds exactly one match -> that letter (case-sensitive; the `.`
   is any character but a newline, so `"The answer is B"` at the very end does not match); otherwise "FAILED".
The parsed letter is right when it is the gold letter (`get_pred_idx` maps letters beyond the question's choices
to -1, which never equals the answer index, so "right" is exactly "equals gold"). "FAILED" is wrong.

The paper's SQA-IMG number is the script's `IMG-Accuracy`: correct / total over the test questions whose prompt
held `<image>`, i.e. those with an image; the loaders yield only those, so `accuracy` here is that number
(LLaVA's plain `correct / total * 100`).

`lmms_eval/accuracy` is a second, labelled column with lmms-eval's rule (`tasks/scienceqa/utils.py`
`sqa_process_results`, EvolvingLMMs-Lab/lmms-eval@75571cfe0fa3, unchanged in release 0.7.3, whose `scienceqa_img`
task averages it): right when the stripped prediction equals the gold letter ignoring case, or starts with an
uppercase letter and "." and that letter is the gold one ignoring case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import Metric, ScoredRecord, empty_result, percent_python

ANSWER_LETTERS = ("A", "B", "C", "D", "E")
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_answer(prediction: str) -> str | None:
    """The letter `eval_science_qa.py` reads from a prediction, or None where it records "FAILED"."""
    if prediction in ANSWER_LETTERS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in ANSWER_LETTERS and prediction[1:3] == ". ":
        return prediction[0]
    found = _THE_ANSWER_IS.findall(prediction)
    return found[0] if len(found) == 1 else None


def lmms_eval_hit(prediction: str, gold: str) -> bool:
    """lmms-eval's ScienceQA rule: `"b"` and `"B."` are right, `"The answer is B."` is not."""
    target, predicted = gold.strip().lower(), prediction.strip()
    if predicted.lower() == target:
        return True
    if len(predicted) >= 2 and predicted[0].isupper() and predicted[1] == ".":
        return predicted[0].lower() == target
    return False


def _gold_letter(gold: Any) -> str:
    if not (isinstance(gold, str) and len(gold) == 1 and "A" <= gold <= "Z"):
        raise PdropEvalError(f"metric 'scienceqa_accuracy' needs gold as one uppercase option letter, got {gold!r}")
    return gold


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return 1.0 if parse_answer(prediction) == _gold_letter(gold) else 0.0


def _aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """`accuracy` (the paper's SQA-IMG), how many predictions LLaVA's parser could not read at all, and lmms-eval's
    accuracy beside them."""
    if not records:
        return empty_result("accuracy")
    return {
        "accuracy": percent_python([r.score for r in records]),
        "n": float(len(records)),
        "n_unparsed": float(sum(parse_answer(r.prediction) is None for r in records)),
        "lmms_eval/accuracy": percent_python([float(lmms_eval_hit(r.prediction, r.gold)) for r in records]),
    }


SCIENCEQA_ACCURACY = Metric(
    name="scienceqa_accuracy",
    primary="accuracy",
    score=_score,
    aggregate=_aggregate,
    reference="LLaVA llava/eval/eval_science_qa.py (IMG-Accuracy), haotian-liu/LLaVA@c121f0432da2",
)
