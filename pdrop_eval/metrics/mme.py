"""MME exactly as LLaVA scores it: `playground/data/eval/MME/convert_answer_to_mme.py` writes each answer into
its subtask's file of MME's own `eval_tool`, and MME's `eval_tool/calculation.py` (BradyFU/Awesome-Multimodal-
Large-Language-Models, Evaluation branch, shipped inside LLaVA's eval.zip) scores those files.

Parsing (`calculate_metrics.parse_pred_ans`): the answer is lowercased; "yes" or "no" as the whole answer is kept,
otherwise only its first four characters are looked at: "yes" among them -> yes, else "no" among them -> no, else
"other" (always wrong). So "Yes, there is a dog" is yes, "Not sure" and "None" are no, "eyes" is yes, "There is"
and an empty answer are other, and "The answer is yes" is other. calculation.py reads each answer back from a
line that still ends in "\\n"; that newline never changes what the first four characters contain, so it is not
reproduced. (An answer holding a newline or a tab breaks the official file layout; here only its first four
characters count.)

Per subtask (`process_result`): acc = correct questions / questions; acc+ = images whose two questions are both
right / images; score = acc×100 + acc+×100 (0–200). calculation.py pairs consecutive lines of a subtask's file;
the files keep LLaVA's question order, in which an image's two questions are adjacent, so pairing by image (as
here) is the same and does not depend on record order. Perception = the sum of the 10 perception subtask scores
(0–2000: the paper's MME number), cognition = the sum of the 4 cognition ones (0–800). A total is reported only
when all its subtasks are present (calculation.py cannot run otherwise); a partial run (--limit) still gets every
subtask it covers.

lmms-eval 0.7.3's `mme` task (`lmms_eval/tasks/mme/utils.py`) parses differently ("." removed, a lone "y"/"n"
accepted), files every subtask outside the perception list under cognition, and sums whichever subtasks are
present; its totals are added as `lmms_eval/perception` and `lmms_eval/cognition`, NaN where it gives no number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import Metric, ScoredRecord, empty_result, require_meta

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
GROUPS = {"perception": PERCEPTION, "cognition": COGNITION}
QUESTIONS_PER_IMAGE = 2


def mme_answer(prediction: str) -> str:
    """calculation.py `parse_pred_ans` on the lowercased answer: "yes", "no" or "other"."""
    return _whole_or_prefix(prediction.strip().lower())


def lmms_eval_answer(prediction: str) -> str:
    """lmms-eval `mme/utils.py` `parse_pred_ans`: lowercased, stripped, every "." removed; "y"/"n" alone count."""
    answer = prediction.lower().strip().replace(".", "")
    if len(answer) == 1:
        return {"y": "yes", "n": "no"}.get(answer, "other")
    return _whole_or_prefix(answer)


def _whole_or_prefix(answer: str) -> str:
    """The rule both parsers end with: "yes"/"no" as the whole answer, else "yes" then "no" looked for among the
    first four characters, else "other"."""
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def _label(gold: Any) -> str:
    """MME's ground truth is "Yes"/"No"; calculation.py lowercases it and asserts yes/no."""
    label = gold.lower() if isinstance(gold, str) else None
    if label not in ("yes", "no"):
        raise PdropEvalError(f"metric 'mme' needs gold 'Yes' or 'No', got {gold!r}; check the MME answer join")
    return label


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return 1.0 if mme_answer(prediction) == _label(gold) else 0.0


def _images(records: Sequence[ScoredRecord]) -> dict[str, dict[str, list[ScoredRecord]]]:
    """Records by subtask, then by image (first-appearance order); MME asks exactly two questions per image."""
    by_subtask: dict[str, dict[str, list[ScoredRecord]]] = {}
    for r in records:
        subtask = str(require_meta(r.meta, "category", "mme", r.id))
        image = str(require_meta(r.meta, "image", "mme", r.id))
        questions = by_subtask.setdefault(subtask, {}).setdefault(image, [])
        questions.append(r)
        if len(questions) > QUESTIONS_PER_IMAGE:
            raise PdropEvalError(
                f"metric 'mme': image {image!r} of subtask {subtask!r} has more than {QUESTIONS_PER_IMAGE} questions "
                f"(e.g. {[q.id for q in questions]}); MME pairs two questions per image, so the data holds duplicates"
            )
    return by_subtask


