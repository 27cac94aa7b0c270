"""SEED-Bench image accuracy as LLaVA's convert_seed_for_submission.py scores it: answer text == gold letter."""

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.seed import lmms_eval_hit, seed_hit

SEED = get_metric("seed_image")


@pytest.mark.parametrize(
    ("text", "official", "lmms_eval"),
    [
        ("B", True, True),
        (" B\n", True, True),  # model_vqa_loader strips the answer
        ("B.", False, True),  # no letter extraction officially; lmms-eval keeps the first character
        ("B. cat", False, True),
        ("(B)", False, False),
        ("(B) cat", False, False),
        ("b", False, True),  # lmms-eval compares ignoring case
        ("b. cat", False, True),
        ("The answer is B", False, False),
        ("A", False, False),
        ("", False, False),
    ],
)
def test_answer_must_equal_the_letter(text, official, lmms_eval):
    assert seed_hit(text, "B") is official
    assert lmms_eval_hit(text, "B") is lmms_eval


def _record(sample_id, question_id, gold, prediction, type_id=5, name="Instances Counting"):
    meta = {"question_id": question_id, "question_type_id": type_id, "question_type": name}
    return SEED.record(sample_id, prediction, gold, meta)


def test_accuracy_overall_and_per_question_type_in_type_order():
    records = [
        _record(1, "1", "A", "A"),
        _record(2, "2", "B", "B."),
        _record(3, "3", "C", "C", type_id=1, name="Scene Understanding"),
        _record(4, "4", "D", "", type_id=1, name="Scene Understanding"),
    ]
    out = SEED.aggregate(records)
    assert out["accuracy"] == pytest.approx(50.0, rel=1e-12)
    assert out["n"] == 4
    assert out["accuracy/question_type=Scene Understanding"] == pytest.approx(50.0, rel=1e-12)
    assert out["accuracy/question_type=Instances Counting"] == pytest.approx(50.0, rel=1e-12)
    assert [k for k in out if k.startswith("accuracy/")] == [
        "accuracy/question_type=Scene Understanding",
        "accuracy/question_type=Instances Counting",
    ]
    assert out["lmms_eval/accuracy"] == pytest.approx(75.0, rel=1e-12)  # "B." counts there


def test_a_repeated_question_id_is_judged_by_its_last_answer():
    records = [
        _record("49914#0", "49914", "C", "C"),  # right on its own, but the last answer under 49914 is "B"
        _record(7, "7", "A", "A"),
        _record("49914#1", "49914", "B", "B"),
    ]
    assert [r.score for r in records] == [1.0, 1.0, 1.0]
    assert SEED.aggregate(records)["accuracy"] == pytest.approx(200 / 3, rel=1e-12)


def test_gold_must_be_a_letter_and_question_id_is_needed():
    with pytest.raises(PdropEvalError, match="one of"):
        SEED.score("A", "E", {})
    with pytest.raises(PdropEvalError, match=r"meta\['question_id'\]"):
        SEED.aggregate([SEED.record(1, "A", "A", {})])
