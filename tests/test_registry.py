"""Task lookup, card validation, --tasks-dir overrides, metric-name checks and the missing-data error."""

from __future__ import annotations

import pytest

import pdrop_eval.metrics
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.registry import available_tasks, check_data, get_task, load_card, load_samples
from tests.fixtures_data import b64_image, write_tsv

CARD = """name: {name}
description: a test card
size: 4
prompt_suffix: "\\nAnswer the question using a single word or phrase."
max_new_tokens: 8
metrics: [{metric}]
sources:
  - format: synthetic_shapes
    count: 4
    seed: 3
"""


def test_unknown_task_suggests_the_closest_names():
    with pytest.raises(PdropEvalError, match="did you mean textvqa"):
        get_task("textvq")
    with pytest.raises(PdropEvalError, match="did you mean mmbench") as caught:
        get_task("mmbenh")
    assert "known tasks:" in str(caught.value)


def test_missing_data_error_names_every_expected_path_of_every_source_and_where_published(tmp_path):
    task = get_task("pope")
    with pytest.raises(PdropEvalError) as caught:
        check_data(task, tmp_path / "root", lmu_data=tmp_path / "lmu", hf_cache=tmp_path / "hub")
    message = str(caught.value)
    for relative in ("pope/llava_pope_test.jsonl", "pope/coco/coco_pope_adversarial.json",
                     "pope/coco/coco_pope_popular.json", "pope/coco/coco_pope_random.json", "pope/val2014"):
        assert f"{tmp_path / 'root' / relative} (missing)" in message
    assert str(tmp_path / "root/hf/lmms-lab/POPE/data/test-*.parquet") in message
    assert str(tmp_path / "hub/datasets--lmms-lab--POPE/snapshots/*/data/test-*.parquet") in message
    assert "https://huggingface.co/datasets/lmms-lab/POPE" in message
    assert "val2014.zip" in message


def test_missing_data_error_covers_tsv_sources(tmp_path):
    with pytest.raises(PdropEvalError) as caught:
        check_data(get_task("mmstar"), tmp_path, lmu_data=tmp_path / "lmu", hf_cache=tmp_path / "hub")
    assert str(tmp_path / "lmu/MMStar.tsv") in str(caught.value)
    assert str(tmp_path / "hf/Lin-Chen/MMStar/mmstar.parquet") in str(caught.value)


def test_partial_folder_marks_only_the_missing_files(tmp_path):
    (tmp_path / "gqa").mkdir()
    (tmp_path / "gqa/llava_gqa_testdev_balanced.jsonl").write_text("")
    with pytest.raises(PdropEvalError) as caught:
        check_data(get_task("gqa"), tmp_path, lmu_data=tmp_path / "lmu", hf_cache=tmp_path / "hub")
    message = str(caught.value)
    assert f"{tmp_path / 'gqa/llava_gqa_testdev_balanced.jsonl'}," in message
    assert f"{tmp_path / 'gqa/data/images'} (missing)" in message


def test_forcing_a_source_format(tmp_path):
    with pytest.raises(PdropEvalError, match="no source of format 'hf_vqa'"):
        check_data(get_task("gqa"), tmp_path, source="hf_vqa")


def test_tasks_dir_adds_cards_and_overrides_builtins_by_name(tmp_path):
    (tmp_path / "shapes.yaml").write_text(CARD.format(name="shapes", metric="exact_match"))
    (tmp_path / "extra.yml").write_text(CARD.format(name="extra", metric="exact_match"))
    tasks = available_tasks(tmp_path)
    assert tasks["shapes"].size == 4 and tasks["shapes"].card == tmp_path / "shapes.yaml"
    assert "extra" in tasks and "gqa" in tasks
    assert len(load_samples(get_task("shapes", tmp_path))) == 4


def test_unknown_metric_is_rejected_once_the_metrics_registry_exists(tmp_path, monkeypatch):
    (tmp_path / "odd.yaml").write_text(CARD.format(name="odd", metric="bleu"))
    monkeypatch.setattr(pdrop_eval.metrics, "METRICS", {"exact_match": object()})
    with pytest.raises(PdropEvalError, match="unknown metric.*bleu"):
        get_task("odd", tmp_path)
    monkeypatch.delattr(pdrop_eval.metrics, "METRICS")
    assert get_task("odd", tmp_path).metrics == ("bleu",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a list", "YAML mapping"),
        (CARD.format(name="x", metric="exact_match") + "colour: red\n", "unknown key"),
        ("name: x\ndescription: d\n", "missing key"),
        (CARD.format(name="x", metric="exact_match").replace("synthetic_shapes", "csv_rows"), "unknown format"),
        (CARD.format(name="x", metric="exact_match").replace("format: synthetic_shapes",
                                                             "format: llava_gqa"), "needs files"),
        (CARD.format(name="x", metric="exact_match").replace("format: synthetic_shapes",
                                                             "format: hf_vqa\n    files: {rows: a.parquet}"),
         "needs `repo`"),
        ("name: [unclosed", "cannot read"),
        (CARD.format(name="x", metric="exact_match").replace("size: 4", "size: lots"), "whole numbers"),
        (CARD.format(name="x", metric="exact_match").replace("format: synthetic_shapes", "format: [x]"),
         "unknown format"),
        (CARD.format(name="x", metric="exact_match").replace("format: synthetic_shapes",
                                                             "format: llava_gqa\n    files: [a, b]"), "must map"),
        (CARD.format(name="x", metric="exact_match").replace(
            "format: synthetic_shapes", "format: hf_vqa\n    repo: a/b\n    splits: adversarial\n    files: {rows: x}"),
         "`splits` must be a non-empty list"),
        (CARD.format(name="x", metric="exact_match").replace(
            "format: synthetic_shapes", "format: hf_vqa\n    repo: a/b\n    files: {rows: 'Full/{split}-*.parquet'}"),
         "holds {split} but the source names no"),
    ],
)
def test_card_mistakes_name_the_card_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(PdropEvalError, match=problem) as caught:
        load_card(path)
    assert str(path) in str(caught.value)


def test_data_file_in_the_wrong_layout_is_one_clear_error(tmp_path):
    """A TSV without VLMEvalKit's `index` column: named with the file and the missing field, no traceback."""
    write_tsv(tmp_path / "DocVQA_VAL.tsv", ["id", "image", "question", "answer"], [[1, b64_image(), "a?", "x"]])
    with pytest.raises(PdropEvalError, match="DocVQA_VAL.tsv.*(index|layout)"):
        load_samples(get_task("docvqa"), tmp_path, lmu_data=tmp_path)


def test_duplicate_ids_are_an_error(tmp_path):
    write_tsv(tmp_path / "DocVQA_VAL.tsv", ["index", "image", "question", "answer"],
              [[1, b64_image(), "a?", "x"], [1, b64_image(), "b?", "y"]])
    with pytest.raises(PdropEvalError, match="ids repeat"):
        load_samples(get_task("docvqa"), tmp_path, lmu_data=tmp_path)
