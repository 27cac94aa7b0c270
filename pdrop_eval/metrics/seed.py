"""SEED-Bench image accuracy exactly as LLaVA scores it: `scripts/convert_seed_for_submission.py` `eval_single`
(haotian-liu/LLaVA@524a75b, run by `scripts/v1_5/eval/seed.sh`).

No letter is extracted: the answer text, `.strip()`ped by `llava/eval/model_vqa_loader.py`, must EQUAL the
annotation's letter (`row['text'] == question_data['answer']`). So "B" is right for B, while "B.", "(B)",
"B. cat", "b" and "The answer is B" are all wrong; an unanswered question is wrong and still counted.

Answers are looked up by question id in a dict built from the answer file, so where SEED-Bench.json repeats an id
(it holds 14,233 image questions on 14,232 ids: "49914" twice) every question with that id is judged by the LAST
answer written for it. Accuracy per question type (the 9 image dimensions) and overall over the image questions
(`eval_only_type='image'`): correct / count ×100.

lmms-eval 0.7.3's `seedbench` task (`tasks/seedbench/utils.py`) is looser: `seed_process_result` keeps only the
first character of a longer stripped answer ("B. cat" -> "B") and `seed_aggregation_result` compares it to the gold
ignoring case ("b" is right); each question is judged by its own answer, even where an id repeats. That rule is
added as `lmms_eval/accuracy`, its `seed_image` metric (equal to its `seed_all` here, as only image questions run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import Metric, ScoredRecord, empty_result, require_meta

LETTERS = ("A", "B", "C", "D")


def seed_hit(prediction: str, gold: Any) -> bool:
    """convert_seed_for_submission.py: the stripped answer text equals the gold letter, nothing more."""
    if gold not in LETTERS:
        raise PdropEvalError(f"metric 'seed_image' needs gold as one of {LETTERS}, got {gold!r}")
    return prediction.strip() == gold


def lmms_eval_hit(prediction: str, gold: str) -> bool:
    """lmms-eval `seed_process_result` (strip, keep the first character of a longer answer) then
    `seed_aggregation_result`'s test, which lowercases and strips both sides."""
    answer = prediction.strip()
    first = answer[0] if len(answer) > 1 else answer
    return first.lower().strip() == gold.lower().strip()


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return 1.0 if seed_hit(prediction, gold) else 0.0


def _percent(hits: Sequence[bool]) -> float:
    """`correct / count * 100` on integer counts, as eval_single divides."""
    return sum(hits) / len(hits) * 100


def _aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """eval_single: each question judged by the last answer stored under its id; per question type and overall."""
    if not records:
        return empty_result("accuracy")
    last_answer = {str(require_meta(r.meta, "question_id", "seed_image", r.id)): r.prediction for r in records}
    hits = [seed_hit(last_answer[str(r.meta["question_id"])], r.gold) for r in records]
    out = {"accuracy": _percent(hits), "n": float(len(records))}
    if all("question_type" in r.meta for r in records):
        by_type: dict[tuple[int, str], list[bool]] = {}
        for r, hit in zip(records, hits):
            by_type.setdefault((int(r.meta.get("question_type_id", 0)), str(r.meta["question_type"])), []).append(hit)
        for (_, name), type_hits in sorted(by_type.items()):
            out[f"accuracy/question_type={name}"] = _percent(type_hits)
    out["lmms_eval/accuracy"] = _percent([lmms_eval_hit(r.prediction, r.gold) for r in records])
    return out


SEED_IMAGE = Metric(
    name="seed_image",
    primary="accuracy",
    score=_score,
    aggregate=_aggregate,
    reference="LLaVA scripts/convert_seed_for_submission.py eval_single (answer text == gold letter; image questions)",
)
