"""Kept-token maps: the image the model saw, with the dropped tokens' cells dimmed, before the LLM and after each
stage inside it.

This is the picture that says what a method keeps and what it throws away. Where each token lies on the picture is
the sample's `TokenLayout` (pdrop_eval.families.layout), saved beside its image by the run: one fixed grid for
LLaVA-1.5, a grid per image for Qwen2.5-VL, the base view beside the anyres tiles for LLaVA-NeXT (its newline
tokens cover no cell). In-LLM stages list ordinals among the tokens that entered the LLM; methods that choose
before it (DivPrune, VisionZip) list the tower features they kept, in their method's `kept_index_space`. Runs
written before layouts were saved fall back to the run's fixed `image_grid`.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from pdrop_eval.families.layout import TokenLayout
from pdrop_eval.methods.registry import METHODS
from pdrop_eval.report.load import iter_records
from pdrop_eval.store import atomic_path

DIM_ALPHA = 0.72


def image_file_stem(sample_id: str) -> str:
    """The runner's file name for a sample id: characters other than letters, digits and ._- become "_"."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in sample_id)


def dim_dropped(image: np.ndarray, kept: set[tuple[int, int]], layout: TokenLayout) -> np.ndarray:
    """The image with every cell of the layout's tiles not in `kept` ((tile, cell) pairs) darkened by DIM_ALPHA.

    Cell (r, c) of a tile covers the pixels of its box whose row maps to r and column to c, so a box need not be a
    multiple of its grid; pixels outside every tile stay as they are.
    """
    shade = np.ones(image.shape[:2], dtype=np.float64)
    for index, tile in enumerate(layout.tiles):
        left, top, right, bottom = tile.box
        kept_cells = np.zeros(tile.rows * tile.columns, dtype=bool)
        kept_cells[[cell for place, cell in kept if place == index]] = True
        cell_of_row = np.arange(bottom - top) * tile.rows // (bottom - top)
        cell_of_col = np.arange(right - left) * tile.columns // (right - left)
        kept_pixels = kept_cells.reshape(tile.rows, tile.columns)[cell_of_row][:, cell_of_col]
        shade[top:bottom, left:right] = np.where(kept_pixels, 1.0, 1.0 - DIM_ALPHA)
    return (image * shade[..., None]).astype(np.uint8)


@dataclass(frozen=True)
class ScheduleKept:
    """One schedule's answer for a sample and, when it drops tokens, the kept indices of each stage."""

    name: str
    prediction: str
    score: float
    layers: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]
    features: tuple[int, ...] = ()  # tower features a before-the-LLM method kept
    space: str = "tokens"  # what `features` count (PruningMethod.kept_index_space)

    @property
    def drawn(self) -> bool:
        return bool(self.kept or self.features)


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
    layout: TokenLayout | None = None

    @property
    def dropping(self) -> tuple[ScheduleKept, ...]:
        return tuple(s for s in self.schedules if s.drawn)


def question_text(prompt: str) -> str:
    """The question as asked: the prompt without the image placeholder."""
    return " ".join(prompt.replace("<image>", " ").split())


def read_layout(image: Path, grid: tuple[int, int] | None) -> TokenLayout | None:
    """The layout saved beside a sample image, else the run's fixed grid over the whole image (older runs)."""
    saved = image.with_suffix(".json")
    try:
        if saved.is_file():
            return TokenLayout.from_json(json.loads(saved.read_text(encoding="utf-8")))
        if grid is not None:
            with Image.open(image) as picture:
                return TokenLayout.single_grid(picture.width, picture.height, *grid)
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnidentifiedImageError):
        return None
    return None


def find_sample_views(
    run_dir: Path,
    run: str,
    task: str,
    schedules: Sequence[tuple[str, str, tuple[int, ...], str]],
    limit: int,
    grid: tuple[int, int] | None = None,
) -> list[SampleView]:
    """Up to `limit` samples with a saved image, each with every schedule's answer and kept indices.

    `schedules` are (readable name, predictions file relative to `run_dir`, drop layers, method name); `grid` is
    the run's fixed patch grid, for images saved without a layout.
    """
    images = {p.stem: p for p in sorted((run_dir / "samples" / task).glob("*.png"))}
    if not images:
        return []
    records: list[dict[str, dict[str, Any]]] = []
    for _, predictions, _, _ in schedules:
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
                    features=tuple(int(i) for i in record.get("kept_feature_indices") or []),
                    space=METHODS[method].kept_index_space if method in METHODS else "tokens",
                )
                for (name, _, layers, method), record in answers
            ),
            layout=read_layout(image, grid),
        ))
        if len(views) == limit:
            break
    return views


