"""The metric registry: names the task cards use, clear errors, and a headline key in every aggregate."""

import math

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import METRICS, Metric, get_metric

NAMES = {
    "exact_match",
    "vqa_accuracy",
    "pope",
    "mmbench_circular",
    "mcq_accuracy",
    "anls",
    "relaxed_accuracy",
    "ocrvqa_exact",
    "scienceqa_accuracy",
    "mme",
    "seed_image",
}

ONE_SAMPLE = {
    "exact_match": ("yes", "yes", {}),
    "vqa_accuracy": ("cat", ["cat"] * 10, {}),
    "pope": ("Yes", "yes", {"category": "random"}),
    "mmbench_circular": ("A", "A", {"index": 0, "options": {"A": "x", "B": "y"}, "category": "c", "l2-category": "l"}),
    "mcq_accuracy": ("A", "A", {"options": {"A": "x", "B": "y"}, "category": "c", "l2-category": "l"}),
    "anls": ("abc", ["abc"], {}),
    "relaxed_accuracy": ("3", ["3"], {}),
    "ocrvqa_exact": ("abc", ["abc"], {}),
    "scienceqa_accuracy": ("A", "A", {"options": {"A": "x", "B": "y"}}),
    "seed_image": ("A", "A", {"question_id": "1", "question_type_id": 1, "question_type": "Scene Understanding"}),
}
# Percentages: one right sample is 100 on the headline (MME's headline is a 0-2000 sum, see test_metrics_mme.py).
PERCENT_NAMES = sorted(name for name in NAMES if get_metric(name).unit == "%")


def test_registry_names():
    assert set(METRICS) == NAMES
    for name, metric in METRICS.items():
        assert isinstance(metric, Metric) and metric.name == name and metric.reference


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(PdropEvalError) as err:
        get_metric("bleu")
    assert "bleu" in str(err.value) and all(name in str(err.value) for name in NAMES)


@pytest.mark.parametrize("name", PERCENT_NAMES)
def test_perfect_sample_scores_100_on_the_primary_key(name):
    metric = get_metric(name)
    prediction, gold, meta = ONE_SAMPLE[name]
    record = metric.record("id0", prediction, gold, meta)
    assert record.score == 1.0
    result = metric.aggregate([record])
    assert result[metric.primary] == 100.0
    assert result["n"] == 1


@pytest.mark.parametrize("name", sorted(NAMES))
def test_no_records_gives_nan_not_zero(name):
    metric = get_metric(name)
    result = metric.aggregate([])
    assert math.isnan(result[metric.primary]) and result["n"] == 0
