"""SEED-Bench (v1) image questions, from LLaVA's evaluation folder or lmms-lab/SEED-Bench.

- LLaVA (`docs/Evaluation.md`, `scripts/v1_5/eval/seed.sh`): `seed_bench/llava-seed-bench.jsonl` (question_id,
  image = `SEED-Bench-image/<data_id>` or a middle video frame under `SEED-Bench-video-image/`, text = question,
  `A. ..`-`D. ..` lines and the suffix, category) and `seed_bench/SEED-Bench.json` (the official annotations:
  `questions` with answer, data_type, question_type_id; `question_type` name -> id). As
  `scripts/convert_seed_for_submission.py` does, rows are joined to annotations on question id and only
  data_type "image" is kept (the 9 image dimensions; video questions are another task).
- lmms-lab/SEED-Bench (`data/test-*.parquet`: question_id, question, choice_a-d, answer, data_type,
  question_type_id, image as a list of frames): image rows only, the prompt built as LLaVA's file holds it.

SEED-Bench.json repeats one image question id ("49914" names two questions). Ids that repeat become
`<id>#0`, `<id>#1` (in file order, matched to the annotations with that id in their order); meta["question_id"]
keeps the shared id, through which the metric reproduces the official lookup.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from pdrop_eval.data.hf import contain_cell, open_cell_image, read_rows
from pdrop_eval.data.images import image_path, open_image_file
from pdrop_eval.data.llava_folders import read_json, read_jsonl
from pdrop_eval.data.prompts import OPTION_LETTERS, mcq_prompt, split_suffix
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError

IMAGE = "image"
# SEED-Bench.json `question_type` for the image dimensions (lmms-lab's table carries only the ids).
IMAGE_QUESTION_TYPES = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attributes",
    4: "Instance Location",
    5: "Instances Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Understanding",
}


def unique_ids(question_ids: Sequence[Any]) -> list[Any]:
    """Ids kept as stored where they are unique; a repeated id becomes `<id>#<k>` for its k-th occurrence."""
    counts = Counter(str(question_id) for question_id in question_ids)
    seen: Counter[str] = Counter()
    ids = []
    for question_id in question_ids:
        key = str(question_id)
        ids.append(question_id if counts[key] == 1 else f"{key}#{seen[key]}")
        seen[key] += 1
    return ids


def _meta(question_id: Any, type_id: Any, names: Mapping[int, str]) -> dict[str, Any]:
    type_id = int(type_id)
    return {
        "question_id": str(question_id),
        "question_type_id": type_id,
        "question_type": names.get(type_id, str(type_id)),
    }


def load_llava_seed(request: LoadRequest) -> list[Sample]:
    questions_path, annotations_path = request.paths["questions"], request.paths["annotations"]
    annotations = read_json(annotations_path)
    names = {int(type_id): name for name, type_id in annotations["question_type"].items()}
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for question in annotations["questions"]:
        by_id[str(question["question_id"])].append(question)
    seen: Counter[str] = Counter()
    kept: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for row in read_jsonl(questions_path):
        key = str(row["question_id"])
        matches = by_id.get(key, [])
        if seen[key] >= len(matches):
            raise PdropEvalError(
                f"SEED-Bench row {key!r} of {questions_path} has no (further) question with that id in "
                f"{annotations_path}; use the SEED-Bench.json LLaVA's llava-seed-bench.jsonl was made from"
            )
        annotation = matches[seen[key]]
        seen[key] += 1
        if annotation["data_type"] == IMAGE:
            kept.append((row, annotation))
    samples = []
    for sample_id, (row, annotation) in zip(unique_ids([row["question_id"] for row, _ in kept]), kept):
        question, prompt = split_suffix(row["text"], request.prompt_suffix)
        image = image_path(request.paths["images"], row["image"], f"{questions_path}, question {sample_id!r}")
        samples.append(
            Sample(
                id=sample_id,
                question=question,
                prompt=prompt,
                gold=annotation["answer"],
                image_source=str(image),
                load_image=partial(open_image_file, image, sample_id),
                meta=_meta(row["question_id"], annotation["question_type_id"], names),
            )
        )
    return samples


def _first_frame(cell: Any) -> Any:
    """lmms-lab stores `image` as a list of frames (one for an image question); a bare image is taken as is."""
    if hasattr(cell, "tolist"):
        cell = cell.tolist()
    if isinstance(cell, (list, tuple)):
        if not cell:
            return None
        return cell[0]
    return cell


def load_hf_seed(request: LoadRequest) -> list[Sample]:
    table = request.paths["rows"]
    where = str(table)
    rows = [row for row in read_rows(table) if row["data_type"] == IMAGE]
    if not rows:
        raise PdropEvalError(f"{where} holds no SEED-Bench image questions (data_type 'image')")
    samples = []
    for sample_id, row in zip(unique_ids([row["question_id"] for row in rows]), rows):
        options = {letter: str(row[f"choice_{letter.lower()}"]) for letter in OPTION_LETTERS}
        samples.append(
            Sample(
                id=sample_id,
                question=row["question"],
                prompt=mcq_prompt(row["question"], None, options, request.prompt_suffix),
                gold=row["answer"],
                image_source=f"{where}#{sample_id}",
                load_image=partial(
                    open_cell_image, contain_cell(_first_frame(row["image"]), table, sample_id), sample_id, where
                ),
                meta=_meta(row["question_id"], row["question_type_id"], IMAGE_QUESTION_TYPES),
            )
        )
    return samples
