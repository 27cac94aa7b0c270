"""ChartQA relaxed accuracy (VLMEvalKit / pix2struct): 5% numeric tolerance, "%" divides by 100, else exact."""

import pytest

from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.relaxed import relaxed_accuracy


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("12", ["12"], 1.0),
        ("12.5", ["12"], 1.0),  # 0.5 / 12 = 4.2% <= 5%
        ("12.7", ["12"], 0.0),  # 0.7 / 12 = 5.8%
        ("21", ["20"], 1.0),  # exactly 5%: the boundary counts
        ("12", ["12%"], 0.0),  # gold 12% = 0.12, prediction 12
        ("0.12", ["12%"], 1.0),
        ("12%", ["12%"], 1.0),
        ("12%", ["12"], 0.0),  # prediction 0.12 vs 12
        ("1000", ["1,000"], 0.0),  # "1,000" is no float: falls back to string equality
        ("1,000", ["1,000"], 1.0),
        ("0.0", ["0"], 0.0),  # gold zero: no numeric comparison, strings differ
        ("0", ["0"], 1.0),
        (" Yes ", ["yes"], 1.0),  # prediction stripped, case ignored
        ("Republicans", ["Democrats", "republicans"], 1.0),  # any answer
        ("", ["12"], 0.0),
    ],
)
def test_relaxed_accuracy(prediction, answers, expected):
    assert relaxed_accuracy(prediction, answers) == expected


def test_relaxed_aggregate_per_split():
    metric = get_metric("relaxed_accuracy")
    rows = [
        ("12", "12", "human_test"),
        ("13", "12", "human_test"),
        ("0.5", "50%", "augmented_test"),
        ("a", "A", "augmented_test"),
    ]
    result = metric.aggregate([metric.record(i, p, [g], {"split": s}) for i, (p, g, s) in enumerate(rows)])
    assert result["relaxed_accuracy"] == 75.0
    assert result["relaxed_accuracy/split=human_test"] == 50.0
    assert result["relaxed_accuracy/split=augmented_test"] == 100.0
    assert result["n"] == 4
