"""ANLS as VLMEvalKit computes it: normalised strings, raw-length denominator, keep similarity >= 0.5."""

import pytest

from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.anls import anls_score, levenshtein


@pytest.mark.parametrize(("a", "b", "d"), [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("abcd", "ab xy", 3)])
def test_levenshtein(a, b, d):
    assert levenshtein(a, b) == d
    assert levenshtein(b, a) == d


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("hello", ["hello"], 1.0),
        ("hello world", ["Hello  World"], 1.0),  # case and inner whitespace are normalised away
        ("abxy", ["abcd"], 1 - 2 / 4),  # d = 0.5 exactly: similarity 0.5 is kept (0 only when < 0.5)
        ("abcdeXXXX", ["abcdefghi"], 1 - 4 / 9),  # d = 4/9: 5/9 kept
        ("abcdXXXXX", ["abcdefghi"], 0.0),  # d = 5/9: similarity 4/9 < 0.5 -> 0
        ("ab    xy", ["abcd"], 1 - 3 / 8),  # distance 3 on "ab xy", but divided by the RAW length 8
        ("hallo", ["zzz", "hello"], 1 - 1 / 5),  # best answer counts
        ("", [""], 1.0),  # both empty: distance 0
        ("", ["abc"], 0.0),
    ],
)
def test_anls(prediction, answers, expected):
    assert anls_score(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_anls_metric_accepts_a_single_answer_string_and_aggregates_percent():
    metric = get_metric("anls")
    records = [
        metric.record(0, "hello", "hello"),
        metric.record(1, "abxy", ["abcd"]),
        metric.record(2, "zzz", ["abc"]),
        metric.record(3, "hallo", ["hello"]),
    ]
    result = metric.aggregate(records)
    assert metric.primary == "anls"
    assert result["anls"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.8) / 4 * 100)
    assert result["n"] == 4
