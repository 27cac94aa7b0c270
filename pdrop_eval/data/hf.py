"""Hugging Face datasets kept locally, in the lmms-lab (and Lin-Chen/MMStar) schemas.

Two on-disk shapes are read for each table a card names:
- the hub layout: parquet shards matched by the card's glob (`data/validation-*.parquet`, config folders such as
  `testdev_balanced_instructions/testdev-*.parquet` or `Full/{split}-*.parquet`, or a root-level
  `mmstar.parquet`), found under `<data-root>/hf/<owner>/<name>/` or a hub-cache snapshot; read with pyarrow,
  images kept encoded;
- a `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder, read with `datasets.load_from_disk`.

A table may span several splits (lmms-lab/POPE's `Full` config: adversarial, popular, random); each split is
read on its own so a loader knows which split a row came from.

`datasets` is imported only inside the function that needs it: the GPU image does not ship it.

Hub tables embed their images as bytes. A cell that names its image by path only (a `save_to_disk` folder built
from local files) is read relative to the table's folder and refused when the path leaves it, as LLaVA folders are.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from pdrop_eval.data.images import decode_image_bytes, image_path, open_image_file, to_rgb
from pdrop_eval.data.prompts import scienceqa_options, scienceqa_prompt
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.rows import mcq_samples, require_columns, vqa_samples
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError, SampleError


@dataclass(frozen=True)
class HFSplit:
    """One split of a table: its parquet shards, or its place in a save_to_disk folder (`name` None: the folder
    holds a single `Dataset`, not a `DatasetDict`)."""

    name: str | None
    parquet_files: tuple[Path, ...] = ()
    disk_dir: Path | None = None

    @property
    def folder(self) -> Path:
        """Where path-only image cells are looked up: the save_to_disk folder, or the first shard's folder."""
        return self.disk_dir if self.disk_dir is not None else self.parquet_files[0].parent

    def __str__(self) -> str:
        if self.disk_dir is not None:
            return f"{self.disk_dir} (save_to_disk{'' if self.name is None else f', split {self.name}'})"
        return ", ".join(str(path) for path in self.parquet_files)


@dataclass(frozen=True)
class HFTable:
    """Where one table of a Hugging Face dataset was found, split by split."""

    splits: tuple[HFSplit, ...]

    def __str__(self) -> str:
        return "; ".join(str(split) for split in self.splits)

    @property
    def folder(self) -> Path:
        """Where path-only image cells of rows read across splits are looked up: the first split's folder."""
        return self.splits[0].folder

    @property
    def files(self) -> tuple[Path, ...]:
        """The parquet files or save_to_disk folders read, for provenance."""
        found: list[Path] = []
        for split in self.splits:
            for path in (*split.parquet_files, *([split.disk_dir] if split.disk_dir is not None else [])):
                if path not in found:
                    found.append(path)
        return tuple(found)


def read_rows(table: HFTable) -> list[dict[str, Any]]:
    """Every row of the table as a dict; image columns stay encoded ({"bytes", "path"}) until a sample needs them."""
    return [row for _, rows in read_splits(table) for row in rows]


def read_splits(table: HFTable) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """(split name, rows) for each split of the table, in the order the card lists the splits."""
    return [(split.name, _read_split(split)) for split in table.splits]


def _read_split(split: HFSplit) -> list[dict[str, Any]]:
    if split.disk_dir is not None:
        return _read_disk(split)
    pq = _optional_import("pyarrow.parquet", "pyarrow")
    rows: list[dict[str, Any]] = []
    for path in split.parquet_files:
        try:
            rows.extend(pq.read_table(path).to_pylist())
        except (OSError, ValueError) as err:
            raise PdropEvalError(f"cannot read the parquet file {path}: {err}") from err
    return rows


def _optional_import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PdropEvalError(
            f"reading Hugging Face data needs the `{package}` package, which is not installed: pip install {package} "
            "(or use the LLaVA folder / VLMEvalKit TSV copy of the data)"
        ) from err


