"""POPE as LLaVA's eval_pope.py scores it, with precision/recall/F1 worked out by hand."""

import math

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.yesno import pope_answer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"),
        ("Yes, there is a dog.", "yes"),
        ("No.", "no"),
        ("no", "no"),
        ("There is no dog in the image.", "no"),
        ("not sure", "no"),
        ("Not sure", "yes"),  # only "No", "no" and "not" count: capital "Not" does not
        ("NO", "yes"),
        ("Yes. There is no dog.", "yes"),  # only the first sentence is read
        ("No,there is", "yes"),  # the comma is deleted, leaving the word "Nothere"
        ("no\nthere is", "yes"),  # words are split on single spaces only
        ("", "yes"),
    ],
)
def test_pope_parsing(text, parsed):
    assert pope_answer(text) == parsed


def _records():
    metric = get_metric("pope")
    rows = [
        # adversarial: TP=3, FP=1, TN=2, FN=1
        ("adversarial", "yes", "Yes"),  # TP
        ("adversarial", "yes", "Yes, there is a dog."),  # TP
        ("adversarial", "yes", "yes"),  # TP
        ("adversarial", "no", "Yes"),  # FP
        ("adversarial", "no", "No."),  # TN
        ("adversarial", "no", "There is no dog."),  # TN
        ("adversarial", "yes", "not sure"),  # FN
        # random: TP=2, FP=0, TN=1, FN=1
        ("random", "yes", "Yes"),  # TP
        ("random", "yes", "Yes"),  # TP
        ("random", "no", "no"),  # TN
        ("random", "yes", "No"),  # FN
    ]
    return metric, [metric.record(i, p, g, {"category": c}) for i, (c, g, p) in enumerate(rows)]


def test_pope_confusion_and_rates_by_hand():
    metric, records = _records()
    result = metric.aggregate(records)
    assert metric.primary == "f1_mean"
    counts = [result[f"{k}/adversarial"] for k in ("tp", "fp", "tn", "fn")]
    assert counts == [3, 1, 2, 1]
    # adversarial: accuracy 5/7, precision 3/4, recall 3/4, F1 0.75, yes share 4/7
    assert result["accuracy/adversarial"] == pytest.approx(5 / 7 * 100)
    assert result["precision/adversarial"] == pytest.approx(75.0)
    assert result["recall/adversarial"] == pytest.approx(75.0)
    assert result["f1/adversarial"] == pytest.approx(75.0)
    assert result["yes_pct/adversarial"] == pytest.approx(4 / 7 * 100)
    # random: accuracy 3/4, precision 1, recall 2/3, F1 = 2·1·(2/3) / (5/3) = 0.8, yes share 2/4
    assert result["accuracy/random"] == pytest.approx(75.0)
    assert result["precision/random"] == pytest.approx(100.0)
    assert result["recall/random"] == pytest.approx(200 / 3)
    assert result["f1/random"] == pytest.approx(80.0)
    assert result["yes_pct/random"] == pytest.approx(50.0)
    assert result["n/random"] == 4
    # the paper's POPE number: mean F1 over the categories present
    assert result["f1_mean"] == pytest.approx((75.0 + 80.0) / 2)
    assert result["accuracy_mean"] == pytest.approx((5 / 7 + 3 / 4) / 2 * 100)
    assert result["n"] == 11
    assert "f1/popular" not in result


def test_pope_lmms_eval_column_by_hand():
    # lmms-eval needs the whole answer to be "yes"/"no" after lower().strip(): rows 1, 2, 4, 5 of the
    # adversarial block ("Yes, there is a dog.", "No.", "There is no dog.", "not sure") are neither.
    # Correct: rows 0, 2 (TP), 7, 8 (TP), 9 (TN) -> 5/11. TP=4, FP=1 (row 3), FN=1 (row 10): P = R = F1 = 0.8.
    metric, records = _records()
    result = metric.aggregate(records)
    assert result["lmms_eval/accuracy"] == pytest.approx(5 / 11 * 100)
    assert result["lmms_eval/precision"] == pytest.approx(80.0)
    assert result["lmms_eval/recall"] == pytest.approx(80.0)
    assert result["lmms_eval/f1"] == pytest.approx(80.0)


def test_pope_all_no_predictions_do_not_divide_by_zero():
    metric = get_metric("pope")
    records = [metric.record(i, "No", g, {"category": "popular"}) for i, g in enumerate(["yes", "no"])]
    result = metric.aggregate(records)
    assert result["precision/popular"] == 0.0
    assert result["f1/popular"] == 0.0
    assert result["accuracy/popular"] == 50.0


def test_pope_needs_category_and_yes_no_gold():
    metric = get_metric("pope")
    with pytest.raises(PdropEvalError, match="category"):
        metric.aggregate([metric.record(0, "yes", "yes", {})])
    with pytest.raises(PdropEvalError, match="'yes' or 'no'"):
        metric.score("yes", "Yes", {"category": "random"})


def test_pope_empty():
    result = get_metric("pope").aggregate([])
    assert math.isnan(result["f1_mean"]) and result["n"] == 0
