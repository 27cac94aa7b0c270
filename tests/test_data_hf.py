"""Hugging Face layouts: lmms-lab parquet shards and config folders, a root-level parquet, save_to_disk folders
and the hub cache, with the lmms-lab schemas."""

from __future__ import annotations

import warnings

import pytest

from pdrop_eval.errors import PdropEvalError, PdropEvalWarning
from pdrop_eval.metrics import get_metric
from pdrop_eval.registry import get_task, load_samples
from tests.fixtures_data import (
    MCQ_SUFFIX,
    MMBENCH_CN_PROMPTS,
    MMBENCH_HF_PROMPTS,
    MMSTAR_QUESTION,
    POPE_FULL_IDS,
    POPE_FULL_SPLITS,
    SUFFIX,
    image_cell,
    load_fixture_task,
    mmbench_cn_hf_rows,
    mmbench_hf_rows,
    pope_default_rows,
    pope_full_rows,
    save_hf_to_disk,
    scienceqa_hf_rows,
    textvqa_rows,
    write_hf_gqa,
    write_llava_scienceqa,
    write_parquet,
    write_parquet_shards,
    write_pope_full_parquet,
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
    write_parquet_shards(tmp_path / "hf/lmms-lab/POPE/data", "test", pope_default_rows(), 3)
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
# ---- lmms-lab/POPE `Full`: one split per category -----------------------------------------------------------------

def _assert_pope_full(samples) -> None:
    assert [s.id for s in samples] == POPE_FULL_IDS
    assert [s.meta["category"] for s in samples] == [split for split in POPE_FULL_SPLITS for _ in (1, 2)]
    assert [s.gold for s in samples] == ["yes", "no"] * 3
    assert samples[0].prompt == "Is there a snowboard in the image?" + SUFFIX
    assert samples[5].load_image().mode == "RGB"


def test_pope_full_config_parquet_reads_every_category_split(tmp_path):
    write_pope_full_parquet(tmp_path / "hf/lmms-lab/POPE")
    _assert_pope_full(load_fixture_task("pope", tmp_path))


def test_pope_full_config_in_the_hub_cache(tmp_path):
    write_pope_full_parquet(tmp_path / "hub/datasets--lmms-lab--POPE/snapshots/5485b5d")
    _assert_pope_full(load_fixture_task("pope", tmp_path))


def test_pope_full_saved_alone_at_the_repo_folder(tmp_path):
    """`load_dataset("lmms-lab/POPE", "Full").save_to_disk(<root>/hf/lmms-lab/POPE)`."""
    save_hf_to_disk(tmp_path / "hf/lmms-lab/POPE", {s: pope_full_rows(s) for s in POPE_FULL_SPLITS}, "Full")
    _assert_pope_full(load_fixture_task("pope", tmp_path))


def test_pope_full_saved_in_a_config_folder(tmp_path):
    save_hf_to_disk(tmp_path / "hf/lmms-lab/POPE/Full", {s: pope_full_rows(s) for s in POPE_FULL_SPLITS})
    _assert_pope_full(load_fixture_task("pope", tmp_path))


def test_pope_default_config_saved_as_repo_default_folder(tmp_path):
    save_hf_to_disk(tmp_path / "hf/lmms-lab/POPE/default", {"test": pope_default_rows()}, "default")
    samples = load_fixture_task("pope", tmp_path)
    assert [s.id for s in samples] == ["0", "1", "2"]
    assert [s.meta["category"] for s in samples] == ["adversarial", "popular", "random"]


def test_pope_full_categories_give_llava_per_category_f1_and_their_mean(tmp_path):
    """LLaVA's eval_pope scores each category file on its own and the paper reports the mean of the three F1s."""
    write_pope_full_parquet(tmp_path / "hf/lmms-lab/POPE")
    samples = load_fixture_task("pope", tmp_path)
    predictions = {"adversarial": ["Yes", "Yes"], "popular": ["Yes", "No"], "random": ["No", "No"]}
    metric = get_metric("pope")
    answers = [a for split in POPE_FULL_SPLITS for a in predictions[split]]
    result = metric.aggregate([metric.record(s.id, a, s.gold, s.meta) for s, a in zip(samples, answers)])
    # adversarial TP=1 FP=1: F1 2/3; popular TP=1 TN=1: F1 1; random FN=1 TN=1: F1 0
    assert result["f1/adversarial"] == pytest.approx(200 / 3)
    assert result["f1/popular"] == pytest.approx(100.0)
    assert result["f1/random"] == pytest.approx(0.0)
    assert result["f1_mean"] == pytest.approx((200 / 3 + 100 + 0) / 3)


def test_pope_default_without_category_column_is_one_error(tmp_path):
    rows = [{key: value for key, value in row.items() if key != "category"} for row in pope_default_rows()]
    write_parquet_shards(tmp_path / "hf/lmms-lab/POPE/data", "test", rows, 1)
    with pytest.raises(PdropEvalError, match=r"test-00000-of-00001\.parquet lacks the column 'category'"):
        load_fixture_task("pope", tmp_path)


def test_root_level_copy_of_another_config_is_not_taken_for_this_one(tmp_path):
    """lmms-lab/DocVQA's DocVQA and InfographicVQA configs both have a `validation` split: a copy saved at the repo
    folder is used only for the config datasets recorded in it."""
    info = [{"questionId": "65718", "question": "How many?", "answers": ["7"], "image": image_cell("RGB")}]
    save_hf_to_disk(tmp_path / "hf/lmms-lab/DocVQA", {"validation": info}, "InfographicVQA")
    (infovqa,) = load_fixture_task("infovqa", tmp_path)
    assert infovqa.id == "65718"
    with pytest.raises(PdropEvalError, match="no data found for task 'docvqa'"):
        load_fixture_task("docvqa", tmp_path)


# ---- metadata columns: read what is there, say once what is not ---------------------------------------------------

def test_several_splits_missing_a_metadata_column_warn_once(tmp_path):
    """A user card over a two-split table (not POPE: the mechanism is general) whose files lack its meta column."""
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards/two.yaml").write_text(
        "name: two\ndescription: d\nsize: 4\nprompt_suffix: ''\nmax_new_tokens: 4\nmetrics: [exact_match]\n"
        "sources:\n  - format: hf_vqa\n    repo: me/two\n    splits: [easy, hard]\n"
        "    files: {rows: '{split}-*.parquet'}\n    fields: {id: qid}\n    meta: {difficulty: level}\n"
    )
    for split in ("easy", "hard"):
        rows = [{"qid": k, "question": "q?", "answer": "a", "image": image_cell()} for k in range(2)]
        write_parquet(tmp_path / f"hf/me/two/{split}-00000-of-00001.parquet", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = load_samples(get_task("two", tmp_path / "cards"), tmp_path, lmu_data=tmp_path, hf_cache=tmp_path)
    assert [s.id for s in samples] == ["easy/0", "easy/1", "hard/0", "hard/1"]
    assert all("difficulty" not in s.meta for s in samples)
    ours = [w for w in caught if issubclass(w.category, PdropEvalWarning)]
    assert len(ours) == 1
    assert "task two" in str(ours[0].message) and "['level']" in str(ours[0].message)


def test_gqa_instructions_without_image_id_name_the_file_and_its_columns(tmp_path):
    repo = tmp_path / "hf/lmms-lab/GQA"
    write_hf_gqa(repo)
    rows = [{"id": "1", "question": "Is it overcast?", "answer": "no"}]
    write_parquet_shards(repo / "testdev_balanced_instructions", "testdev", rows, 1)
    with pytest.raises(PdropEvalError) as caught:
        load_fixture_task("gqa", tmp_path)
    message = str(caught.value)
    assert "testdev-00000-of-00001.parquet lacks the image id column 'imageId'" in message
    assert "['answer', 'id', 'question']" in message