def _read_disk(split: HFSplit) -> list[dict[str, Any]]:
    datasets = _optional_import("datasets", "datasets")

    folder = split.disk_dir if split.name is None else split.disk_dir / split.name
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise PdropEvalError(f"cannot load the saved dataset {folder}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        raise PdropEvalError(f"{folder} holds a DatasetDict with splits {sorted(loaded)}, not the split itself")
    for name, feature in loaded.features.items():
        if isinstance(feature, datasets.Image):
            loaded = loaded.cast_column(name, datasets.Image(decode=False))
    return loaded.to_list()


def open_cell_image(cell: Any, sample_id: Any, where: str) -> Image.Image:
    """Decode an HF image cell: {"bytes", "path"} (parquet / undecoded arrow), a PIL image, or a file path."""
    if isinstance(cell, Image.Image):
        return to_rgb(cell)
    if isinstance(cell, Mapping):
        if cell.get("bytes"):
            return decode_image_bytes(cell["bytes"], sample_id, where)
        if cell.get("path"):
            return open_image_file(Path(cell["path"]), sample_id)
    if isinstance(cell, str) and cell:
        return open_image_file(Path(cell), sample_id)
    raise SampleError(f"sample {sample_id!r}: {where} holds no image for it")


def contain_cell(cell: Any, place: HFSplit | HFTable, sample_id: Any) -> Any:
    """The cell with a path-only image joined to its table's folder (refused when it leaves it); others as they are."""
    where = f"{place}, sample {sample_id!r}"
    if isinstance(cell, Mapping) and not cell.get("bytes") and cell.get("path"):
        return {**cell, "path": str(image_path(place.folder, cell["path"], where))}
    if isinstance(cell, str) and cell:
        return str(image_path(place.folder, cell, where))
    return cell


def _cell_opener(column: str, split: HFSplit):
    def opener(row: Mapping[str, Any], sample_id: Any):
        if column not in row:
            raise PdropEvalError(f"{split} has no image column {column!r}")
        return partial(open_cell_image, contain_cell(row[column], split, sample_id), sample_id, str(split))

    return opener


def _split_samples(build, request: LoadRequest) -> list[Sample]:
    table: HFTable = request.paths["rows"]
    samples: list[Sample] = []
    for split, (name, rows) in zip(table.splits, read_splits(table)):
        where = str(split)
        opener = _cell_opener(request.options.get("image_column", "image"), split)
        samples += build(
            rows, request.options, request.prompt_suffix, opener, where, split=name, absent=request.absent_columns
        )
    return samples


def load_hf_vqa(request: LoadRequest) -> list[Sample]:
    """Open-ended lmms-lab tables (textvqa, DocVQA/InfographicVQA, ChartQA, POPE default or `Full`); columns from
    the card."""
    return _split_samples(vqa_samples, request)


def load_hf_mcq(request: LoadRequest) -> list[Sample]:
    """Multiple-choice tables: lmms-lab MMBench ("nan" strings for missing hints/options), Lin-Chen MMStar."""
    return _split_samples(mcq_samples, request)


def load_hf_gqa(request: LoadRequest) -> list[Sample]:
    """lmms-lab GQA: `testdev_balanced_instructions` rows (id, imageId, question, answer, types...) joined to
    `testdev_balanced_images` rows (id, image) on imageId = id, as lmms-eval's gqa/utils.py gqa_process_docs joins
    them (EvolvingLMMs-Lab/lmms-eval@75571cf)."""
    questions, images = request.paths["questions"], request.paths["images"]
    image_rows, question_rows = read_rows(images), read_rows(questions)
    require_columns(image_rows, {"id": "id", "image": "image"}, str(images))
    require_columns(
        question_rows, {"id": "id", "image id": "imageId", "question": "question", "answer": "answer"}, str(questions)
    )
    image_by_id = {row["id"]: row["image"] for row in image_rows}
    where = str(images)
    samples = []
    for row in question_rows:
        image_id = row["imageId"]
        if image_id not in image_by_id:
            raise PdropEvalError(f"GQA question {row['id']!r}: image {image_id!r} is not in {where}")
        image_cell = contain_cell(image_by_id[image_id], images, row["id"])
        samples.append(
            Sample(
                id=row["id"],
                question=row["question"],
                prompt=row["question"] + request.prompt_suffix,
                gold=row["answer"],
                image_source=f"{where}#{image_id}",
                load_image=partial(open_cell_image, image_cell, row["id"], where),
                meta={"image_id": image_id, "types": row.get("types") or {}},
            )
        )
    return samples


def _has_image(cell: Any) -> bool:
    """False for the null image of a text-only row (None, or an encoded cell with neither bytes nor path)."""
    if isinstance(cell, Mapping):
        return bool(cell.get("bytes") or cell.get("path"))
    return cell is not None


def load_hf_scienceqa(request: LoadRequest) -> list[Sample]:
    """lmms-lab/ScienceQA, config `ScienceQA-IMG` (split test: the 2,017 test questions that have an image, which
    is the set LLaVA's IMG-Accuracy covers). Rows hold `question`, `hint`, `choices` (a list) and `answer` (an index
    into it) but no problem id, so ids are row numbers. The message is rebuilt as LLaVA's llava_test_CQM-A.json
    holds it (`prompts.scienceqa_prompt`); rows without an image are skipped, as LLaVA's IMG subset skips them."""
    table = request.paths["rows"]
    where = str(table)
    column = request.options.get("image_column", "image")
    samples = []
    for number, row in enumerate(read_rows(table)):
        if not _has_image(row.get(column)):
            continue
        options = scienceqa_options(row["choices"])
        text = scienceqa_prompt(row["hint"], row["question"], row["choices"])
        samples.append(
            Sample(
                id=number,
                question=text,
                prompt=text + request.prompt_suffix,
                gold=list(options)[int(row["answer"])],
                image_source=f"{where}#{number}",
                load_image=partial(open_cell_image, contain_cell(row[column], table, number), number, where),
                meta={"options": options},
            )
        )
    if not samples:
        raise PdropEvalError(f"{where} holds no ScienceQA question with an image")
    return samples
