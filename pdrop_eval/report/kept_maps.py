"""Kept-token maps: the image the model saw, once per PDrop stage, with the dropped patches dimmed.

This is the picture that says what PyramidDrop keeps (the patches the last instruction token attends to) and what
it throws away at each stage. Kept indices are positions among the sample's image tokens, which for LLaVA-1.5 run
row-major over the fixed patch grid of the padded square image; models without a fixed grid get no map.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from pdrop_eval.report.load import iter_records
from pdrop_eval.store import atomic_path

DIM_ALPHA = 0.72


def image_file_stem(sample_id: str) -> str:
    """The runner's file name for a sample id: characters other than letters, digits and ._- become "_"."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in sample_id)


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


@dataclass(frozen=True)
class ScheduleKept:
    """One schedule's answer for a sample and, when it drops tokens, the kept indices of each stage."""

    name: str
    prediction: str
    score: float
    layers: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class SampleView:
    """A sample as a reader needs it to judge the maps: the question, the gold answer, every schedule's answer."""

    task: str
    run: str
    sample_id: str
    image: Path
    question: str
    gold: str
    num_image_tokens: int
    schedules: tuple[ScheduleKept, ...]

    @property
    def dropping(self) -> tuple[ScheduleKept, ...]:
        return tuple(s for s in self.schedules if s.kept)


def question_text(prompt: str) -> str:
    """The question as asked: the prompt without the image placeholder."""
    return " ".join(prompt.replace("<image>", " ").split())


def find_sample_views(
    run_dir: Path, run: str, task: str, schedules: Sequence[tuple[str, str, tuple[int, ...]]], limit: int
) -> list[SampleView]:
    """Up to `limit` samples with a saved image, each with every schedule's answer and kept indices.

    `schedules` are (readable name, predictions file relative to `run_dir`, drop layers).
    """
    images = {p.stem: p for p in sorted((run_dir / "samples" / task).glob("*.png"))}
    if not images:
        return []
    records: list[dict[str, dict[str, Any]]] = []
    for _, predictions, _ in schedules:
        path = run_dir / predictions
        found: dict[str, dict[str, Any]] = {}
        if predictions and path.is_file():
            for record in iter_records(path):
                stem = image_file_stem(str(record.get("id")))
                if stem in images:
                    found[stem] = record
                if len(found) == len(images):
                    break
        records.append(found)
    views = []
    for stem, image in images.items():
        answers = [(meta, found[stem]) for meta, found in zip(schedules, records) if stem in found]
        if not answers:
            continue
        first = answers[0][1]
        views.append(SampleView(
            task=task,
            run=run,
            sample_id=str(first.get("id")),
            image=image,
            question=question_text(str(first.get("prompt", ""))),
            gold=_gold_text(first.get("gold")),
            num_image_tokens=int(first.get("num_image_tokens") or 0),
            schedules=tuple(
                ScheduleKept(
                    name=name,
                    prediction=str(record.get("prediction", "")).strip(),
                    score=float(record.get("score") or 0.0),
                    layers=layers,
                    kept=tuple(tuple(int(i) for i in stage) for stage in record.get("kept_image_indices") or []),
                )
                for (name, _, layers), record in answers
            ),
        ))
        if len(views) == limit:
            break
    return views


def _gold_text(gold: Any) -> str:
    if isinstance(gold, (list, tuple)):
        return " | ".join(str(g) for g in dict.fromkeys(gold))
    return str(gold)


def view_mismatch(view: SampleView, grid: tuple[int, int]) -> str | None:
    cells = grid[0] * grid[1]
    if view.num_image_tokens != cells:
        return f"{view.num_image_tokens} image tokens do not fill the {grid[0]}×{grid[1]} patch grid"
    if any(i < 0 or i >= cells for s in view.dropping for stage in s.kept for i in stage):
        return f"kept indices fall outside 0..{cells - 1}"
    return None


def _verdict(score: float) -> str:
    """Right, wrong, or the partial credit (VQA accuracy, ANLS) the scorer gave this answer."""
    return "✓" if score >= 1.0 else "✗" if score <= 0.0 else f"({score:.2f})"


def _short(text: str, width: int = 60) -> str:
    """One printable line: a random model's answers hold control characters no font can draw."""
    text = "".join(c if c.isprintable() else "·" for c in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_view_image(view: SampleView) -> np.ndarray | None:
    """The saved sample image as RGB pixels, or None when the PNG cannot be read (the report then says so)."""
    try:
        with Image.open(view.image) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None


def draw_sample_view(view: SampleView, grid: tuple[int, int], out_path: Path, image: np.ndarray) -> Path:
    """One row per schedule that drops tokens: its name and answer, then the image after each of its stages."""
    rows = view.dropping
    stages = max(len(s.kept) for s in rows)
    fig = Figure(figsize=(2.6 * (stages + 1), 2.7 * (len(rows) + 1)))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.35)
    axes = fig.subplots(len(rows) + 1, stages + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].axis("on")
    axes[0, 0].set_title(f"input: {view.num_image_tokens} tokens ({grid[0]}×{grid[1]})", fontsize=9)
    others = [s for s in view.schedules if not s.kept]
    lines = [f"Q: {_short(view.question, 70)}", f"gold: {_short(view.gold)}"]
    lines += [f"{s.name}: {_short(s.prediction, 40)} {_verdict(s.score)}" for s in others]
    axes[0, 1].text(0, 0.95, "\n".join(lines), va="top", ha="left", fontsize=9, transform=axes[0, 1].transAxes,
                    wrap=True)
    for r, schedule in enumerate(rows, start=1):
        mark = _verdict(schedule.score)
        name = textwrap.fill(schedule.name, 26)
        axes[r, 0].text(0, 0.5, f"{name}\nanswer: {_short(schedule.prediction, 18)} {mark}", va="center",
                        ha="left", fontsize=8.5, transform=axes[r, 0].transAxes)
        for stage, (kept, layer) in enumerate(zip(schedule.kept, schedule.layers), start=1):
            ax = axes[r, stage]
            ax.axis("on")
            ax.imshow(dim_dropped(image, kept, grid), interpolation="nearest")
            ax.set_title(f"after layer {layer}: {len(kept)} kept", fontsize=8.5)
    title = f"{view.task} · sample {view.sample_id} · run {view.run}  (dimmed = dropped)"
    fig.suptitle(textwrap.fill(title, 16 * (stages + 1), break_on_hyphens=False), fontsize=11)
    with atomic_path(out_path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    return out_path
