"""LLaVA's evaluation layout (`playground/data/eval/...`), read as LLaVA's own scripts read it.

- GQA: `llava_gqa_testdev_balanced.jsonl` (question_id, image, text with the suffix) + gold answers from
  `testdev_balanced_questions.json` (one dict keyed by question id; ids stay strings) + `data/images`.
- TextVQA: `llava_textvqa_val_v051_ocr.jsonl` whose `question_id` is the image id (it repeats) and whose `text` is
  `question\\nReference OCR token: ...\\n<suffix>`; gold joined from `TextVQA_0.5.1_val.json` on
  (image_id, lowercased question) as `llava/eval/eval_textvqa.py` does.
- POPE: `llava_pope_test.jsonl` (int ids, `category`) + labels from `coco/coco_pope_<category>.json` (JSON Lines,
  CRLF) matched by position within the category, as `llava/eval/eval_pope.py` does.
- MMBench (en, cn): `mmbench_dev_20230712.tsv`, `mmbench_dev_cn_20231003.tsv` are TSVs; see
  `vlmeval_tsv.load_mcq_tsv`.
- ScienceQA: `llava_test_CQM-A.json` (LLaVA's prompts) + `problems.json` and `pid_splits.json` (the ScienceQA
  repo's, which `eval_science_qa.py` scores from) + `images/test/<pid>/image.png`; see `load_scienceqa`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from pdrop_eval.data.images import image_path, open_image_file
from pdrop_eval.data.prompts import scienceqa_options, split_suffix
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError

POPE_LABEL_ROLE = "labels_"


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise PdropEvalError(f"cannot read the JSON file {path}: {err}") from err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON Lines, tolerant of CRLF endings and blank lines (POPE's label files have both quirks)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise PdropEvalError(f"cannot read {path}: {err.strerror}") from err
    rows = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            if line.strip():
                rows.append(json.loads(line.decode("utf-8")))
        except UnicodeDecodeError as err:
            problem = f"{path} line {number} is not UTF-8 text ({err.reason}): use the official file"
            raise PdropEvalError(problem) from err
        except ValueError as err:
            raise PdropEvalError(f"{path} line {number} is not valid JSON: {err}") from err
    return rows


def _image_sample(sample_id: Any, question: str, prompt: str, gold: Any, image: Path, meta: dict) -> Sample:
    return Sample(
        id=sample_id,
        question=question,
        prompt=prompt,
        gold=gold,
        image_source=str(image),
        load_image=partial(open_image_file, image, sample_id),
        meta=meta,
    )


def load_gqa(request: LoadRequest) -> list[Sample]:
    questions_path, annotations_path = request.paths["questions"], request.paths["annotations"]
    annotations = read_json(annotations_path)
    samples = []
    for row in read_jsonl(questions_path):
        question_id = row["question_id"]
        annotation = annotations.get(str(question_id))
        if annotation is None:
            raise PdropEvalError(f"GQA question {question_id!r} of {questions_path} is missing from {annotations_path}")
        question, prompt = split_suffix(row["text"], request.prompt_suffix)
        meta = {"image_id": annotation.get("imageId"), "types": annotation.get("types", {})}
        image = image_path(request.paths["images"], row["image"], f"{questions_path}, question {question_id!r}")
        samples.append(_image_sample(question_id, question, prompt, annotation["answer"], image, meta))
    return samples


def textvqa_question(text: str) -> str:
    """The question line of a LLaVA TextVQA prompt, located as `eval_textvqa.prompt_processor` does."""
    lines = text.split("\n")
    if "Reference OCR token: " in text and len(lines) == 3:
        return lines[1] if text.startswith("Reference OCR token:") else lines[0]
    if len(lines) == 2:
        return lines[0]
    raise PdropEvalError(f"unexpected TextVQA prompt layout (want question, OCR line, suffix): {text!r}")


def load_textvqa(request: LoadRequest) -> list[Sample]:
    """Sample ids are TextVQA's own question ids (unique), taken from the joined annotation; LLaVA's repeating
    `question_id` (the image id) is kept as meta["image_id"]. Gold is the annotation LLaVA's dict would pick (the
    last one with that key)."""
    questions_path, annotations_path = request.paths["questions"], request.paths["annotations"]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for annotation in read_json(annotations_path)["data"]:
        by_key[(annotation["image_id"], annotation["question"].lower())].append(annotation)
    seen: Counter[tuple[str, str]] = Counter()
    samples = []
    for row in read_jsonl(questions_path):
        text = row["text"]
        question = textvqa_question(text)
        key = (row["question_id"], question.lower())
        matches = by_key.get(key)
        if not matches:
            raise PdropEvalError(f"TextVQA row {key!r} of {questions_path} has no annotation in {annotations_path}")
        if seen[key] >= len(matches):
            raise PdropEvalError(f"TextVQA row {key!r} of {questions_path} appears more often than in {annotations_path}")
        own = matches[seen[key]]
        seen[key] += 1
        _, prompt = split_suffix(text, request.prompt_suffix)
        meta = {"image_id": row["question_id"]}
        image = image_path(request.paths["images"], row["image"], f"{questions_path}, question {own['question_id']!r}")
        samples.append(_image_sample(own["question_id"], question, prompt, list(matches[-1]["answers"]), image, meta))
    return samples


def load_pope(request: LoadRequest) -> list[Sample]:
    """One task for the three categories; each card role `labels_<category>` names that category's label file."""
    questions_path = request.paths["questions"]
    label_files = {role[len(POPE_LABEL_ROLE):]: path for role, path in request.paths.items()
                   if role.startswith(POPE_LABEL_ROLE)}
    labels = {category: [row["label"] for row in read_jsonl(path)] for category, path in label_files.items()}
    rows = read_jsonl(questions_path)
    counts = Counter(row["category"] for row in rows)
    for category, count in counts.items():
        if category not in labels:
            raise PdropEvalError(f"POPE category {category!r} in {questions_path} has no label file in the task card")
        if len(labels[category]) != count:
            raise PdropEvalError(
                f"POPE {category}: {questions_path} has {count} questions but {label_files[category]} has "
                f"{len(labels[category])} labels; labels are matched by position, so the files must agree"
            )
    position: Counter[str] = Counter()
    samples = []
    for row in rows:
        category = row["category"]
        label = labels[category][position[category]]
        position[category] += 1
        question, prompt = split_suffix(row["text"], request.prompt_suffix)
        image = image_path(request.paths["images"], row["image"], f"{questions_path}, question {row['question_id']!r}")
        samples.append(_image_sample(row["question_id"], question, prompt, label, image, {"category": category}))
    return samples


