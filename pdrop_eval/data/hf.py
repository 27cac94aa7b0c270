"""Hugging Face datasets kept locally, in the lmms-lab (and Lin-Chen/MMStar) schemas.

Two on-disk shapes are read for each table a card names:
- the hub layout: parquet shards matched by the card's glob (`data/validation-*.parquet`, config folders such as
  `testdev_balanced_instructions/testdev-*.parquet`, or a root-level `mmstar.parquet`), found under
  `<data-root>/hf/<owner>/<name>/` or a hub-cache snapshot; read with pyarrow, images kept encoded;
- a `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder, read with `datasets.load_from_disk`.

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
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.rows import mcq_samples, vqa_samples
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError, SampleError


@dataclass(frozen=True)
class HFTable:
    """Where one table of a Hugging Face dataset was found: parquet shards, or a save_to_disk folder + split."""

    parquet_files: tuple[Path, ...] = ()
    disk_dir: Path | None = None
    split: str | None = None

    @property
    def folder(self) -> Path:
        """Where path-only image cells are looked up: the save_to_disk folder, or the first shard's folder."""
        return self.disk_dir if self.disk_dir is not None else self.parquet_files[0].parent

    def __str__(self) -> str:
        if self.disk_dir is not None:
            return f"{self.disk_dir} (save_to_disk, split {self.split})"
        return ", ".join(str(path) for path in self.parquet_files)


def read_rows(table: HFTable) -> list[dict[str, Any]]:
    """Every row of the table as a dict; image columns stay encoded ({"bytes", "path"}) until a sample needs them."""
    if table.disk_dir is not None:
        return _read_disk(table)
    pq = _optional_import("pyarrow.parquet", "pyarrow")
    rows: list[dict[str, Any]] = []
    for path in table.parquet_files:
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


def _read_disk(table: HFTable) -> list[dict[str, Any]]:
    datasets = _optional_import("datasets", "datasets")

    try:
        loaded = datasets.load_from_disk(str(table.disk_dir))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise PdropEvalError(f"cannot load the saved dataset {table.disk_dir}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        if table.split not in loaded:
            raise PdropEvalError(f"{table.disk_dir} has splits {sorted(loaded)}, not {table.split!r}")
        loaded = loaded[table.split]
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


def _contained(cell: Any, table: HFTable, sample_id: Any) -> Any:
    """The cell with a path-only image joined to the table's folder (refused when it leaves it); others as they are."""
    where = f"{table}, sample {sample_id!r}"
    if isinstance(cell, Mapping) and not cell.get("bytes") and cell.get("path"):
        return {**cell, "path": str(image_path(table.folder, cell["path"], where))}
    if isinstance(cell, str) and cell:
        return str(image_path(table.folder, cell, where))
    return cell


def _cell_opener(column: str, table: HFTable):
    def opener(row: Mapping[str, Any], sample_id: Any):
        if column not in row:
            raise PdropEvalError(f"{table} has no image column {column!r}")
        return partial(open_cell_image, _contained(row[column], table, sample_id), sample_id, str(table))

    return opener


def load_hf_vqa(request: LoadRequest) -> list[Sample]:
    """Open-ended lmms-lab tables (textvqa, DocVQA/InfographicVQA, ChartQA, POPE); columns from the card."""
    table = request.paths["rows"]
    opener = _cell_opener(request.options.get("image_column", "image"), table)
    return vqa_samples(read_rows(table), request.options, request.prompt_suffix, opener, str(table))


def load_hf_mcq(request: LoadRequest) -> list[Sample]:
    """Multiple-choice tables: lmms-lab MMBench ("nan" strings for missing hints/options), Lin-Chen MMStar."""
    table = request.paths["rows"]
    opener = _cell_opener(request.options.get("image_column", "image"), table)
    return mcq_samples(read_rows(table), request.options, request.prompt_suffix, opener, str(table))


def load_hf_gqa(request: LoadRequest) -> list[Sample]:
    """lmms-lab GQA: `testdev_balanced_instructions` rows joined to `testdev_balanced_images` on imageId = id."""
    questions, images = request.paths["questions"], request.paths["images"]
    image_by_id = {row["id"]: row["image"] for row in read_rows(images)}
    where = str(images)
    samples = []
    for row in read_rows(questions):
        image_id = row["imageId"]
        if image_id not in image_by_id:
            raise PdropEvalError(f"GQA question {row['id']!r}: image {image_id!r} is not in {where}")
        image_cell = _contained(image_by_id[image_id], images, row["id"])
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
