"""LLaVA eval folders: every task loads its fixture with the right ids (types kept), prompts and gold."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from tests.fixtures_data import (
    CN_SUFFIX,
    SUFFIX,
    load_fixture_task,
    write_jsonl,
    write_llava_gqa,
    write_llava_pope,
    write_llava_scienceqa,
    write_llava_textvqa,
    write_mmbench_cn_tsv,
    write_mmbench_tsv,
)


def test_gqa_ids_stay_strings_and_gold_comes_from_the_questions_json(tmp_path):
    expected = write_llava_gqa(tmp_path)
    samples = load_fixture_task("gqa", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert all(isinstance(s.id, str) for s in samples)
    assert [s.gold for s in samples] == expected["gold"]
    assert samples[0].prompt == "Is the sky dark?" + SUFFIX
    assert samples[0].question == "Is the sky dark?"
    assert samples[1].meta["types"]["detailed"] == "color"
    image = samples[1].load_image()
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert samples[1].image_source.endswith("gqa/data/images/n33334.png")


def test_gqa_limit_keeps_file_order(tmp_path):
    write_llava_gqa(tmp_path)
    assert [s.id for s in load_fixture_task("gqa", tmp_path, limit=2)] == ["20968475", "201640614"]


def test_textvqa_keeps_the_ocr_line_and_joins_gold_on_image_and_lowercased_question(tmp_path):
    expected = write_llava_textvqa(tmp_path)
    samples = load_fixture_task("textvqa", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert samples[1].prompt.endswith("\nReference OCR token: \n" + SUFFIX[1:])
    assert [s.question for s in samples] == expected["questions"]
    assert [s.gold for s in samples] == expected["gold"]
    assert all(len(s.gold) == 10 for s in samples)
    assert samples[0].meta["image_id"] == samples[1].meta["image_id"] == "003a8ae2ef43b901"
    assert samples[0].load_image().mode == "RGB"


def test_textvqa_row_without_annotation_is_an_error(tmp_path):
    write_llava_textvqa(tmp_path)
    path = tmp_path / "textvqa/llava_textvqa_val_v051_ocr.jsonl"
    write_jsonl(path, [{"question_id": "ffff", "image": "x.jpg",
                        "text": "unknown?\nReference OCR token: a\n" + SUFFIX[1:]}])
    with pytest.raises(PdropEvalError, match="no annotation"):
        load_fixture_task("textvqa", tmp_path)


def test_pope_reads_crlf_label_files_by_position_within_category(tmp_path):
    expected = write_llava_pope(tmp_path)
    assert b"\r\n" in (tmp_path / "pope/coco/coco_pope_random.json").read_bytes()
    samples = load_fixture_task("pope", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert all(isinstance(s.id, int) for s in samples)
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.meta["category"] for s in samples] == expected["categories"]
    assert samples[0].prompt == "Is there a snowboard in the image?" + SUFFIX
    assert samples[0].question == "Is there a snowboard in the image?"


def test_pope_label_count_mismatch_is_an_error(tmp_path):
    write_llava_pope(tmp_path)
    write_jsonl(tmp_path / "pope/coco/coco_pope_popular.json", [{"question_id": 1, "label": "yes"}], "\r\n")
    with pytest.raises(PdropEvalError, match="matched by position"):
        load_fixture_task("pope", tmp_path)


def test_mmbench_tsv_options_hints_nan_and_circular_copies(tmp_path):
    expected = write_mmbench_tsv(tmp_path / "mmbench/mmbench_dev_20230712.tsv")
    samples = load_fixture_task("mmbench", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.gold for s in samples] == expected["gold"]
    copy = samples[1]
    assert copy.meta["index"] == 1000012 and copy.meta["options"] == {"A": "a dog", "B": "a bird", "C": "a fish",
                                                                        "D": "a cat"}
    # the prompt stops at the first empty option (LLaVA); the matcher knows every non-empty one (VLMEvalKit)
    assert samples[2].meta["options"] == {"A": "x\\ny", "B": "z", "D": "w"}
    assert samples[0].meta["category"] == "object_localization"
    assert samples[0].meta["l2-category"] == "finegrained_perception (instance-level)"
    assert copy.load_image().tobytes() == samples[0].load_image().tobytes()
    assert samples[3].load_image().mode == "RGB"


def test_scienceqa_keeps_the_test_questions_with_an_image_and_their_llava_prompts(tmp_path):
    """Row 15 (text-only) and row 7 (in `val`) are outside ScienceQA-IMG; `<image>` goes wherever it stood."""
    expected = write_llava_scienceqa(tmp_path)
    samples = load_fixture_task("scienceqa_img", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert all(isinstance(s.id, str) for s in samples)
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.gold for s in samples] == expected["gold"]
    assert samples[2].gold == "E" and samples[2].meta["options"]["E"] == "3:1"
    assert samples[0].meta["options"] == {
        "A": "if the spacecraft was damaged",
        "B": "how steady a parachute was",
        "C": "whether it would swing",
    }
    assert samples[0].image_source.endswith("scienceqa/images/test/5/image.png")
    assert {s.load_image().mode for s in samples} == {"RGB"}


def test_scienceqa_gold_comes_from_problems_json_as_the_scorer_reads_it(tmp_path):
    write_llava_scienceqa(tmp_path)
    path = tmp_path / "scienceqa/problems.json"
    problems = json.loads(path.read_text())
    problems["11"]["answer"] = 3
    path.write_text(json.dumps(problems))
    samples = {s.id: s for s in load_fixture_task("scienceqa_img", tmp_path)}
    assert samples["11"].gold == "D"


def test_scienceqa_question_missing_from_problems_json_is_an_error(tmp_path):
    write_llava_scienceqa(tmp_path)
    path = tmp_path / "scienceqa/problems.json"
    problems = json.loads(path.read_text())
    del problems["42"]
    path.write_text(json.dumps(problems))
    with pytest.raises(PdropEvalError, match="'42'.*missing from.*problems.json"):
        load_fixture_task("scienceqa_img", tmp_path)


def test_scienceqa_questions_file_of_another_split_is_an_error(tmp_path):
    """A train file (no id in the test split) must not give an empty task."""
    write_llava_scienceqa(tmp_path)
    path = tmp_path / "scienceqa/pid_splits.json"
    path.write_text(json.dumps({"train": ["5", "11", "42"], "test": ["15"]}))
    with pytest.raises(PdropEvalError, match="no question with an image in split 'test'"):
        load_fixture_task("scienceqa_img", tmp_path)


@pytest.mark.parametrize("folder", ["mmbench_cn", "mmbench"])
def test_mmbench_cn_tsv_in_the_scripts_folder_or_the_docs_folder(tmp_path, folder):
    """scripts/v1_5/eval/mmbench_cn.sh reads mmbench_cn/, docs/Evaluation.md says mmbench/: both are found."""
    expected = write_mmbench_cn_tsv(tmp_path / folder / "mmbench_dev_cn_20231003.tsv")
    samples = load_fixture_task("mmbench_cn", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert all(s.prompt.endswith(CN_SUFFIX) for s in samples)
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.meta["index"] for s in samples] == [30, 1000030, 31]
    assert samples[1].meta["options"] == {"A": "狗", "B": "鸟", "C": "鱼", "D": "猫"}
    assert samples[2].meta["options"] == {"A": "是", "B": "否"}
    assert samples[2].meta["l2-category"] == "coarse_perception"
    assert samples[1].load_image().tobytes() == samples[0].load_image().tobytes()


def test_mmbench_cn_does_not_read_the_english_tsv(tmp_path):
    write_mmbench_tsv(tmp_path / "mmbench/mmbench_dev_20230712.tsv")
    with pytest.raises(PdropEvalError, match="mmbench_dev_cn_20231003.tsv"):
        load_fixture_task("mmbench_cn", tmp_path)


def test_scienceqa_without_pid_splits_names_the_missing_file(tmp_path):
    """eval_science_qa.py scores from pid_splits.json, so the LLaVA folder is incomplete without it."""
    write_llava_scienceqa(tmp_path)
    (tmp_path / "scienceqa/pid_splits.json").unlink()
    with pytest.raises(PdropEvalError, match=r"scienceqa/pid_splits\.json \(missing\)"):
        load_fixture_task("scienceqa_img", tmp_path)
