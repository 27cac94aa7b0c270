"""The built-in task cards: the benchmarks the paper needs, REFERENCE §5 suffixes, metric names, §6 numbers."""

from __future__ import annotations

import pytest

from pdrop_eval.metrics import METRICS
from pdrop_eval.registry import available_tasks, get_task

VQA_SUFFIX = "\nAnswer the question using a single word or phrase."
MCQ_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
CN_MCQ_SUFFIX = "\n请直接回答选项字母。"  # LLaVA model_vqa_mmbench.py --lang cn
EXPECTED = {
    "gqa": (VQA_SUFFIX, "exact_match", 12578),
    "textvqa": (VQA_SUFFIX, "vqa_accuracy", 5000),
    "pope": (VQA_SUFFIX, "pope", 8910),
    "mmbench": (MCQ_SUFFIX, "mmbench_circular", 4377),
    "mmbench_cn": (CN_MCQ_SUFFIX, "mmbench_circular", 4329),
    "mmstar": (MCQ_SUFFIX, "mcq_accuracy", 1500),
    "scienceqa_img": (MCQ_SUFFIX, "scienceqa_accuracy", 2017),
    "docvqa": (VQA_SUFFIX, "anls", 5349),
    "chartqa": (VQA_SUFFIX, "relaxed_accuracy", 2500),
    "infovqa": (VQA_SUFFIX, "anls", 2801),
    "ocrvqa": (VQA_SUFFIX, "ocrvqa_exact", 5000),
    "ocrvqa_core": (VQA_SUFFIX, "ocrvqa_exact", None),  # VLMEvalKit does not publish OCRVQA_TESTCORE's size
    "shapes": (VQA_SUFFIX, "exact_match", 300),
    "mme": (VQA_SUFFIX, "mme", 2374),
    "seedbench": (MCQ_SUFFIX, "seed_image", 14233),
}
PAPER = {  # REFERENCE §6: vanilla, FastV K2 R50, PDrop λ0.5
    "gqa": (62.0, 59.6, 60.1), "pope": (85.9, 84.8, 84.8), "textvqa": (58.2, 57.1, 57.5),
    "chartqa": (18.2, 17.8, 18.6), "docvqa": (21.4, 19.2, 21.1), "mme": (1510.7, 1475.6, 1500.8),
    "mmbench_cn": (58.3, 56.8, 58.5), "scienceqa_img": (66.8, 68.5, 69.2),
}


def test_every_benchmark_has_a_card():
    assert set(available_tasks()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_card_suffix_metric_and_size(name):
    task = get_task(name)
    suffix, metric, size = EXPECTED[name]
    assert task.prompt_suffix == suffix
    assert task.metrics == (metric,)
    assert all(metric in METRICS for metric in task.metrics)
    assert task.size == size
    assert task.max_new_tokens > 0
    assert task.published


@pytest.mark.parametrize("name", sorted(PAPER))
def test_reference_rows_carry_the_papers_numbers_and_tflops(name):
    reference = get_task(name).reference
    assert reference is not None and reference.model == "llava-1.5-7b"
    assert [row.score for row in reference.rows] == list(PAPER[name])
    assert [row.tflops for row in reference.rows] == [3.82, 2.01, 1.78]


def test_sources_are_tried_llava_then_tsv_then_hf():
    rank = {"llava": 0, "vlmeval": 1, "hf": 2}
    for task in available_tasks().values():
        order = [rank[source.format.split("_")[0]] for source in task.sources if source.format.split("_")[0] in rank]
        assert order == sorted(order), task.name


def test_vlmeval_scorer_datasets_are_named_where_vlmevalkit_has_them():
    names = {name: task.vlmeval_dataset for name, task in available_tasks().items() if task.vlmeval_dataset}
    assert names == {"mmstar": "MMStar", "docvqa": "DocVQA_VAL", "chartqa": "ChartQA_TEST",
                     "mmbench": "MMBench_DEV_EN", "infovqa": "InfoVQA_VAL", "ocrvqa": "OCRVQA_TEST",
                     "mmbench_cn": "MMBench_DEV_CN", "ocrvqa_core": "OCRVQA_TESTCORE"}


def test_mme_reference_is_the_perception_total_and_seedbench_has_none():
    assert "perception" in get_task("mme").reference.metric
    assert get_task("seedbench").reference is None


@pytest.mark.parametrize("name", ["scienceqa_img", "mmbench_cn"])
def test_llava_generation_length_for_the_scripts_that_allow_1024_tokens(name):
    """model_vqa_science.py and model_vqa_mmbench.py generate up to 1,024 new tokens (not model_vqa_loader's 128):
    a long answer that only states its letter late is still read as LLaVA reads it."""
    assert get_task(name).max_new_tokens == 1024
