"""VLMEvalKit TSVs in $LMUData: literal answer lists, image references, MMStar inline options, fixed subsets."""

from __future__ import annotations

import warnings

import pytest

from pdrop_eval.errors import PdropEvalError, PdropEvalWarning
from pdrop_eval.registry import get_task, load_samples
from tests.fixtures_data import (
    MCQ_SUFFIX,
    MMBENCH_HEADER,
    MMSTAR_QUESTION,
    b64_image,
    mmbench_rows,
    write_mmbench_cn_tsv,
    write_mmbench_tsv,
    write_mmstar_authors_tsv,
    write_mmstar_tsv,
    write_tsv,
    write_vqa_tsv,
)


def _load(name: str, lmu, tmp_path, **kwargs):
    return load_samples(get_task(name), tmp_path / "none", lmu_data=lmu, hf_cache=tmp_path / "hub", **kwargs)


@pytest.mark.parametrize(("task", "filename"), [("docvqa", "DocVQA_VAL.tsv"), ("infovqa", "InfoVQA_VAL.tsv")])
def test_anls_tasks_parse_python_literal_answer_lists(tmp_path, task, filename):
    expected = write_vqa_tsv(tmp_path / filename)
    samples = _load(task, tmp_path, tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert samples[1].question == "What is the total?\n(in dollars)"
    assert samples[1].load_image().tobytes() == samples[0].load_image().tobytes()
    assert samples[2].load_image().mode == "RGB"


def test_chartqa_split_is_named_as_the_metric_expects(tmp_path):
    write_vqa_tsv(tmp_path / "ChartQA_TEST.tsv", with_split=True)
    samples = _load("chartqa", tmp_path, tmp_path)
    assert [s.meta["split"] for s in samples] == ["human_test", "augmented_test", "human_test"]


def test_ocrvqa_uses_a_fixed_subset_in_file_order(tmp_path):
    header = ["index", "image", "question", "answer"]
    rows = [[i, b64_image() if i == 0 else "0", f"Who wrote book {i}?", f"['author {i}']"] for i in range(6000)]
    write_tsv(tmp_path / "OCRVQA_TEST.tsv", header, rows)
    first = _load("ocrvqa", tmp_path, tmp_path)
    again = _load("ocrvqa", tmp_path, tmp_path)
    assert len(first) == 5000
    assert [s.id for s in first] == [s.id for s in again]
    assert [s.id for s in first] == sorted(s.id for s in first)
    assert first[0].gold == [f"author {first[0].id}"]


def test_mmstar_options_stay_inside_the_question_and_are_parsed_for_the_matcher(tmp_path):
    expected = write_mmstar_tsv(tmp_path / "MMStar.tsv")
    samples = _load("mmstar", tmp_path, tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.meta["options"] for s in samples] == expected["options"]
    assert samples[0].meta["category"] == "coarse perception"
    assert samples[0].meta["l2-category"] == "image scene and topic"
    assert samples[1].load_image().mode == "RGB"


def test_mmbench_from_vlmevalkit_tsv(tmp_path):
    expected = write_mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv")
    samples = _load("mmbench", tmp_path, tmp_path)
    assert [s.prompt for s in samples] == expected["prompts"]
    assert samples[1].prompt.endswith(MCQ_SUFFIX)


def test_mmbench_cn_from_vlmevalkit_tsv_gets_the_chinese_suffix(tmp_path):
    expected = write_mmbench_cn_tsv(tmp_path / "MMBench_DEV_CN.tsv")
    samples = _load("mmbench_cn", tmp_path, tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert samples[0].prompt.endswith("\n请直接回答选项字母。")
    assert samples[2].meta["category"] == "image_scene"


def test_gqa_from_vlmevalkit_tsv_keeps_a_plain_string_gold(tmp_path):
    write_tsv(tmp_path / "GQA_TestDev_Balanced.tsv", ["index", "image", "question", "answer"],
              [[0, b64_image(), "Is it sunny?", "yes"]])
    (sample,) = _load("gqa", tmp_path, tmp_path)
    assert sample.gold == "yes" and sample.id == 0


def test_dangling_image_reference_names_the_sample_and_file(tmp_path):
    write_tsv(tmp_path / "DocVQA_VAL.tsv", ["index", "image", "question", "answer"],
              [[1, "99", "q?", "['a']"]])
    with pytest.raises(PdropEvalError, match=r"sample 1.*DocVQA_VAL\.tsv"):
        _load("docvqa", tmp_path, tmp_path)


def test_corrupt_base64_image_names_the_sample_and_file(tmp_path):
    junk = "QUJD" * 40
    write_tsv(tmp_path / "DocVQA_VAL.tsv", ["index", "image", "question", "answer"], [[5, junk, "q?", "['a']"]])
    (sample,) = _load("docvqa", tmp_path, tmp_path)
    with pytest.raises(PdropEvalError, match=r"sample 5.*DocVQA_VAL\.tsv"):
        sample.load_image()


def test_missing_required_column_is_one_error_naming_file_column_and_present_columns(tmp_path):
    write_tsv(tmp_path / "DocVQA_VAL.tsv", ["index", "image", "question"], [[5, b64_image(), "q?"]])
    with pytest.raises(PdropEvalError) as caught:
        _load("docvqa", tmp_path, tmp_path)
    message = str(caught.value)
    assert "DocVQA_VAL.tsv" in message and "answer column 'answer'" in message
    assert "['image', 'index', 'question']" in message


def test_only_list_literals_split_into_several_answers():
    """VLMEvalKit splits an answer cell only when it is a list (`istype(answer, list)`); a tuple-looking answer
    such as a year range is one answer."""
    from pdrop_eval.data.rows import answer_list

    assert answer_list("['1,000', '1000']") == ["1,000", "1000"]
    assert answer_list("(2013, 2014)") == ["(2013, 2014)"]
    assert answer_list("[unbalanced") == ["[unbalanced"]


def test_matcher_gets_every_option_while_the_prompt_stops_at_the_first_gap():
    """LLaVA lists options up to the first empty one; VLMEvalKit's matcher still knows all non-empty options."""
    from pdrop_eval.data.prompts import all_options, leading_options

    row = {"A": "cat", "B": "dog", "C": float("nan"), "D": "hen"}
    assert leading_options(row) == {"A": "cat", "B": "dog"}
    assert all_options(row) == {"A": "cat", "B": "dog", "D": "hen"}


def _load_noting_warnings(name: str, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = _load(name, tmp_path, tmp_path)
    return samples, [str(w.message) for w in caught if issubclass(w.category, PdropEvalWarning)]


def test_mmstar_tsv_as_published_with_l2_category_underscore(tmp_path):
    """VLMEvalKit's and Lin-Chen/MMStar's MMStar.tsv spell the column `l2_category`; the task reads it silently."""
    expected = write_mmstar_authors_tsv(tmp_path / "MMStar.tsv")
    samples, warned = _load_noting_warnings("mmstar", tmp_path)
    assert warned == []
    assert [s.id for s in samples] == expected["ids"]
    assert [s.meta["l2-category"] for s in samples] == expected["l2"]
    assert [s.meta["category"] for s in samples] == ["coarse perception", "math"]
    assert [s.meta["options"] for s in samples] == expected["options"]
    assert samples[0].prompt == MMSTAR_QUESTION + MCQ_SUFFIX


def test_missing_metadata_columns_warn_once_and_the_task_runs(tmp_path):
    """MMBench without category, l2-category, hint and split: questions and scores still come out, the metrics'
    breakdowns are left out (no key in meta), and one warning names every missing column."""
    dropped = {"category", "l2-category", "hint", "split"}
    keep = [i for i, name in enumerate(MMBENCH_HEADER) if name not in dropped]
    write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [MMBENCH_HEADER[i] for i in keep],
              [[row[i] for i in keep] for row in mmbench_rows()])
    samples, warned = _load_noting_warnings("mmbench", tmp_path)
    assert [s.prompt for s in samples][2:] == ['Which "word" is right?\nA. x\\ny\nB. z' + MCQ_SUFFIX,
                                               "Pick one\nA. yes\nB. no" + MCQ_SUFFIX]
    assert samples[0].prompt.startswith("What is shown?\nA. a cat")
    assert all(not dropped & set(s.meta) for s in samples)
    assert [s.meta["index"] for s in samples] == [12, 1000012, 13, 14]
    assert len(warned) == 1
    assert "task mmbench" in warned[0] and "['category', 'hint', 'l2-category', 'split']" in warned[0]


def test_ocrvqa_testcore_is_its_own_task_read_whole(tmp_path):
    """OCRVQA_TESTCORE.tsv is task ocrvqa_core: every row (no 5,000 subset), VLMEvalKit's answer lists."""
    rows = [[i, b64_image() if i == 0 else "0", f"Who wrote book {i}?", f"['author {i}']"] for i in range(5003)]
    write_tsv(tmp_path / "OCRVQA_TESTCORE.tsv", ["index", "image", "question", "answer"], rows)
    samples = _load("ocrvqa_core", tmp_path, tmp_path)
    assert [s.id for s in samples] == list(range(5003))
    assert samples[4242].gold == ["author 4242"]
    with pytest.raises(PdropEvalError, match="no data found for task 'ocrvqa'"):
        _load("ocrvqa", tmp_path, tmp_path)
