"""Writers for tiny copies of every official data format, byte-faithful to the quirks loaders must survive.

Each writer returns what a test needs to check the loader (expected ids, prompts, gold). Images are a few pixels,
in RGB, L, RGBA and P modes, PNG and JPEG.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

SUFFIX = "\nAnswer the question using a single word or phrase."
MCQ_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
MODES = ("RGB", "L", "RGBA", "P")


def load_fixture_task(name: str, root: Path, **kwargs: Any) -> list:
    """A task's samples with every data location under the fixture root: LLaVA folders at `root`, VLMEvalKit
    TSVs in `root/lmu`, the HF hub cache in `root/hub`, so nothing on the machine leaks in."""
    from pdrop_eval.registry import get_task, load_samples

    return load_samples(get_task(name), root, lmu_data=root / "lmu", hf_cache=root / "hub", **kwargs)


def image_bytes(mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> bytes:
    """A 6x4 image in `mode`; JPEG cannot hold RGBA/P, so those are saved as PNG whatever `fmt` says."""
    image = Image.new("RGB", (6, 4), (40 * seed % 256, 120, 200))
    image = image.convert(mode) if mode != "P" else image.convert("P", palette=Image.Palette.ADAPTIVE)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt if mode in ("RGB", "L") else "PNG")
    return buffer.getvalue()


def b64_image(mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> str:
    return base64.b64encode(image_bytes(mode, fmt, seed)).decode()


def write_jsonl(path: Path, rows: list[dict[str, Any]], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(json.dumps(row) + newline for row in rows)


def write_image(path: Path, mode: str, fmt: str, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(mode, fmt, seed))


def write_tsv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Tab-separated with csv quoting: fields holding tabs, quotes or newlines are quoted (as pandas writes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# ---- LLaVA eval folders ------------------------------------------------------------------------------------------

def write_llava_gqa(root: Path) -> dict[str, Any]:
    rows = [
        {"question_id": "20968475", "image": "n288870.jpg", "text": "Is the sky dark?" + SUFFIX},
        {"question_id": "201640614", "image": "n33334.png", "text": "What color is the bus?" + SUFFIX},
        {"question_id": "0201640615", "image": "n33334.png", "text": "Which side is the man on?" + SUFFIX},
    ]
    write_jsonl(root / "gqa/llava_gqa_testdev_balanced.jsonl", rows)
    annotations = {
        "20968475": {"imageId": "n288870", "question": "Is the sky dark?", "answer": "yes",
                     "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"}},
        "201640614": {"imageId": "n33334", "question": "What color is the bus?", "answer": "white",
                      "types": {"structural": "query", "semantic": "attr", "detailed": "color"}},
        "0201640615": {"imageId": "n33334", "question": "Which side is the man on?", "answer": "left",
                       "types": {"structural": "query", "semantic": "rel", "detailed": "positionQuery"}},
        "99999": {"imageId": "n1", "question": "unused", "answer": "no", "types": {}},
    }
    (root / "gqa/data").mkdir(parents=True, exist_ok=True)
    (root / "gqa/data/testdev_balanced_questions.json").write_text(json.dumps(annotations))
    write_image(root / "gqa/data/images/n288870.jpg", "RGB", "JPEG")
    write_image(root / "gqa/data/images/n33334.png", "P", "PNG")
    return {"ids": ["20968475", "201640614", "0201640615"], "gold": ["yes", "white", "left"]}


def _ten(*answers: str) -> list[str]:
    return (list(answers) * 10)[:10]


def write_llava_textvqa(root: Path) -> dict[str, Any]:
    """Two questions share image 003a8ae2ef43b901 (LLaVA's question_id is the image id); one row has an empty OCR
    line with its trailing space; one question is non-ASCII and stored in a different case in the annotations."""
    texts = [
        "what is the brand of this camera?\nReference OCR token: dakota, digital, single-use\n" + SUFFIX[1:],
        "what does the small white text say?\nReference OCR token: \n" + SUFFIX[1:],
        "qu'est-ce qui est écrit en haut ?\nReference OCR token: CAFÉ, Noël\n" + SUFFIX[1:],
    ]
    rows = [
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "text": texts[0]},
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "text": texts[1]},
        {"question_id": "00c359f294f7dcd9", "image": "00c359f294f7dcd9.jpg", "text": texts[2]},
    ]
    write_jsonl(root / "textvqa/llava_textvqa_val_v051_ocr.jsonl", rows)
    data = [
        {"question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901", "question_id": 34602,
         "answers": _ten("dakota", "dakota digital"), "set_name": "val"},
        {"question": "what does the small white text say?", "image_id": "003a8ae2ef43b901", "question_id": 34603,
         "answers": _ten("copenhagen"), "set_name": "val"},
        {"question": "Qu'est-ce qui est écrit en haut ?", "image_id": "00c359f294f7dcd9", "question_id": 34604,
         "answers": _ten("café noël"), "set_name": "val"},
    ]
    (root / "textvqa/TextVQA_0.5.1_val.json").write_text(
        json.dumps({"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}),
        encoding="utf-8",
    )
    write_image(root / "textvqa/train_images/003a8ae2ef43b901.jpg", "L", "JPEG")
    write_image(root / "textvqa/train_images/00c359f294f7dcd9.jpg", "RGB", "JPEG")
    return {"ids": [34602, 34603, 34604], "prompts": texts, "gold": [d["answers"] for d in data],
            "questions": [text.split("\n")[0] for text in texts]}


POPE_CATEGORIES = {"adversarial": 1, "random": 10000001, "popular": 20000001}


def write_llava_pope(root: Path) -> dict[str, Any]:
    """Two questions per category; label files are JSON Lines with CRLF endings and ids restarting at 1."""
    rows, gold = [], []
    for category, first_id in POPE_CATEGORIES.items():
        labels = []
        for k, (obj, label) in enumerate((("snowboard", "yes"), ("dog", "no"))):
            image = f"COCO_val2014_00000031019{k}.jpg"
            rows.append({"question_id": first_id + k, "image": image,
                         "text": f"Is there a {obj} in the image?" + SUFFIX, "category": category})
            labels.append({"question_id": k + 1, "image": image, "text": f"Is there a {obj} in the image?",
                           "label": label})
            gold.append(label)
            write_image(root / "pope/val2014" / image, "RGB", "JPEG", seed=k)
        write_jsonl(root / f"pope/coco/coco_pope_{category}.json", labels, newline="\r\n")
    write_jsonl(root / "pope/llava_pope_test.jsonl", rows)
    return {"ids": [row["question_id"] for row in rows], "gold": gold,
            "categories": [row["category"] for row in rows]}


MMBENCH_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]


def mmbench_rows() -> list[list[Any]]:
    """Base question 12 with its circular copy 1000012 (options rotated, image by reference to row 12);
    question 13 has a 'None' option C (pandas reads NaN: listing stops there even though D is set), a
    multi-line hint and an option with a literal backslash-n; question 14 has no hint ('nan')."""
    return [
        [12, "What is shown?", "The picture was\ntaken outdoors.", "a cat", "a dog", "a bird", "a fish", "B",
         "object_localization", b64_image("RGB", "JPEG"), "src", "finegrained_perception (instance-level)",
         "nan", "dev"],
        [1000012, "What is shown?", "The picture was\ntaken outdoors.", "a dog", "a bird", "a fish", "a cat", "A",
         "object_localization", "12", "src", "finegrained_perception (instance-level)", "nan", "dev"],
        [13, 'Which "word" is right?', "nan", "x\\ny", "z", "None", "w", "A", "ocr", b64_image("L", "PNG"), "src",
         "finegrained_perception (cross-instance)", "nan", "dev"],
        [14, "Pick one", "NA", "yes", "no", "", "", "B", "image_scene", b64_image("P", "PNG"), "src",
         "coarse_perception", "nan", "dev"],
    ]


MMBENCH_PROMPTS = [
    "The picture was\ntaken outdoors.\nWhat is shown?\nA. a cat\nB. a dog\nC. a bird\nD. a fish" + MCQ_SUFFIX,
    "The picture was\ntaken outdoors.\nWhat is shown?\nA. a dog\nB. a bird\nC. a fish\nD. a cat" + MCQ_SUFFIX,
    'Which "word" is right?\nA. x\\ny\nB. z' + MCQ_SUFFIX,
    "Pick one\nA. yes\nB. no" + MCQ_SUFFIX,
]


def write_mmbench_tsv(path: Path) -> dict[str, Any]:
    write_tsv(path, MMBENCH_HEADER, mmbench_rows())
    return {"ids": [12, 1000012, 13, 14], "prompts": MMBENCH_PROMPTS, "gold": ["B", "A", "A", "B"]}


# ---- VLMEvalKit TSVs ---------------------------------------------------------------------------------------------

MMSTAR_QUESTION = ("Which option describe the object relationship in the image correctly?\nOptions: "
                   "A: The suitcase is on the book., B: The suitcase is beneath the cat., "
                   "C: The suitcase is beneath the bed., D: The suitcase is beneath the book.")


def write_mmstar_tsv(path: Path) -> dict[str, Any]:
    """VLMEvalKit's MMStar.tsv: options inside the question AND in columns A-D (empty where a question has fewer);
    the prompt must not list them a second time."""
    header = ["index", "question", "answer", "category", "l2-category", "image", "A", "B", "C", "D"]
    rows = [
        [0, MMSTAR_QUESTION, "A", "coarse perception", "image scene and topic", b64_image("RGBA", "PNG"),
         "The suitcase is on the book.", "The suitcase is beneath the cat.", "The suitcase is beneath the bed.",
         "The suitcase is beneath the book."],
        [1, "How many dogs?\nOptions: A: 1, 2 or 3, B: 4", "B", "math", "numeric commonsense and calculation", "0",
         "1, 2 or 3", "4", "", ""],
    ]
    write_tsv(path, header, rows)
    return {"ids": [0, 1], "prompts": [MMSTAR_QUESTION + MCQ_SUFFIX, rows[1][1] + MCQ_SUFFIX], "gold": ["A", "B"],
            "options": [{"A": "The suitcase is on the book.", "B": "The suitcase is beneath the cat.",
                         "C": "The suitcase is beneath the bed.", "D": "The suitcase is beneath the book."},
                        {"A": "1, 2 or 3", "B": "4"}]}


def write_vqa_tsv(path: Path, with_split: bool = False) -> dict[str, Any]:
    """DocVQA/ChartQA/InfoVQA/OCRVQA shape: answers as Python literals (one with an apostrophe, hence double
    quotes inside), a plain non-list answer, an image by reference, a quoted multi-line question."""
    header = ["index", "image", "question", "answer"] + (["split"] if with_split else [])
    rows = [
        [7, b64_image("RGB", "JPEG"), "What is the name of the diner?", "[\"Denny's\", 'dennys']"],
        [8, "7", "What is the total?\n(in dollars)", "['1,000', '1000']"],
        [9, b64_image("L", "PNG"), "What year?", "1984"],
    ]
    if with_split:
        for row, split in zip(rows, ("human", "augmented", "human")):
            row.append(split)
    write_tsv(path, header, rows)
    return {"ids": [7, 8, 9], "gold": [["Denny's", "dennys"], ["1,000", "1000"], ["1984"]],
            "prompts": [row[2] + SUFFIX for row in rows]}


# ---- Hugging Face layouts ----------------------------------------------------------------------------------------

def image_cell(mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> dict[str, Any]:
    return {"bytes": image_bytes(mode, fmt, seed), "path": None}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_parquet_shards(folder: Path, split: str, rows: list[dict[str, Any]], shards: int) -> None:
    """`<split>-0000k-of-0000n.parquet` shards, the hub's naming."""
    size = -(-len(rows) // shards)
    for k in range(shards):
        write_parquet(folder / f"{split}-{k:05d}-of-{shards:05d}.parquet", rows[k * size:(k + 1) * size])


def write_hf_gqa(repo: Path) -> dict[str, Any]:
    questions = [
        {"id": "201307251", "imageId": "n161313", "question": "Is it overcast?", "answer": "no",
         "fullAnswer": "No, it is clear.", "isBalanced": True, "types": {"structural": "verify", "semantic": "attr",
                                                                         "detailed": "weatherVerify"}},
        {"id": "201640614", "imageId": "n235859", "question": "Who is wearing a shirt?", "answer": "man",
         "fullAnswer": "The man is wearing a shirt.", "isBalanced": True,
         "types": {"structural": "query", "semantic": "rel", "detailed": "relS"}},
    ]
    images = [{"id": "n235859", "image": image_cell("RGBA")}, {"id": "n161313", "image": image_cell("RGB", "JPEG")}]
    write_parquet_shards(repo / "testdev_balanced_instructions", "testdev", questions, 1)
    write_parquet_shards(repo / "testdev_balanced_images", "testdev", images, 1)
    return {"ids": ["201307251", "201640614"], "gold": ["no", "man"],
            "prompts": ["Is it overcast?" + SUFFIX, "Who is wearing a shirt?" + SUFFIX]}


def textvqa_rows() -> list[dict[str, Any]]:
    return [
        {"image_id": "003a8ae2ef43b901", "question_id": 34602, "question": "what is the brand of this camera?",
         "image": image_cell("L", "JPEG"), "answers": _ten("dakota"), "ocr_tokens": ["dakota", "digital"],
         "set_name": "val"},
        {"image_id": "003a8ae2ef43b901", "question_id": 34603, "question": "what does the text say?",
         "image": image_cell("RGB"), "answers": _ten("copenhagen"), "ocr_tokens": [], "set_name": "val"},
        {"image_id": "00c359f294f7dcd9", "question_id": 34604, "question": "what number?",
         "image": image_cell("P"), "answers": _ten("5"), "ocr_tokens": ["5"], "set_name": "val"},
    ]


def mmbench_hf_rows(index_as_string: bool = False) -> list[dict[str, Any]]:
    """lmms-lab MMBench: the string "nan" for a missing hint or option."""
    base = [
        {"index": 12, "question": "What is shown?", "hint": "nan", "A": "a cat", "B": "a dog", "C": "nan",
         "D": "nan", "answer": "B", "category": "object_localization", "image": image_cell("RGB"),
         "source": "src", "l2-category": "finegrained_perception (instance-level)", "comment": "nan",
         "split": "dev"},
        {"index": 1000012, "question": "What is shown?", "hint": "Look closely.", "A": "a dog", "B": "a cat",
         "C": "nan", "D": "nan", "answer": "A", "category": "object_localization", "image": image_cell("L"),
         "source": "src", "l2-category": "finegrained_perception (instance-level)", "comment": "nan",
         "split": "dev"},
    ]
    if index_as_string:
        for row in base:
            row["index"] = str(row["index"])
            row["L2-category"] = row.pop("l2-category")
    return base


MMBENCH_HF_PROMPTS = ["What is shown?\nA. a cat\nB. a dog" + MCQ_SUFFIX,
                      "Look closely.\nWhat is shown?\nA. a dog\nB. a cat" + MCQ_SUFFIX]


# ---- ScienceQA (LLaVA eval folder and lmms-lab) ------------------------------------------------------------------

SQA_PROBLEMS = {
    # image, hint with a blank line inside, three choices: LLaVA's text has "Context: ..." first
    "5": {"question": "Which of the following could Gordon's test show?",
          "choices": ["if the spacecraft was damaged", "how steady a parachute was", "whether it would swing"],
          "answer": 1, "hint": "People can use the engineering-design process.\n\nGordon was an engineer.",
          "image": "image.png", "task": "closed choice", "grade": "grade6", "subject": "natural science",
          "topic": "science-and-engineering-practices", "category": "Designing experiments",
          "skill": "Identify control and experimental groups", "lecture": "", "solution": "", "split": "test"},
    # image, no hint, four choices
    "11": {"question": "What is the name of the colony shown?",
           "choices": ["Maryland", "New Hampshire", "Rhode Island", "Vermont"], "answer": 1, "hint": "",
           "image": "image.png", "task": "closed choice", "grade": "grade5", "subject": "social science",
           "topic": "us-history", "category": "Colonial America", "skill": "Identify the Thirteen Colonies",
           "lecture": "", "solution": "", "split": "test"},
    # text only: not part of ScienceQA-IMG
    "15": {"question": "Would you find the word dozen on a dictionary page with the following guide words?\n"
                       "daddy - definition", "choices": ["no", "yes"], "answer": 0, "hint": "", "image": None,
           "task": "closed choice", "grade": "grade2", "subject": "language science", "topic": "reference-skills",
           "category": "Use guide words", "skill": "Use guide words", "lecture": "", "solution": "",
           "split": "test"},
    # image, five choices (the most ScienceQA has), gold E, non-ASCII text
    "42": {"question": "What is the expected ratio of offspring with a woolly fleece? Choose the most likely ratio.",
           "choices": ["0:4", "4:0", "2:2", "1:3", "3:1"], "answer": 4,
           "hint": "This Punnett square shows a cross between two sheep — the allele (F) is dominant.",
           "image": "image.png", "task": "closed choice", "grade": "grade8", "subject": "natural science",
           "topic": "biology", "category": "Genes to traits", "skill": "Punnett squares", "lecture": "",
           "solution": "", "split": "test"},
    # image, but in the validation split: the scorer never reads it
    "7": {"question": "Which animal's feet are also adapted for sticking to smooth surfaces?",
          "choices": ["tree frog", "mole"], "answer": 0, "hint": "", "image": "image.png", "task": "closed choice",
          "grade": "grade4", "subject": "natural science", "topic": "biology", "category": "Adaptations",
          "skill": "Animal adaptations: feet", "lecture": "", "solution": "", "split": "val"},
}
SQA_SUFFIX = MCQ_SUFFIX
SQA_TEXTS = {
    "5": "Context: People can use the engineering-design process.\n\nGordon was an engineer.\n"
         "Which of the following could Gordon's test show?\nA. if the spacecraft was damaged\n"
         "B. how steady a parachute was\nC. whether it would swing",
    "11": "What is the name of the colony shown?\nA. Maryland\nB. New Hampshire\nC. Rhode Island\nD. Vermont",
    "42": "Context: This Punnett square shows a cross between two sheep — the allele (F) is dominant.\n"
          "What is the expected ratio of offspring with a woolly fleece? Choose the most likely ratio.\n"
          "A. 0:4\nB. 4:0\nC. 2:2\nD. 1:3\nE. 3:1",
}


def _sqa_letter(pid: str) -> str:
    return "ABCDE"[SQA_PROBLEMS[pid]["answer"]]


def write_llava_scienceqa(root: Path) -> dict[str, Any]:
    """LLaVA's scienceqa/ folder: llava_test_CQM-A.json (a JSON list; `<image>\\n` leads the value of rows with an
    image, which carry `image: "<pid>/image.png"`; ids are strings; the gpt turn holds the letter) plus the ScienceQA
    repo's problems.json (dict by pid, `answer` an index) and pid_splits.json. Row 7 has an image but is in `val`;
    row 15 is text-only; row 42 has the placeholder at the end."""
    base = root / "scienceqa"
    rows = []
    for pid in ("5", "11", "15", "42", "7"):
        text = SQA_TEXTS.get(pid) or (SQA_PROBLEMS[pid]["question"] + "\nA. no\nB. yes")
        row: dict[str, Any] = {"id": pid}
        if SQA_PROBLEMS[pid]["image"]:
            row["image"] = f"{pid}/image.png"
            # LLaVA's file leads with the placeholder; convert_sqa_to_llava.py puts it last: both must load alike
            text = text + "\n<image>" if pid == "42" else "<image>\n" + text
        row["conversations"] = [{"from": "human", "value": text}, {"from": "gpt", "value": _sqa_letter(pid)}]
        rows.append(row)
    base.mkdir(parents=True, exist_ok=True)
    (base / "llava_test_CQM-A.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    (base / "problems.json").write_text(json.dumps(SQA_PROBLEMS), encoding="utf-8")
    splits = {"train": ["1"], "val": ["7"], "test": ["5", "11", "15", "42"], "minival": ["7"]}
    (base / "pid_splits.json").write_text(json.dumps(splits), encoding="utf-8")
    for seed, (pid, mode) in enumerate((("5", "RGBA"), ("11", "RGB"), ("42", "P"), ("7", "RGB"))):
        write_image(base / "images" / "test" / pid / "image.png", mode, "PNG", seed)
    ids = ["5", "11", "42"]
    return {"ids": ids, "gold": [_sqa_letter(pid) for pid in ids],
            "prompts": [SQA_TEXTS[pid] + SQA_SUFFIX for pid in ids]}


def scienceqa_hf_rows() -> list[dict[str, Any]]:
    """lmms-lab/ScienceQA `ScienceQA-IMG` rows: no id column, `choices` a list, `answer` an int index, `hint` ""
    when there is none."""
    rows = []
    for seed, pid in enumerate(("5", "11", "42")):
        problem = SQA_PROBLEMS[pid]
        row = {key: problem[key] for key in ("question", "choices", "answer", "hint", "task", "grade", "subject",
                                             "topic", "category", "skill", "lecture", "solution")}
        row["image"] = image_cell(("RGBA", "L", "P")[seed], "PNG", seed)
        rows.append(row)
    return rows


# ---- MMBench-CN --------------------------------------------------------------------------------------------------

CN_SUFFIX = "\n请直接回答选项字母。"


def mmbench_cn_rows() -> list[list[Any]]:
    """mmbench_dev_cn_20231003.tsv shape (MMBENCH_HEADER): question 30 with its circular copy 1000030 (image by
    reference); question 31 has a Chinese hint spanning two lines and only two options (C, D empty -> NaN)."""
    return [
        [30, "图中是什么动物？", "nan", "猫", "狗", "鸟", "鱼", "B", "object_localization", b64_image("RGB", "JPEG"),
         "src", "finegrained_perception (instance-level)", "nan", "dev"],
        [1000030, "图中是什么动物？", "nan", "狗", "鸟", "鱼", "猫", "A", "object_localization", "30", "src",
         "finegrained_perception (instance-level)", "nan", "dev"],
        [31, "下面哪个说法正确？", "这张照片\n摄于户外。", "是", "否", "", "", "B", "image_scene", b64_image("L", "PNG"),
         "src", "coarse_perception", "nan", "dev"],
    ]


MMBENCH_CN_PROMPTS = [
    "图中是什么动物？\nA. 猫\nB. 狗\nC. 鸟\nD. 鱼" + CN_SUFFIX,
    "图中是什么动物？\nA. 狗\nB. 鸟\nC. 鱼\nD. 猫" + CN_SUFFIX,
    "这张照片\n摄于户外。\n下面哪个说法正确？\nA. 是\nB. 否" + CN_SUFFIX,
]


def write_mmbench_cn_tsv(path: Path) -> dict[str, Any]:
    write_tsv(path, MMBENCH_HEADER, mmbench_cn_rows())
    return {"ids": [30, 1000030, 31], "prompts": MMBENCH_CN_PROMPTS, "gold": ["B", "A", "B"]}


def mmbench_cn_hf_rows() -> list[dict[str, Any]]:
    """lmms-lab/MMBench `cn` / lmms-lab/MMBench_CN: int index, "nan" strings, the `L2-category` column."""
    rows = []
    for seed, (index, question, hint, options, answer, category, l2) in enumerate((
        (30, "图中是什么动物？", "nan", ("猫", "狗", "鸟", "鱼"), "B", "object_localization",
         "finegrained_perception (instance-level)"),
        (1000030, "图中是什么动物？", "nan", ("狗", "鸟", "鱼", "猫"), "A", "object_localization",
         "finegrained_perception (instance-level)"),
        (31, "下面哪个说法正确？", "这张照片\n摄于户外。", ("是", "否", "nan", "nan"), "B", "image_scene",
         "coarse_perception"),
    )):
        row = {"index": index, "question": question, "hint": hint, "answer": answer, "category": category,
               "image": image_cell("RGB", "PNG", seed), "source": "src", "L2-category": l2, "comment": "nan",
               "split": "dev"}
        row.update(zip("ABCD", options))
        rows.append(row)
    return rows
# ---- MME and SEED-Bench ------------------------------------------------------------------------------------------

MME_SUBTASKS = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                "OCR", "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
# Subtasks whose release folder holds images/ and questions_answers_YN/; the rest keep images and .txt side by side.
MME_NESTED = frozenset({"posters", "celebrity", "scene", "landmark", "artwork"})
MME_INSTRUCTION = " Please answer yes or no."
# MME's own question text (with its instruction), per subtask: the yes question then the no question of one image.
MME_QUESTIONS = {
    "color": ("Is there a red scarf in the image?  Please answer yes or no.",  # two spaces, as in MME
              "Is there a brown scarf in the image?  Please answer yes or no."),
    "position": ("Is the refrigerator on the right side of the picture Please answer yes or no.",
                 "Is the trash can under the cup in the image\uff1f Please answer yes or no."),
    "artwork": ("Is this artwork displayed in mus\u00e9e toulouse-lautrec, albi? Please answer yes or no.",
                "Is this artwork displayed in kupferstichkabinett, gotha? Please answer yes or no."),
}


def mme_question(subtask: str, k: int) -> str:
    default = (f"Is this a {subtask} question with a yes answer?{MME_INSTRUCTION}",
               f"Is this a {subtask} question with a no answer?{MME_INSTRUCTION}")
    return MME_QUESTIONS.get(subtask, default)[k]


def _mme_image_name(subtask: str) -> str:
    return f"{subtask}_0001.png" if subtask != "scene" else "Places365_val_00000001.jpg"


def write_llava_mme(root: Path, subtasks: tuple[str, ...] = MME_SUBTASKS) -> dict[str, Any]:
    """LLaVA's llava_mme.jsonl (question_id = image path, MME's instruction replaced by LLaVA's suffix) and
    MME_Benchmark_release_version: nested (images/ + questions_answers_YN/) and flat subtask folders, answer files
    with a trailing newline, and an extra answer file for an image LLaVA's list leaves out."""
    release = root / "MME/MME_Benchmark_release_version"
    rows, ids, gold, prompts = [], [], [], []
    for n, subtask in enumerate(subtasks):
        name = _mme_image_name(subtask)
        nested = subtask in MME_NESTED
        image_rel = f"{subtask}/images/{name}" if nested else f"{subtask}/{name}"
        qa_dir = release / subtask / ("questions_answers_YN" if nested else "")
        qa_dir.mkdir(parents=True, exist_ok=True)
        stem = name.split(".")[0]
        lines = [f"{mme_question(subtask, k)}\t{answer}" for k, answer in enumerate(("Yes", "No"))]
        (qa_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (qa_dir / "unused_0002.txt").write_text(f"Unused?{MME_INSTRUCTION}\tNo\n", encoding="utf-8")
        write_image(release / image_rel, MODES[n % len(MODES)], "JPEG" if name.endswith(".jpg") else "PNG", seed=n)
        for k, answer in enumerate(("Yes", "No")):
            text = mme_question(subtask, k).replace(MME_INSTRUCTION.strip(), "").strip() + SUFFIX
            rows.append({"question_id": image_rel, "image": image_rel, "text": text, "category": subtask})
            ids.append(f"{image_rel}#{k}")
            gold.append(answer)
            prompts.append(text)
    write_jsonl(root / "MME/llava_mme.jsonl", rows)
    return {"ids": ids, "gold": gold, "prompts": prompts, "categories": [row["category"] for row in rows],
            "images": [row["question_id"] for row in rows]}


def write_hf_mme(repo: Path) -> dict[str, Any]:
    """lmms-lab/MME: data/test-0000k-of-00002-<hash>.parquet, question_id repeated for an image's two questions,
    MME's own question text and "Yes"/"No" answers."""
    rows = []
    for n, subtask in enumerate(("code_reasoning", "color", "artwork")):
        question_id = f"{subtask}/{_mme_image_name(subtask)}"
        for k, answer in enumerate(("Yes", "No")):
            rows.append({"question_id": question_id, "image": image_cell(MODES[n], "PNG", n),
                         "question": mme_question(subtask, k), "answer": answer, "category": subtask})
    write_parquet(repo / "data/test-00000-of-00002-a25dbe3b44c4fda6.parquet", rows[:4])
    write_parquet(repo / "data/test-00001-of-00002-7d22c7f1aba6fca4.parquet", rows[4:])
    return {
        "ids": [f"{row['question_id']}#{k % 2}" for k, row in enumerate(rows)],
        "gold": [row["answer"] for row in rows],
        "prompts": [row["question"].replace(MME_INSTRUCTION.strip(), "").strip() + SUFFIX for row in rows],
        "categories": [row["category"] for row in rows],
    }


SEED_TYPES = {"Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
              "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
              "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11,
              "Procedure Understanding": 12}


def seed_questions() -> list[dict[str, Any]]:
    """SEED-Bench.json `questions`: string ids, id "49914" on two different image questions, one video question."""
    return [
        {"answer": "A", "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
         "data_id": "1454426_2591111986.jpg", "data_type": "image", "question": "How many towels are in the image?",
         "question_id": "101669", "question_type_id": 5},
        {"answer": "C", "choice_a": "A kitchen", "choice_b": "A beach", "choice_c": "A forest", "choice_d": "A road",
         "data_id": "2371455_1084942364.jpg", "data_type": "image", "question": "Where was the photo taken?",
         "question_id": "49914", "question_type_id": 1},
        {"answer": "B", "choice_a": "Red", "choice_b": "Blue", "choice_c": "Green", "choice_d": "Black",
         "data_id": "3000000_1111111111.jpg", "data_type": "image", "question": "What colour is the car?",
         "question_id": "49914", "question_type_id": 3},
        {"answer": "D", "choice_a": "Opening a jar", "choice_b": "Closing a jar", "choice_c": "Pouring water",
         "choice_d": "Cutting bread", "data_id": "v_123.webm", "data_type": "video",
         "question": "What is the person doing?", "question_id": "v0", "question_type_id": 10, "segment": None},
    ]


def _seed_text(question: dict[str, Any]) -> str:
    options = "".join(f"\n{letter}. {question['choice_' + letter.lower()]}" for letter in "ABCD")
    return question["question"] + options + MCQ_SUFFIX


def write_llava_seed(root: Path) -> dict[str, Any]:
    """llava-seed-bench.jsonl (int ids for image rows, "v0" for a video row whose middle frame LLaVA extracted) and
    the official SEED-Bench.json."""
    questions = seed_questions()
    folder = root / "seed_bench"
    rows = []
    for n, question in enumerate(questions):
        video = question["data_type"] == "video"
        image = (f"SEED-Bench-video-image/{question['question_type_id']}_{question['question_id']}.png" if video
                 else f"SEED-Bench-image/{question['data_id']}")
        write_image(folder / image, MODES[n % len(MODES)], "PNG" if video else "JPEG", seed=n)
        question_id = question["question_id"] if video else int(question["question_id"])
        rows.append({"question_id": question_id, "image": image, "text": _seed_text(question),
                     "category": next(k for k, v in SEED_TYPES.items() if v == question["question_type_id"])})
    write_jsonl(folder / "llava-seed-bench.jsonl", rows)
    (folder / "SEED-Bench.json").write_text(json.dumps({"question_type": SEED_TYPES, "questions": questions}))
    image_questions = [q for q in questions if q["data_type"] == "image"]
    return {"ids": [101669, "49914#0", "49914#1"], "gold": [q["answer"] for q in image_questions],
            "prompts": [_seed_text(q) for q in image_questions],
            "types": ["Instances Counting", "Scene Understanding", "Instance Attributes"]}


def write_hf_seed(repo: Path) -> dict[str, Any]:
    """lmms-lab/SEED-Bench: `image` is a list of frames (one for an image question, several for a video one)."""
    rows = []
    for n, question in enumerate(seed_questions()):
        frames = 3 if question["data_type"] == "video" else 1
        row = {key: question[key] for key in ("answer", "choice_a", "choice_b", "choice_c", "choice_d", "data_id",
                                               "data_type", "question", "question_id", "question_type_id")}
        row["image"] = [image_cell(MODES[(n + f) % len(MODES)], "PNG", n) for f in range(frames)]
        rows.append(row)
    write_parquet_shards(repo / "data", "test", rows, 2)
    image_questions = [q for q in seed_questions() if q["data_type"] == "image"]
    return {"ids": ["101669", "49914#0", "49914#1"], "gold": [q["answer"] for q in image_questions],
            "prompts": [_seed_text(q) for q in image_questions]}
# ---- the published schemas of MMStar's TSV and lmms-lab/POPE's configs ------------------------------------------

MMSTAR_AUTHORS_HEADER = ["index", "question", "answer", "category", "l2_category", "bench", "image"]


def write_mmstar_authors_tsv(path: Path) -> dict[str, Any]:
    """MMStar.tsv as Lin-Chen/MMStar publishes it (and VLMEvalKit mirrors it): `l2_category` with an underscore,
    the source benchmark in `bench`, options only inside the question, no A-D columns."""
    rows = [
        [0, MMSTAR_QUESTION, "A", "coarse perception", "image scene and topic", "seedbench", b64_image("RGB", "JPEG")],
        [1, "How many dogs?\nOptions: A: 1, 2 or 3, B: 4", "B", "math", "numeric commonsense and calculation",
         "mathvista", "0"],
    ]
    write_tsv(path, MMSTAR_AUTHORS_HEADER, rows)
    return {"ids": [0, 1], "gold": ["A", "B"], "l2": ["image scene and topic", "numeric commonsense and calculation"],
            "options": [{"A": "The suitcase is on the book.", "B": "The suitcase is beneath the cat.",
                         "C": "The suitcase is beneath the bed.", "D": "The suitcase is beneath the book."},
                        {"A": "1, 2 or 3", "B": "4"}]}


POPE_FULL_SPLITS = ("adversarial", "popular", "random")


def pope_full_rows(split: str) -> list[dict[str, Any]]:
    """Two rows of one lmms-lab/POPE `Full` split: question_id restarts at "1" in every split (as in LLaVA's
    coco_pope_<category>.json), and there is no category column: the split is the category."""
    return [
        {"question_id": str(k + 1), "question": f"Is there a {obj} in the image?", "answer": answer,
         "image_source": f"COCO_val2014_00000031019{k}", "image": image_cell("RGB", "JPEG", seed=k)}
        for k, (obj, answer) in enumerate((("snowboard", "yes"), ("dog", "no")))
    ]


POPE_FULL_IDS = [f"{split}/{k}" for split in POPE_FULL_SPLITS for k in (1, 2)]


def write_pope_full_parquet(repo: Path) -> None:
    """`Full/<split>-00000-of-00001.parquet`, the hub's layout for a named config with several splits."""
    for split in POPE_FULL_SPLITS:
        write_parquet_shards(repo / "Full", split, pope_full_rows(split), 1)


def save_hf_to_disk(path: Path, splits: dict[str, list[dict[str, Any]]], config_name: str | None = None) -> None:
    """`DatasetDict.save_to_disk`, with the image columns typed as `datasets.Image` and, like a copy loaded from the
    hub with `load_dataset(repo, config)`, the config name recorded in each split's dataset_info.json."""
    import datasets

    def build(rows: list[dict[str, Any]]) -> Any:
        features = datasets.Dataset.from_list(rows).features
        features["image"] = datasets.Image()
        info = datasets.DatasetInfo(config_name=config_name, features=features)
        return datasets.Dataset.from_list(rows, features=features, info=info)

    datasets.DatasetDict({name: build(rows) for name, rows in splits.items()}).save_to_disk(str(path))


def pope_default_rows() -> list[dict[str, Any]]:
    """lmms-lab/POPE's default config (split test): `id`, `question_id`, `category` per row."""
    return [{"id": str(k), "question_id": "1", "question": "Is there a dog in the image?", "answer": answer,
             "image_source": "COCO_val2014_000000310196", "image": image_cell("RGB", "JPEG"), "category": category}
            for k, (answer, category) in enumerate((("yes", "adversarial"), ("no", "popular"), ("no", "random")))]


def _vqa_tsv(filename: str) -> Callable[[Path], object]:
    return lambda root: write_vqa_tsv(root / "lmu" / filename)


# Every registered task's data in one of its official formats (the writers above); shapes is generated.
TASK_FIXTURE_WRITERS: dict[str, Callable[[Path], object]] = {
    "gqa": write_llava_gqa,
    "textvqa": write_llava_textvqa,
    "pope": write_llava_pope,
    "mmbench": lambda root: write_mmbench_tsv(root / "mmbench" / "mmbench_dev_20230712.tsv"),
    "mmbench_cn": lambda root: write_mmbench_cn_tsv(root / "mmbench_cn" / "mmbench_dev_cn_20231003.tsv"),
    "mmstar": lambda root: write_mmstar_tsv(root / "lmu" / "MMStar.tsv"),
    "scienceqa_img": write_llava_scienceqa,
    "mme": write_llava_mme,
    "seedbench": write_llava_seed,
    "docvqa": _vqa_tsv("DocVQA_VAL.tsv"),
    "chartqa": lambda root: write_vqa_tsv(root / "lmu" / "ChartQA_TEST.tsv", with_split=True),
    "infovqa": _vqa_tsv("InfoVQA_VAL.tsv"),
    "ocrvqa": _vqa_tsv("OCRVQA_TEST.tsv"),
    "ocrvqa_core": _vqa_tsv("OCRVQA_TESTCORE.tsv"),
    "shapes": lambda root: None,
}
