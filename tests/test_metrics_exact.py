"""GQA exact match as LLaVA + GQA's eval.py score it, and VLMEvalKit's OCRVQA exact match."""

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.models import decode


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("yes", "yes", 1.0),
        ("Yes.", "yes", 1.0),  # lowercased, trailing period removed
        ("Yes...", "yes", 1.0),  # rstrip('.') removes every trailing period
        ("left. ", "left", 0.0),  # not stripped here (the decoder does it): the trailing space keeps the period
        (" left", "left", 0.0),
        ("yes!", "yes", 0.0),  # no other punctuation handling
        ("The cat", "cat", 0.0),  # no article removal
        ("two", "2", 0.0),  # no number words
        ("yes", "Yes", 0.0),  # the gold answer is compared as stored
        ("", "yes", 0.0),
    ],
)
def test_gqa_exact_match(prediction, gold, expected):
    assert get_metric("exact_match").score(prediction, gold, {}) == expected


def test_gqa_pipeline_strips_once_at_decode_then_scores(tiny_vlm):
    # LLaVA: `.strip()` when decoding (model_vqa_loader.py), then rstrip('.').lower() (convert_gqa_for_eval.py).
    loaded = tiny_vlm("tiny-llava")
    generated = loaded.tokenizer(" Yes. \n", add_special_tokens=False).input_ids
    prediction = decode(loaded, generated)
    assert prediction == "Yes."
    assert get_metric("exact_match").score(prediction, "yes", {}) == 1.0
    assert get_metric("exact_match").score(loaded.tokenizer.decode(generated), "yes", {}) == 0.0


def test_gqa_aggregate_with_lmms_eval_column():
    metric = get_metric("exact_match")
    preds_golds = [("Yes.", "yes"), ("yes!", "yes"), ("T-shirt", "t-shirt"), ("The cat", "cat"), ("no ", "no")]
    result = metric.aggregate([metric.record(i, p, g) for i, (p, g) in enumerate(preds_golds)])
    # LLaVA: "Yes." and "T-shirt" match -> 2/5. lmms-eval strips and deletes punctuation: + "yes!", "no " -> 4/5.
    assert result["accuracy"] == 40.0
    assert result["lmms_eval/accuracy"] == 80.0
    assert result["n"] == 5


def test_gqa_gold_must_be_a_string():
    with pytest.raises(PdropEvalError, match="exact_match"):
        get_metric("exact_match").score("yes", ["yes"], {})


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [(" denny's ", 1.0), ("DENNYS", 1.0), ("Dennys.", 0.0), ("Denny", 0.0)],
)
def test_ocrvqa_exact(prediction, expected):
    assert get_metric("ocrvqa_exact").score(prediction, ["Denny's", "dennys"], {}) == expected


def test_ocrvqa_aggregate_per_category():
    metric = get_metric("ocrvqa_exact")
    records = [
        metric.record(0, "Travel", "travel", {"category": "genre"}),
        metric.record(1, "Nope", "Cooking", {"category": "genre"}),
        metric.record(2, "1999", "1999", {"category": "year"}),
    ]
    result = metric.aggregate(records)
    assert result["accuracy"] == pytest.approx(200 / 3)
    assert result["accuracy/category=genre"] == 50.0
    assert result["accuracy/category=year"] == 100.0
