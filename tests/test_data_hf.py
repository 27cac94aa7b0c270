"""Hugging Face layouts: lmms-lab parquet shards and config folders, a root-level parquet, save_to_disk folders
and the hub cache, with the lmms-lab schemas."""

from __future__ import annotations

import pytest

from tests.fixtures_data import (
    MCQ_SUFFIX,
    MMBENCH_CN_PROMPTS,
    MMBENCH_HF_PROMPTS,
    MMSTAR_QUESTION,
    SUFFIX,
    image_cell,
    load_fixture_task,
    mmbench_cn_hf_rows,
    mmbench_hf_rows,
    scienceqa_hf_rows,
    textvqa_rows,
    write_hf_gqa,
    write_llava_scienceqa,
    write_parquet,
    write_parquet_shards,
)


def test_gqa_joins_instruction_and_image_configs_on_image_id(tmp_path):
    expected = write_hf_gqa(tmp_path / "hf/lmms-lab/GQA")
    samples = load_fixture_task("gqa", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert samples[1].meta["image_id"] == "n235859"
    assert samples[1].load_image().mode == "RGB"


def test_textvqa_sharded_parquet_builds_the_ocr_line(tmp_path):
    write_parquet_shards(tmp_path / "hf/lmms-lab/textvqa/data", "validation", textvqa_rows(), 3)
    samples = load_fixture_task("textvqa", tmp_path)
    assert [s.id for s in samples] == [34602, 34603, 34604]
    assert samples[0].prompt == "what is the brand of this camera?\nReference OCR token: dakota, digital" + SUFFIX
    assert samples[1].prompt == "what does the text say?\nReference OCR token: " + SUFFIX
    assert samples[2].gold == ["5"] * 10
    assert samples[2].meta["image_id"] == "00c359f294f7dcd9"
    assert samples[2].load_image().mode == "RGB"


def test_pope_uses_the_string_row_id_and_category(tmp_path):
    rows = [{"id": str(k), "question_id": "1", "question": "Is there a dog in the image?", "answer": answer,
             "image_source": "COCO_val2014_000000310196", "image": image_cell("RGB", "JPEG"), "category": category}
            for k, (answer, category) in enumerate((("yes", "adversarial"), ("no", "popular"), ("no", "random")))]
    write_parquet_shards(tmp_path / "hf/lmms-lab/POPE/data", "test", rows, 3)
    samples = load_fixture_task("pope", tmp_path)
    assert [s.id for s in samples] == ["0", "1", "2"]
    assert [s.gold for s in samples] == ["yes", "no", "no"]
    assert [s.meta["category"] for s in samples] == ["adversarial", "popular", "random"]
    assert samples[0].prompt == "Is there a dog in the image?" + SUFFIX


def test_mmbench_nan_strings_stop_options_and_drop_hints(tmp_path):
    write_parquet_shards(tmp_path / "hf/lmms-lab/MMBench_EN/data", "dev", mmbench_hf_rows(), 1)
    samples = load_fixture_task("mmbench", tmp_path)
    assert [s.prompt for s in samples] == MMBENCH_HF_PROMPTS
    assert [s.meta["index"] for s in samples] == [12, 1000012]
    assert samples[0].meta["options"] == {"A": "a cat", "B": "a dog"}
    assert samples[0].meta["l2-category"] == "finegrained_perception (instance-level)"


def test_mmbench_en_config_with_string_index_and_capitalised_l2_column(tmp_path):
    write_parquet_shards(tmp_path / "hf/lmms-lab/MMBench/en", "dev", mmbench_hf_rows(index_as_string=True), 1)
    samples = load_fixture_task("mmbench", tmp_path)
    assert [s.id for s in samples] == ["12", "1000012"]
    assert [s.meta["index"] for s in samples] == [12, 1000012]
    assert samples[1].meta["l2-category"] == "finegrained_perception (instance-level)"
    assert [s.prompt for s in samples] == MMBENCH_HF_PROMPTS


def test_mmstar_root_level_parquet(tmp_path):
    rows = [{"index": 0, "question": MMSTAR_QUESTION, "image": image_cell("P"), "answer": "A",
             "category": "coarse perception", "l2_category": "image scene and topic", "meta_info": {"source": "x"}}]
    write_parquet(tmp_path / "hf/Lin-Chen/MMStar/mmstar.parquet", rows)
    (sample,) = load_fixture_task("mmstar", tmp_path)
    assert sample.prompt == MMSTAR_QUESTION + MCQ_SUFFIX
    assert sample.meta["l2-category"] == "image scene and topic"
    assert sample.meta["options"]["C"] == "The suitcase is beneath the bed."
    assert sample.load_image().mode == "RGB"


def test_docvqa_and_infovqa_share_a_repo_in_two_config_folders(tmp_path):
    repo = tmp_path / "hf/lmms-lab/DocVQA"
    doc = [{"questionId": "49153", "question": "What is the date?", "question_types": ["form"],
            "image": image_cell("L", "JPEG"), "docId": 1, "answers": ["1/8/93", "January 8, 1993"],
            "data_split": "val"}]
    info = [{"questionId": "65718", "question": "How many?", "answers": ["7"], "answer_type": ["single span"],
             "image": image_cell("RGB"), "image_url": "u", "operation/reasoning": [], "ocr": "{}",
             "data_split": "val"}]
    write_parquet_shards(repo / "DocVQA", "validation", doc, 1)
    write_parquet_shards(repo / "InfographicVQA", "validation", info, 1)
    (docvqa,) = load_fixture_task("docvqa", tmp_path)
    (infovqa,) = load_fixture_task("infovqa", tmp_path)
    assert docvqa.id == "49153" and docvqa.gold == ["1/8/93", "January 8, 1993"]
    assert infovqa.id == "65718" and infovqa.gold == ["7"]
    assert docvqa.prompt == "What is the date?" + SUFFIX


def test_chartqa_uses_row_numbers_as_ids_and_type_as_split(tmp_path):
    rows = [{"type": kind, "question": f"Value {k}?", "answer": str(k), "image": image_cell("RGBA")}
            for k, kind in enumerate(("human_test", "augmented_test"))]
    write_parquet_shards(tmp_path / "hf/lmms-lab/ChartQA/data", "test", rows, 1)
    samples = load_fixture_task("chartqa", tmp_path)
    assert [s.id for s in samples] == [0, 1]
    assert [s.gold for s in samples] == [["0"], ["1"]]
    assert [s.meta["split"] for s in samples] == ["human_test", "augmented_test"]


def test_hub_cache_snapshot_is_found(tmp_path):
    snapshot = tmp_path / "hub/datasets--lmms-lab--ChartQA/snapshots/0123abcd"
    rows = [{"type": "human_test", "question": "Value?", "answer": "3", "image": image_cell()}]
    write_parquet_shards(snapshot / "data", "test", rows, 1)
    (sample,) = load_fixture_task("chartqa", tmp_path)
    assert sample.gold == ["3"]
    assert str(snapshot) in sample.image_source


def test_save_to_disk_dataset_dict_with_decoded_image_feature(tmp_path):
    import datasets

    rows = textvqa_rows()
    features = datasets.Features({
        "image_id": datasets.Value("string"), "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"), "image": datasets.Image(),
        "answers": datasets.Sequence(datasets.Value("string")),
        "ocr_tokens": datasets.Sequence(datasets.Value("string")), "set_name": datasets.Value("string"),
    })
    dataset = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / "hf/lmms-lab/textvqa"))
    samples = load_fixture_task("textvqa", tmp_path)
    assert [s.id for s in samples] == [34602, 34603, 34604]
    assert samples[0].gold == ["dakota"] * 10
    assert samples[2].load_image().mode == "RGB"