def subtask_score(images: Mapping[str, Sequence[tuple[str, str]]]) -> tuple[float, float, float]:
    """(acc, acc+, score) of one subtask from its images' (predicted, gold) pairs, as calculation.py adds them."""
    pairs = [pair for questions in images.values() for pair in questions]
    acc = sum(predicted == gold for predicted, gold in pairs) / len(pairs)
    both_right = sum(
        sum(predicted == gold for predicted, gold in questions) == QUESTIONS_PER_IMAGE for questions in images.values()
    )
    acc_plus = both_right / len(images)
    score = 0.0
    for value in (acc, acc_plus):
        score += value * 100
    return acc, acc_plus, score


def _group_total(scores: Mapping[str, float], subtasks: Sequence[str]) -> float:
    """calculation.py's running sum in its subtask order; NaN unless every subtask of the group was scored."""
    if any(subtask not in scores for subtask in subtasks):
        return math.nan
    total = 0.0
    for subtask in subtasks:
        total += scores[subtask]
    return total


def _lmms_eval_totals(by_subtask: Mapping[str, Mapping[str, Sequence[ScoredRecord]]]) -> dict[str, float]:
    """lmms-eval `mme_process_results` + `mme_aggregate_results`: a subtask counts for perception when it is one of
    the perception subtasks and for cognition otherwise; per subtask the mean over images of (acc + acc+) of that
    image, summed over the subtasks of the group present, in order of first appearance.

    NaN where lmms-eval gives no number: a group without records (it reports no such metric), or one holding an
    image without exactly two questions, e.g. a pair cut by --limit (its `assert len(scores) == 2` stops the run).
    """
    per_subtask: dict[str, dict[str, float]] = {group: {} for group in GROUPS}
    unpaired: set[str] = set()
    for subtask, images in by_subtask.items():
        group = "perception" if subtask in PERCEPTION else "cognition"
        image_scores = []
        for questions in images.values():
            if len(questions) != QUESTIONS_PER_IMAGE:
                unpaired.add(group)
            hits = [lmms_eval_answer(r.prediction) == _label(r.gold) for r in questions]
            image_scores.append((sum(hits) == QUESTIONS_PER_IMAGE) * 100.0 + sum(hits) / len(hits) * 100.0)
        per_subtask[group][subtask] = sum(image_scores) / len(image_scores)
    return {
        f"lmms_eval/{group}": math.nan if group in unpaired or not scores else sum(scores.values())
        for group, scores in per_subtask.items()
    }


def _aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """Per subtask acc / acc+ (%) and score, the perception and cognition totals, and lmms-eval's totals."""
    if not records:
        return empty_result("perception")
    by_subtask = _images(records)
    out: dict[str, float] = {}
    scores: dict[str, float] = {}
    for subtask, images in by_subtask.items():
        pairs = {
            image: [(mme_answer(r.prediction), _label(r.gold)) for r in questions]
            for image, questions in images.items()
        }
        acc, acc_plus, scores[subtask] = subtask_score(pairs)
        out[f"score/{subtask}"] = scores[subtask]
        out[f"acc/{subtask}"] = acc * 100
        out[f"acc_plus/{subtask}"] = acc_plus * 100
        out[f"n/{subtask}"] = float(sum(len(questions) for questions in images.values()))
    for group, subtasks in GROUPS.items():
        out[group] = _group_total(scores, subtasks)
        out[f"n/{group}_subtasks"] = float(sum(subtask in scores for subtask in subtasks))
    out["n"] = float(len(records))
    out.update(_lmms_eval_totals(by_subtask))
    return out


MME = Metric(
    name="mme",
    primary="perception",
    score=_score,
    aggregate=_aggregate,
    reference="LLaVA playground/data/eval/MME/convert_answer_to_mme.py + MME eval_tool/calculation.py "
    "(parse_pred_ans, process_result: acc + acc+ per subtask; perception = sum of 10 subtasks)",
    unit="score out of 2000",
)
