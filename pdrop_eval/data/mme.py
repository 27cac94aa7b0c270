"""MME in LLaVA's evaluation folder and in lmms-lab/MME, both giving LLaVA's prompts and MME's own answers.

- LLaVA (`docs/Evaluation.md`, `scripts/v1_5/eval/mme.sh`): `MME/llava_mme.jsonl` (question_id = image = e.g.
  `artwork/images/14777.jpg`, text = the question without MME's " Please answer yes or no." plus LLaVA's suffix,
  category) and `MME/MME_Benchmark_release_version/` (images and answers). The answers are read and joined as
  `playground/data/eval/MME/convert_answer_to_mme.py` does: `get_gt` walks each subtask folder (its
  `questions_answers_YN/` when it has `images/`, else the folder itself) and reads `question<TAB>answer` lines
  from `<image stem>.txt`; a row's key is (category, stem + ".txt", its text without LLaVA's instruction and
  with " Please answer yes or no." put back, or the two-space form a few MME questions use).
- lmms-lab/MME (`data/test-*.parquet`: question_id, image, question with " Please answer yes or no.", answer,
  category): the prompt is rebuilt as LLaVA's file holds it, the MME instruction dropped and LLaVA's suffix added.

Each image carries two questions under one question_id, so sample ids are `<question_id>#<0|1>`; the metric
pairs them through meta["image"].
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from pdrop_eval.data.hf import contain_cell, open_cell_image, read_rows
from pdrop_eval.data.images import image_path, open_image_file
from pdrop_eval.data.llava_folders import read_jsonl
from pdrop_eval.data.prompts import split_suffix
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError

MME_INSTRUCTION = "Please answer yes or no."
LLAVA_INSTRUCTION = "Answer the question using a single word or phrase."

AnswerKey = tuple[str, str, str]


def read_mme_answers(release: Path) -> dict[AnswerKey, str]:
    """convert_answer_to_mme.py `get_gt`: {(category, "<stem>.txt", question): "Yes"/"No"} for every subtask."""
    answers: dict[AnswerKey, str] = {}
    for category_dir in sorted(path for path in release.iterdir() if path.is_dir()):
        qa_dir = category_dir / "questions_answers_YN" if (category_dir / "images").exists() else category_dir
        if not qa_dir.is_dir():
            raise PdropEvalError(f"MME subtask {category_dir} has images/ but no questions_answers_YN/ folder")
        for qa_file in sorted(qa_dir.glob("*.txt")):
            for number, line in enumerate(qa_file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    raise PdropEvalError(f"{qa_file} line {number} is not `question<TAB>answer`: {line!r}")
                answers[(category_dir.name, qa_file.name, fields[0])] = fields[1]
    return answers


def answer_key(question_id: str, text: str, answers: dict[AnswerKey, str]) -> AnswerKey:
    """The ground-truth key convert_answer_to_mme.py builds for one LLaVA row."""
    category = question_id.split("/")[0]
    stem_file = question_id.split("/")[-1].split(".")[0] + ".txt"
    question = text.replace(LLAVA_INSTRUCTION, "").strip() if LLAVA_INSTRUCTION in text else text
    if MME_INSTRUCTION not in question:
        question += " " + MME_INSTRUCTION
        if (category, stem_file, question) not in answers:
            question = question.replace(" " + MME_INSTRUCTION, "  " + MME_INSTRUCTION)
    return category, stem_file, question


def llava_text(question: str) -> str:
    """An MME question as LLaVA's llava_mme.jsonl holds it (before the suffix): the MME instruction removed."""
    return question.replace(MME_INSTRUCTION, "").strip()


def _sample_ids(question_ids: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    ids = []
    for question_id in question_ids:
        ids.append(f"{question_id}#{seen[question_id]}")
        seen[question_id] += 1
    return ids


def load_llava_mme(request: LoadRequest) -> list[Sample]:
    questions_path, release = request.paths["questions"], request.paths["images"]
    answers = read_mme_answers(release)
    rows = read_jsonl(questions_path)
    samples = []
    for sample_id, row in zip(_sample_ids([str(row["question_id"]) for row in rows]), rows):
        question_id = str(row["question_id"])
        key = answer_key(question_id, row["text"], answers)
        if key not in answers:
            raise PdropEvalError(
                f"MME row {sample_id!r} of {questions_path}: no answer for {key[2]!r} in {release / key[0]} "
                f"({key[1]}); use the MME_Benchmark_release_version folder LLaVA's llava_mme.jsonl was made from"
            )
        question, prompt = split_suffix(row["text"], request.prompt_suffix)
        image = image_path(release, row["image"], f"{questions_path}, question {sample_id!r}")
        samples.append(
            Sample(
                id=sample_id,
                question=question,
                prompt=prompt,
                gold=answers[key],
                image_source=str(image),
                load_image=partial(open_image_file, image, sample_id),
                meta={"category": key[0], "image": question_id},
            )
        )
    return samples


def load_hf_mme(request: LoadRequest) -> list[Sample]:
    table = request.paths["rows"]
    where = str(table)
    rows = read_rows(table)
    samples = []
    for sample_id, row in zip(_sample_ids([str(row["question_id"]) for row in rows]), rows):
        question = llava_text(row["question"])
        samples.append(
            Sample(
                id=sample_id,
                question=question,
                prompt=question + request.prompt_suffix,
                gold=row["answer"],
                image_source=f"{where}#{sample_id}",
                load_image=partial(open_cell_image, contain_cell(row["image"], table, sample_id), sample_id, where),
                meta={"category": row["category"], "image": str(row["question_id"])},
            )
        )
    return samples