IMAGE_PLACEHOLDER = "<image>"


def load_scienceqa(request: LoadRequest) -> list[Sample]:
    """ScienceQA-IMG as LLaVA runs and scores it (haotian-liu/LLaVA@c121f0432da2, `scripts/v1_5/eval/sqa.sh`).

    `model_vqa_science.py`: the message is `conversations[0]["value"]` with `<image>` removed and `.strip()`ped
    (the file stores `<image>\\nContext: <hint>\\n<question>\\nA. ...`); the image is `images/test/<row image>`;
    `--single-pred-prompt` appends the suffix. `eval_science_qa.py` then scores the problems of
    `pid_splits.json[split]`, with gold `problems.json[pid]["answer"]` (an index into `choices`, read as a letter
    here), and reports IMG-Accuracy over the predictions whose prompt held `<image>`. So the samples are the rows
    that have an `image` and whose id is in the split, in file order; text-only rows and ids outside the split
    (which the scorer never reads) are left out.
    """
    questions_path, problems_path = request.paths["questions"], request.paths["problems"]
    splits_path, split = request.paths["splits"], str(request.options.get("split", "test"))
    problems = read_json(problems_path)
    splits = read_json(splits_path)
    if split not in splits:
        raise PdropEvalError(f"{splits_path} has no split {split!r}; it has {sorted(splits)}")
    in_split = set(splits[split])
    samples = []
    for row in read_json(questions_path):
        pid = row["id"]
        if "image" not in row or pid not in in_split:
            continue
        problem = problems.get(pid)
        if problem is None:
            raise PdropEvalError(f"ScienceQA question {pid!r} of {questions_path} is missing from {problems_path}")
        options = scienceqa_options(problem["choices"])
        text = row["conversations"][0]["value"].replace(IMAGE_PLACEHOLDER, "").strip()
        gold = list(options)[problem["answer"]]
        image = image_path(request.paths["images"], row["image"], f"{questions_path}, question {pid!r}")
        samples.append(_image_sample(pid, text, text + request.prompt_suffix, gold, image, {"options": options}))
    if not samples:
        raise PdropEvalError(
            f"{questions_path} holds no question with an image in split {split!r} of {splits_path}; "
            "ScienceQA-IMG needs LLaVA's llava_test_CQM-A.json and the ScienceQA repo's pid_splits.json"
        )
    return samples
