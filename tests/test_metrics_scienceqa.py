"""ScienceQA-IMG letter parsing and accuracy as LLaVA's eval_science_qa.py computes them.

Each expected letter below follows by hand from the script's three rules, in order: the whole text is one of A-E;
`text[0]` in A-E and `text[1:3] == ". "` (3+ characters); exactly one `re.findall(r'The answer is ([A-Z]).')` match.
"""

import math

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.scienceqa import parse_answer

OPTIONS = {"A": "cat", "B": "dog", "C": "bird"}


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("B", "B"),  # rule 1
        ("E", "E"),  # rule 1 knows A-E whatever the question's choices
        ("F", None),  # not among --options A-E
        ("B. dog", "B"),  # rule 2
        ("B.", None),  # two characters: rule 2 needs three, and no "The answer is"
        ("B.dog", None),  # rule 2 wants ". " after the letter
        ("F. dog", None),  # rule 2 only for A-E
        ("(B) dog", None),  # brackets are no rule at all
        ("b", None),  # case-sensitive
        ("dog", None),  # option text is never matched
        ("The answer is B.", "B"),  # rule 3
        ("The answer is F.", "F"),  # rule 3 takes any capital ...
        ("the answer is b.", None),  # ... but case-sensitively
        ("The answer is B", None),  # the regex's trailing `.` needs one more character
        ("The answer is B\nbecause", None),  # ... and `.` does not match a newline
        ("The answer is BC", "B"),  # ... any character at all
        ("The answer is (B).", None),  # the letter must follow "is " directly
        ("The answer is B. The answer is B.", None),  # two matches: FAILED even when they agree
        ("I think B. The answer is C.", "C"),  # rule 2 needs A-E first; rule 3 finds C
        ("B. The answer is C.", "B"),  # an earlier rule wins
        ("", None),
        ("答案是B。", None),  # Chinese text: no rule applies
        ("B ", None),  # the script reads the stripped output; an unstripped one is not "B"
    ],
)
def test_parse_answer_follows_eval_science_qa(prediction, letter):
    assert parse_answer(prediction) == letter


def _records(rows):
    metric = get_metric("scienceqa_accuracy")
    return [metric.record(i, prediction, gold, {"options": OPTIONS}) for i, (prediction, gold) in enumerate(rows)]


def test_accuracy_is_correct_over_total_and_counts_unparsed():
    metric = get_metric("scienceqa_accuracy")
    records = _records(
        [
            ("B", "B"),  # right
            ("The answer is A.", "A"),  # right
            ("C. bird", "C"),  # right
            ("A", "B"),  # parsed, wrong
            ("E", "C"),  # parsed (A-E), beyond the three choices: wrong
            ("(B)", "B"),  # unparsed: wrong
            ("", "A"),  # unparsed: wrong
        ]
    )
    assert [r.score for r in records] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    result = metric.aggregate(records)
    assert metric.primary == "accuracy"
    assert result["accuracy"] == pytest.approx(3 / 7 * 100)
    assert result["n"] == 7 and result["n_unparsed"] == 2
    # lmms-eval's rule: "B", "C. bird" right; "The answer is A." wrong (it never reads that phrase) -> 2/7
    assert result["lmms_eval/accuracy"] == pytest.approx(2 / 7 * 100)


@pytest.mark.parametrize(
    ("prediction", "gold", "llava", "lmms_eval"),
    [
        ("B.", "B", 0.0, True),  # lmms-eval needs no space after the period, LLaVA needs ". "
        ("b", "B", 0.0, True),  # lmms-eval ignores case
        ("The answer is B.", "B", 1.0, False),
        ("B. dog", "B", 1.0, True),
        ("c.", "C", 0.0, False),  # lmms-eval's second rule wants an uppercase first letter
    ],
)
def test_lmms_eval_column_differs_from_llava_where_the_rules_do(prediction, gold, llava, lmms_eval):
    from pdrop_eval.metrics.scienceqa import lmms_eval_hit

    assert get_metric("scienceqa_accuracy").score(prediction, gold, {}) == llava
    assert lmms_eval_hit(prediction, gold) is lmms_eval


def test_no_records_is_nan_not_zero():
    result = get_metric("scienceqa_accuracy").aggregate([])
    assert math.isnan(result["accuracy"]) and result["n"] == 0


@pytest.mark.parametrize("gold", ["b", "dog", 1, ""])
def test_gold_must_be_one_uppercase_letter(gold):
    with pytest.raises(PdropEvalError, match="uppercase option letter"):
        get_metric("scienceqa_accuracy").score("B", gold, {"options": OPTIONS})
