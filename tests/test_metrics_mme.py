"""MME as LLaVA scores it (convert_answer_to_mme.py + MME's eval_tool/calculation.py), values worked out by hand."""

import math

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import get_metric
from pdrop_eval.metrics.mme import COGNITION, PERCEPTION, lmms_eval_answer, mme_answer

MME = get_metric("mme")


@pytest.mark.parametrize(
    ("text", "official", "lmms_eval"),
    [
        ("Yes", "yes", "yes"),
        ("No", "no", "no"),
        ("  YES  ", "yes", "yes"),
        ("Yes, there is a dog.", "yes", "yes"),
        ("No, there isn't.", "no", "no"),
        ("Not sure", "no", "no"),  # "not " holds "no"
        ("None", "no", "no"),
        ("snow", "no", "no"),  # any "no" in the first four characters
        ("eyes", "yes", "yes"),  # any "yes" in the first four characters
        ("nyes", "yes", "yes"),  # "yes" is looked for before "no"
        ("There is a dog", "other", "other"),
        ("The answer is yes", "other", "other"),  # "yes" is past the first four characters
        ("I don't know", "other", "other"),
        ("Unknown", "other", "other"),  # "unkn": neither
        ("", "other", "other"),
        ("Y", "other", "yes"),  # lmms-eval accepts a lone y / n, calculation.py does not
        ("n.", "other", "no"),  # lmms-eval deletes every "." first
        ("y.e.s", "other", "yes"),
    ],
)
def test_yes_no_parsing(text, official, lmms_eval):
    assert mme_answer(text) == official
    assert lmms_eval_answer(text) == lmms_eval


def _record(subtask, image, k, gold, prediction):
    return MME.record(f"{subtask}/{image}#{k}", prediction, gold, {"category": subtask, "image": f"{subtask}/{image}"})


def _pair(subtask, image, first, second):
    """An image's two questions (gold Yes then No) answered `first` and `second`."""
    return [_record(subtask, image, 0, "Yes", first), _record(subtask, image, 1, "No", second)]


def test_subtask_acc_acc_plus_and_score():
    records = [
        *_pair("existence", "a.jpg", "Yes", "No"),  # both right
        *_pair("existence", "b.jpg", "Yes", "Yes"),  # one right
        *_pair("existence", "c.jpg", "No", "maybe"),  # none right ("maybe" is other)
    ]
    assert [r.score for r in records] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    out = MME.aggregate(records)
    assert out["acc/existence"] == pytest.approx(50.0, rel=1e-12)  # 3 of 6 questions
    assert out["acc_plus/existence"] == pytest.approx(100 / 3, rel=1e-12)  # 1 of 3 images
    assert out["score/existence"] == pytest.approx(50 + 100 / 3, rel=1e-12)
    assert out["n/existence"] == 6
    assert math.isnan(out["perception"]) and math.isnan(out["cognition"])  # 9 perception subtasks are missing
    assert out["n/perception_subtasks"] == 1 and out["n/cognition_subtasks"] == 0


def _all_subtasks(first="Yes", second="No"):
    return [record for subtask in PERCEPTION + COGNITION for record in _pair(subtask, "x.png", first, second)]


def test_totals_sum_every_subtask_of_their_group():
    records = _all_subtasks()
    # Make OCR 150 (one image of two fully right) and code_reasoning 50 (one of its two questions right).
    records += _pair("OCR", "y.png", "No", "Yes")
    records = [r for r in records if r.meta["category"] != "code_reasoning"]
    records += _pair("code_reasoning", "z.png", "Yes", "Yes")
    out = MME.aggregate(records)
    assert out["score/OCR"] == pytest.approx(50 + 50, rel=1e-12)  # acc 2/4, acc+ 1/2
    assert out["score/code_reasoning"] == pytest.approx(50 + 0, rel=1e-12)
    assert out["perception"] == pytest.approx(9 * 200 + 100, rel=1e-12)
    assert out["cognition"] == pytest.approx(3 * 200 + 50, rel=1e-12)
    assert out["n"] == len(records)
    assert MME.primary == "perception" and MME.unit == "score out of 2000"


def test_images_pair_up_whatever_the_record_order():
    records = [*_pair("count", "a.jpg", "Yes", "No"), *_pair("count", "b.jpg", "Yes", "Yes")]
    shuffled = [records[3], records[0], records[2], records[1]]
    assert MME.aggregate(shuffled) == MME.aggregate(records)
    assert MME.aggregate(shuffled)["acc_plus/count"] == pytest.approx(50.0, rel=1e-12)


def test_an_image_cut_in_half_by_limit_is_not_both_right():
    out = MME.aggregate([*_pair("color", "a.jpg", "Yes", "No"), _record("color", "b.jpg", 0, "Yes", "Yes")])
    assert out["acc/color"] == pytest.approx(100.0, rel=1e-12)
    assert out["acc_plus/color"] == pytest.approx(50.0, rel=1e-12)


def test_lmms_eval_totals_use_its_own_parsing():
    records = _all_subtasks(first="Y", second="N")  # calculation.py: both "other"; lmms-eval: both right
    out = MME.aggregate(records)
    assert out["perception"] == 0.0 and out["cognition"] == 0.0
    assert out["lmms_eval/perception"] == pytest.approx(2000.0, rel=1e-12)
    assert out["lmms_eval/cognition"] == pytest.approx(800.0, rel=1e-12)


def test_three_questions_on_one_image_is_an_error():
    records = [*_pair("scene", "a.jpg", "Yes", "No"), _record("scene", "a.jpg", 2, "Yes", "Yes")]
    with pytest.raises(PdropEvalError, match="more than 2 questions"):
        MME.aggregate(records)


def test_gold_must_be_yes_or_no():
    with pytest.raises(PdropEvalError, match="gold 'Yes' or 'No'"):
        MME.score("Yes", "maybe", {})


def test_missing_meta_names_the_sample():
    record = MME.record("q#0", "Yes", "Yes", {"category": "existence"})
    with pytest.raises(PdropEvalError, match=r"meta\['image'\].*'q#0'"):
        MME.aggregate([record])


def test_no_records_is_nan_not_zero():
    out = MME.aggregate([])
    assert math.isnan(out["perception"]) and out["n"] == 0