def test_scienceqa_img_config_rebuilds_llavas_prompts(tmp_path):
    """lmms-lab/ScienceQA has no LLaVA prompt file: the text built from hint/question/choices must be the one
    LLaVA's llava_test_CQM-A.json stores for the same problems (context line only when there is a hint)."""
    llava = write_llava_scienceqa(tmp_path / "llava")
    write_parquet_shards(tmp_path / "hf/lmms-lab/ScienceQA/ScienceQA-IMG", "test", scienceqa_hf_rows(), 1)
    samples = load_fixture_task("scienceqa_img", tmp_path)
    assert [s.id for s in samples] == [0, 1, 2]
    assert [s.prompt for s in samples] == llava["prompts"]
    assert [s.gold for s in samples] == llava["gold"]
    assert samples[2].meta["options"]["E"] == "3:1"
    assert {s.load_image().mode for s in samples} == {"RGB"}


def test_scienceqa_rows_without_an_image_are_not_part_of_the_img_subset(tmp_path):
    rows = scienceqa_hf_rows()
    rows[1]["image"] = None
    write_parquet_shards(tmp_path / "hf/lmms-lab/ScienceQA/ScienceQA-IMG", "test", rows, 1)
    samples = load_fixture_task("scienceqa_img", tmp_path)
    assert [s.id for s in samples] == [0, 2]


@pytest.mark.parametrize(("repo", "folder"), [("lmms-lab/MMBench_CN", "data"), ("lmms-lab/MMBench", "cn")])
def test_mmbench_cn_lmms_lab_layouts(tmp_path, repo, folder):
    write_parquet_shards(tmp_path / "hf" / repo / folder, "dev", mmbench_cn_hf_rows(), 1)
    samples = load_fixture_task("mmbench_cn", tmp_path)
    assert [s.id for s in samples] == [30, 1000030, 31]
    assert [s.prompt for s in samples] == MMBENCH_CN_PROMPTS
    assert [s.gold for s in samples] == ["B", "A", "B"]
    assert samples[2].meta["options"] == {"A": "是", "B": "否"}
    assert samples[0].meta["l2-category"] == "finegrained_perception (instance-level)"
