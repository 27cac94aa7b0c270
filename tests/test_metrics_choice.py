"""Option-letter matching (VLMEvalKit can_infer), MMBench circular evaluation and MMStar accuracy."""

import math

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.choice import infer_choice

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B) cat", "B"),  # the letter wins over option A's text
        ("The answer is B.", "B"),
        ("Answer: D", "D"),
        ("dog", "B"),  # option text instead of the letter
        ("a dog", "B"),  # lowercase "a" is not the letter A
        ("A or B", None),  # two letters: the letter rule fails, no option text
        ("It is a dog or a cat", None),  # two option texts
        ("", None),
        ("E", None),  # not an option
        ("The correct answer is B, not A.", "B"),  # two letters, rescued by the "answer is X" fallback
        ("The answer is a bird", "A"),  # ... which upstream matches case-insensitively: "a" reads as A
        ("B is the right choice for this picture", None),  # letter not among the last four words; too long for text
        ("Cannot determine the answer", "Z"),  # refusal -> Z (wrong)
        ("Z", "Z"),
    ],
)
def test_infer_choice(answer, letter):
    assert infer_choice(answer, OPTIONS) == letter


def test_missing_options_are_dropped_like_build_choices():
    metric = get_metric("mcq_accuracy")
    meta = {"options": {"A": "cat", "B": "dog", "C": math.nan, "D": None}, "category": "x", "l2-category": "y"}
    assert metric.score("C", "C", meta) == 0.0  # C is no longer an option: unreadable
    assert metric.score("B", "B", meta) == 1.0


def _rotation(index, gold, prediction, category):
    meta = {"index": index, "options": OPTIONS, "category": category, "l2-category": "perception"}
    return get_metric("mmbench_circular").record(index, prediction, gold, meta)


def test_mmbench_circular_one_failing_rotation_fails_the_question():
    metric = get_metric("mmbench_circular")
    records = [
        # question 5: four rotations, the third answered wrong
        _rotation(5, "B", "B", "ocr"),
        _rotation(1_000_005, "A", "A", "ocr"),
        _rotation(2_000_005, "D", "C", "ocr"),
        _rotation(3_000_005, "C", "C", "ocr"),
        # question 6: both rotations right
        _rotation(6, "A", "A", "count"),
        _rotation(1_000_006, "D", "fish", "count"),  # option text counts as reading D
        # a copy whose main row (index 7) is absent: not a scored question
        _rotation(1_000_007, "B", "B", "count"),
    ]
    result = metric.aggregate(records)
    assert metric.primary == "circular_accuracy"
    assert result["circular_accuracy"] == 50.0  # question 5 wrong, question 6 right
    assert result["vanilla_accuracy"] == pytest.approx(6 / 7 * 100)  # every row on its own
    assert result["n"] == 7 and result["n_questions"] == 2
    assert result["circular_accuracy/category=ocr"] == 0.0
    assert result["circular_accuracy/category=count"] == 100.0
    assert result["circular_accuracy/l2-category=perception"] == 50.0


def test_mmbench_unparseable_rotation_is_wrong():
    metric = get_metric("mmbench_circular")
    records = [_rotation(9, "B", "B", "ocr"), _rotation(1_000_009, "C", "I don't know", "ocr")]
    assert metric.aggregate(records)["circular_accuracy"] == 0.0


def test_mmbench_needs_integer_index():
    metric = get_metric("mmbench_circular")
    record = metric.record("q", "B", "B", {"index": "abc", "options": OPTIONS})
    with pytest.raises(PdropEvalError, match="index"):
        metric.aggregate([record])


def test_mcq_accuracy_mmstar_with_lmms_eval_column():
    metric = get_metric("mcq_accuracy")
    rows = [
        ("A", "A", "c1", "X"),
        ("B", "(B) dog", "c1", "X"),
        ("C", "The answer is C", "c2", "Y"),
        ("D", "Answer: D", "c2", "Y"),
        ("A", "", "c2", "Y"),  # empty output: wrong for both
        ("B", "I pick A or B", "c2", "Y"),  # VLMEvalKit: two letters, unreadable; lmms-eval: the last one, B
    ]
    records = [
        metric.record(i, pred, gold, {"options": OPTIONS, "category": cat, "l2-category": l2})
        for i, (gold, pred, cat, l2) in enumerate(rows)
    ]
    result = metric.aggregate(records)
    assert result["accuracy"] == pytest.approx(4 / 6 * 100)  # micro
    assert result["accuracy/l2-category=X"] == 100.0
    assert result["accuracy/l2-category=Y"] == 50.0
    assert result["accuracy/category=c1"] == 100.0
    assert result["accuracy/category=c2"] == 50.0
    # lmms-eval: macro over l2-categories; X = 2/2, Y = 3/4 -> (1 + 3/4) / 2; per category the same within it
    assert result["lmms_eval/average"] == pytest.approx((1 + 3 / 4) / 2 * 100)
    assert result["lmms_eval/c1"] == 100.0
    assert result["lmms_eval/c2"] == 75.0


def test_mcq_accuracy_reads_the_prediction_as_stored():
    # VLMEvalKit's option-text rule gives up on answers over twice the options' length: with whitespace kept
    # around "dog" (the decoder strips it, the scorer does not), the answer is too long and reads as nothing.
    metric = get_metric("mcq_accuracy")
    options = {"A": "cat", "B": "dog"}
    assert metric.score("dog", "B", {"options": options}) == 1.0
    assert metric.score(" dog" + " " * 12, "B", {"options": options}) == 0.0


def test_choice_metrics_need_options_and_a_letter():
    metric = get_metric("mcq_accuracy")
    with pytest.raises(PdropEvalError, match="options"):
        metric.score("A", "A", {})
    with pytest.raises(PdropEvalError, match="letter"):
        metric.score("A", "cat", {"options": OPTIONS})


CN_OPTIONS = {"A": "猫", "B": "狗", "C": "鸟", "D": "鱼"}


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("B. 狗", "B"),
        ("(B) 狗", "B"),
        ("答案: B", "B"),  # ASCII colon is a separator
        ("答案：B", None),  # the full-width colon is not: "答案：B" stays one word
        ("B。", None),  # nor is the Chinese full stop
        ("答案是B", None),  # the "answer is X" fallback is English only
        ("狗", "B"),  # option text
        ("狗和猫", None),  # two option texts
        ("b", None),
    ],
)
def test_infer_choice_on_chinese_answers(answer, letter):
    """MMBench-CN goes through the same VLMEvalKit matcher; its separators are ASCII only."""
    assert infer_choice(answer, CN_OPTIONS) == letter


def test_mmbench_cn_circular_with_chinese_answers():
    metric = get_metric("mmbench_circular")

    def rotation(index, gold, prediction):
        meta = {"index": index, "options": CN_OPTIONS, "category": "ocr", "l2-category": "perception"}
        return metric.record(index, prediction, gold, meta)

    records = [
        rotation(30, "B", "狗"),  # text read as B: right
        rotation(1_000_030, "A", "A"),
        rotation(31, "C", "C"),
        rotation(1_000_031, "B", "B。"),  # unreadable rotation fails question 31
    ]
    result = metric.aggregate(records)
    assert result["circular_accuracy"] == 50.0
    assert result["vanilla_accuracy"] == 75.0
    assert result["n_questions"] == 2
