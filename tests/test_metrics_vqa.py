"""TextVQA: the EvalAI answer processor and LLaVA's leave-one-annotator-out VQA accuracy, checked by hand."""

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.vqa import normalize_vqa_answer, vqa_soft_score


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Yes  ", "yes"),  # case and surrounding whitespace
        ("Two dogs.", "2 dogs"),  # number word; trailing period
        ("The Cat", "cat"),  # article dropped
        ("an apple a day", "apple day"),
        ("dont", "don't"),  # contraction restored
        ("it's", "it 's"),  # "'s" split off by the tokenize step
        ("hello,world", "helloworld"),  # commas are deleted outright, not turned into spaces
        ("1,000", "1000"),
        ("a.b", "ab"),  # a period not followed by a digit goes
        ("3.14", "3.14"),  # ... one followed by a digit stays
        ("3.", "3"),
        ("what?", "what"),
        ("yes!", "yes"),  # "!" touches no space: becomes a space, then whitespace collapses
        ("a - b/c", "b c"),  # "-" touches a space: deleted; "/" does not: space; then "a" dropped
        ("\tNew\nYork", "new york"),
        ("10%", "10%"),  # "%" is not in EvalAI's punctuation list
    ],
)
def test_evalai_processor(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_evalai_processor_strips_at_most_32_periods():
    # EvalAI passes re.UNICODE (== 32) where `count` goes: only the first 32 periods are removed.
    assert normalize_vqa_answer("x" + "." * 40) == "x" + "." * 8


def _answers(k: int, answer: str = "cat") -> list[str]:
    return [answer] * k + [f"other{i}" for i in range(10 - k)]


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # k annotators gave the answer: the k of them see k-1 matches among the others, the 10-k see k.
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, (4 * 1 + 6 * 1) / 10),  # 1.0
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(k, expected):
    assert vqa_soft_score("cat", _answers(k)) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_normalises_both_sides():
    answers = ["two", "Two", "2"] + [f"x{i}" for i in range(7)]  # all three normalise to "2"
    assert vqa_soft_score("2.", answers) == pytest.approx(0.9, abs=1e-12)
    assert vqa_soft_score("The Cat!", _answers(2, "cat")) == pytest.approx(0.6, abs=1e-12)


def test_vqa_accuracy_needs_ten_answers():
    with pytest.raises(PdropEvalError, match="exactly 10"):
        vqa_soft_score("cat", ["cat"] * 9)


def test_vqa_accuracy_metric_aggregate_is_percent_of_mean():
    metric = get_metric("vqa_accuracy")
    records = [
        metric.record(0, "cat", _answers(1)),
        metric.record(1, "cat", _answers(4)),
        metric.record(2, "dog", _answers(4)),
    ]
    result = metric.aggregate(records)
    assert metric.primary == "accuracy"
    assert result["accuracy"] == pytest.approx((0.3 + 1.0 + 0.0) / 3 * 100)
    assert result["n"] == 3
