"""The data formats a task card can name, each with where its files live and the loader that reads them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pdrop_eval.data import hf, llava_folders, mme, seed_bench, synthetic, vlmeval_tsv
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample

Location = Literal["data_root", "lmu_data", "hf", "generated"]


@dataclass(frozen=True)
class Format:
    """`location` says which root the card's relative paths hang from: `data_root` (--data-root / $PDROP_DATA,
    LLaVA's eval folders), `lmu_data` ($LMUData, VLMEvalKit TSVs), `hf` (<data-root>/hf/<repo> or the hub
    cache) or `generated` (no files). `roles` are the file roles the card must list under `files`."""

    name: str
    location: Location
    roles: tuple[str, ...]
    load: Callable[[LoadRequest], list[Sample]]
    summary: str


FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format("llava_gqa", "data_root", ("questions", "annotations", "images"), llava_folders.load_gqa,
               "LLaVA eval folder: GQA jsonl + testdev_balanced_questions.json + images"),
        Format("llava_textvqa", "data_root", ("questions", "annotations", "images"), llava_folders.load_textvqa,
               "LLaVA eval folder: TextVQA jsonl with OCR tokens + TextVQA_0.5.1_val.json + train_images"),
        Format("llava_pope", "data_root", ("questions", "images"), llava_folders.load_pope,
               "LLaVA eval folder: POPE jsonl + coco_pope_<category>.json labels + val2014"),
        Format("llava_mmbench", "data_root", ("tsv",), vlmeval_tsv.load_mcq_tsv,
               "LLaVA eval folder: MMBench TSV with base64 images and circular copies"),
        Format("llava_scienceqa", "data_root", ("questions", "problems", "splits", "images"),
               llava_folders.load_scienceqa,
               "LLaVA eval folder: ScienceQA llava_test_CQM-A.json + problems.json + pid_splits.json + images/test"),
        Format("llava_mme", "data_root", ("questions", "images"), mme.load_llava_mme,
               "LLaVA eval folder: llava_mme.jsonl + MME_Benchmark_release_version (images and answers)"),
        Format("llava_seed", "data_root", ("questions", "annotations", "images"), seed_bench.load_llava_seed,
               "LLaVA eval folder: llava-seed-bench.jsonl + SEED-Bench.json + SEED-Bench-image, image questions"),
        Format("vlmeval_vqa", "lmu_data", ("tsv",), vlmeval_tsv.load_vqa_tsv, "VLMEvalKit TSV, open-ended"),
        Format("vlmeval_mcq", "lmu_data", ("tsv",), vlmeval_tsv.load_mcq_tsv, "VLMEvalKit TSV, multiple choice"),
        Format("hf_vqa", "hf", ("rows",), hf.load_hf_vqa, "Hugging Face dataset, open-ended"),
        Format("hf_mcq", "hf", ("rows",), hf.load_hf_mcq, "Hugging Face dataset, multiple choice"),
        Format("hf_gqa", "hf", ("questions", "images"), hf.load_hf_gqa,
               "Hugging Face lmms-lab/GQA: instructions + images configs"),
        Format("hf_scienceqa", "hf", ("rows",), hf.load_hf_scienceqa,
               "Hugging Face lmms-lab/ScienceQA: choices list + answer index + hint"),
        Format("hf_mme", "hf", ("rows",), mme.load_hf_mme, "Hugging Face lmms-lab/MME"),
        Format("hf_seed", "hf", ("rows",), seed_bench.load_hf_seed, "Hugging Face lmms-lab/SEED-Bench, image rows"),
        Format("synthetic_shapes", "generated", (), synthetic.load_shapes, "drawn on the fly"),
    )
}