def _gold_text(gold: Any) -> str:
    if isinstance(gold, (list, tuple)):
        return " | ".join(str(g) for g in dict.fromkeys(gold))
    return str(gold)


def view_mismatch(view: SampleView) -> str | None:
    """Why the sample's kept indices cannot be drawn on its layout, or None."""
    layout = view.layout
    if layout is None:
        return "its image was saved without a token layout and the run has no fixed patch grid"
    if view.num_image_tokens != len(layout.tokens):
        return f"{view.num_image_tokens} image tokens do not match the {len(layout.tokens)} of its token layout"
    for schedule in view.dropping:
        if schedule.features and any(stage for stage in schedule.kept):
            return f"{schedule.name} drops both before and inside the LLM, which maps do not draw yet"
        indices = [i for stage in schedule.kept for i in stage]
        limit = len(layout.tokens)
        if schedule.features:
            indices, limit = list(schedule.features), layout.index_limit(schedule.space)
        if any(i < 0 or i >= limit for i in indices):
            return f"kept indices of {schedule.name} fall outside 0..{limit - 1}"
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


def _panels(schedule: ScheduleKept, layout: TokenLayout) -> list[tuple[str, set[tuple[int, int]]]]:
    """(title, kept cells) per map of one schedule: the features it kept before the LLM, or its stages."""
    if schedule.features:
        what = "dominant kept" if schedule.space == "crops" else "kept"
        cells = layout.cells_of(schedule.features, schedule.space)
        return [(f"before the LLM: {len(schedule.features)} {what}", cells)]
    return [
        (f"after layer {layer}: {len(kept)} kept", layout.cells_of(kept))
        for kept, layer in zip(schedule.kept, schedule.layers)
    ]


def draw_sample_view(view: SampleView, out_path: Path, image: np.ndarray) -> Path:
    """One row per schedule that drops tokens: its name and answer, then the image before the LLM (methods that
    choose there) or after each of its stages."""
    layout = view.layout
    rows = view.dropping
    panels = [_panels(schedule, layout) for schedule in rows]
    stages = max(len(p) for p in panels)
    fig = Figure(figsize=(2.6 * (stages + 1), 2.7 * (len(rows) + 1)))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.35)
    axes = fig.subplots(len(rows) + 1, max(stages, 1) + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].axis("on")
    grids = sorted({(t.rows, t.columns) for t in layout.tiles})
    tiles = f"{len(layout.tiles)} tiles of " if len(layout.tiles) > 1 else ""
    shape = tiles + ", ".join(f"{r}×{c}" for r, c in grids)
    axes[0, 0].set_title(f"input: {view.num_image_tokens} tokens ({shape})", fontsize=9)
    others = [s for s in view.schedules if not s.drawn]
    lines = [f"Q: {_short(view.question, 70)}", f"gold: {_short(view.gold)}"]
    lines += [f"{s.name}: {_short(s.prediction, 40)} {_verdict(s.score)}" for s in others]
    axes[0, 1].text(0, 0.95, "\n".join(lines), va="top", ha="left", fontsize=9, transform=axes[0, 1].transAxes,
                    wrap=True)
    for r, (schedule, maps) in enumerate(zip(rows, panels), start=1):
        mark = _verdict(schedule.score)
        name = textwrap.fill(schedule.name, 26)
        axes[r, 0].text(0, 0.5, f"{name}\nanswer: {_short(schedule.prediction, 18)} {mark}", va="center",
                        ha="left", fontsize=8.5, transform=axes[r, 0].transAxes)
        for stage, (title, cells) in enumerate(maps, start=1):
            ax = axes[r, stage]
            ax.axis("on")
            ax.imshow(dim_dropped(image, cells, layout), interpolation="nearest")
            ax.set_title(title, fontsize=8.5)
    title = f"{view.task} · sample {view.sample_id} · run {view.run}  (dimmed = dropped)"
    fig.suptitle(textwrap.fill(title, 16 * (stages + 1), break_on_hyphens=False), fontsize=11)
    with atomic_path(out_path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    return out_path
