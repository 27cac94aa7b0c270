"""Kept-token maps: the image the model saw, once per PDrop stage, with the dropped patches dimmed.

This is the picture that says what PyramidDrop keeps (the patches the last instruction token attends to) and what
it throws away at each stage. Kept indices are positions among the sample's image tokens, which for LLaVA-1.5 run
row-major over the fixed patch grid of the padded square image; models without a fixed grid get no map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.store import atomic_path

DIM_ALPHA = 0.72


@dataclass(frozen=True)
class KeptSample:
    """One sample's image and the kept image-token indices of each stage of one schedule."""

    task: str
    run: str
    sample_id: str
    image: Path
    schedule: str
    layers: tuple[int, ...]
    num_image_tokens: int
    kept: tuple[tuple[int, ...], ...]


def find_kept_samples(
    run_dir: Path, run: str, task: str, schedule: str, layers: tuple[int, ...], predictions: str, limit: int
) -> list[KeptSample]:
    """Samples that have both a samples/<task>/<id>.png and kept indices in this schedule's predictions."""
    images = {p.stem: p for p in sorted((run_dir / "samples" / task).glob("*.png"))}
    path = run_dir / predictions
    if not images or not predictions or not path.is_file():
        return []
    found = []
    for record in _read_jsonl(path):
        sample_id = str(record.get("id"))
        kept = record.get("kept_image_indices")
        if image_file_stem(sample_id) not in images or not kept:
            continue
        found.append(KeptSample(
            task=task,
            run=run,
            sample_id=sample_id,
            image=images[image_file_stem(sample_id)],
            schedule=schedule,
            layers=layers,
            num_image_tokens=int(record.get("num_image_tokens") or 0),
            kept=tuple(tuple(int(i) for i in stage) for stage in kept),
        ))
        if len(found) == limit:
            break
    return found


def image_file_stem(sample_id: str) -> str:
    """The runner's file name for a sample id: characters other than letters, digits and ._- become "_"."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in sample_id)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Lazily, so finding the first few samples does not parse a whole task's predictions."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise PdropEvalError(
                    f"{path} line {number} is not valid JSON text ({err}); the file may be truncated or damaged"
                ) from err
            if not isinstance(record, dict):
                raise PdropEvalError(f"{path} line {number} is not a prediction record (a JSON object)")
            yield record


def grid_mismatch(sample: KeptSample, grid: tuple[int, int]) -> str | None:
    """Why this sample's indices cannot be placed on the grid, or None when they can."""
    cells = grid[0] * grid[1]
    if sample.num_image_tokens != cells:
        return f"{sample.num_image_tokens} image tokens do not fill the {grid[0]}×{grid[1]} patch grid"
    if any(i < 0 or i >= cells for stage in sample.kept for i in stage):
        return f"kept indices fall outside 0..{cells - 1}"
    return None


def dim_dropped(image: np.ndarray, kept: Sequence[int], grid: tuple[int, int]) -> np.ndarray:
    """The image with every patch not in `kept` (row-major indices on `grid`) darkened by DIM_ALPHA.

    Patch (r, c) covers the pixels whose row maps to r and column to c, so sizes need not be a multiple of the grid.
    """
    height, width = image.shape[:2]
    rows, cols = grid
    kept_patches = np.zeros(rows * cols, dtype=bool)
    kept_patches[list(kept)] = True
    patch_of_row, patch_of_col = np.arange(height) * rows // height, np.arange(width) * cols // width
    kept_pixels = kept_patches.reshape(rows, cols)[patch_of_row][:, patch_of_col]
    shade = np.where(kept_pixels[..., None], 1.0, 1.0 - DIM_ALPHA)
    return (image * shade).astype(np.uint8)


def read_sample_image(sample: KeptSample) -> np.ndarray | None:
    """The saved sample image as RGB pixels, or None when the PNG cannot be read (the report then says so)."""
    try:
        with Image.open(sample.image) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None


def draw_kept_map(sample: KeptSample, grid: tuple[int, int], out_path: Path, image: np.ndarray) -> Path:
    """One panel for the input and one per stage; kept patches at full brightness, dropped ones dimmed."""
    rows, cols = grid
    panels = len(sample.kept) + 1
    fig = Figure(figsize=(3.1 * panels, 3.9))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.80, wspace=0.06)
    axes = fig.subplots(1, panels, squeeze=False)
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title(f"input: {sample.num_image_tokens} image tokens\n({rows}×{cols} patches)", fontsize=10)
    for stage, (kept, layer) in enumerate(zip(sample.kept, sample.layers), start=1):
        ax = axes[0, stage]
        ax.imshow(dim_dropped(image, kept, grid), interpolation="nearest")
        share = len(kept) / sample.num_image_tokens * 100
        ax.set_title(f"after layer {layer}: {len(kept)} kept\n({share:.1f}% of {sample.num_image_tokens})", fontsize=10)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{sample.task} · sample {sample.sample_id} · {sample.schedule}  (dimmed = dropped)", fontsize=11)
    with atomic_path(out_path) as temporary:
        fig.savefig(temporary, dpi=110)
    return out_path
