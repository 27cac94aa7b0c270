"""Writers for tiny copies of every official data format, byte-faithful to the quirks loaders must survive.

Each writer returns what a test needs to check the loader (expected ids, prompts, gold). Images are a few pixels,
in RGB, L, RGBA and P modes, PNG and JPEG.
"""

from __future__ import annotations

import base64
import csv
import io
import json
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
