"""LLaVA eval folders: every task loads its fixture with the right ids (types kept), prompts and gold."""

from __future__ import annotations

import pytest
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from tests.fixtures_data import (
    SUFFIX,
    load_fixture_task,
    write_jsonl,
    write_llava_gqa,
    write_llava_pope,
    write_llava_textvqa,
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
