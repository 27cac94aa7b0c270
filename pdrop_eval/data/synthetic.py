"""`shapes`: a synthetic task drawn on the fly, for the demo and end-to-end tests (no download, known answers).

Each sample is a small picture of coloured circles, squares and triangles on a plain background, with one of three
question kinds whose single-word answer follows from the drawing: "What color is the circle?" (that shape appears
once), "How many squares are there?" (a digit) and "Is there a red triangle?" (yes/no). Sample i depends only on
(seed, i), so `--limit` and sharding see the same samples whatever the count.

`write_gqa_folder` saves such scenes as JPEGs in LLaVA's GQA evaluation layout, so the real `gqa` task reads,
decodes and preprocesses real-size images from disk (the throughput benchmark, tests of the data pipeline).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image, ImageDraw

from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.sample import Sample

COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (245, 245, 245)
GRID = 3
GQA_SIZE = (500, 375)  # GQA's typical image (Visual Genome photos are about 500 px wide)
GQA_SUFFIX = "\nAnswer the question using a single word or phrase."  # in LLaVA's llava_gqa_testdev_balanced.jsonl


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    cell: int


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    question: str
    answer: str
    kind: str


def _plural(shape: str) -> str:
    return shape + "s"


def make_scene(seed: int, index: int) -> Scene:
    """The shapes and question of sample `index`; a pure function of (seed, index)."""
    rng = random.Random(seed * 1_000_003 + index)
    cells = rng.sample(range(GRID * GRID), GRID * GRID)
    kind = ("color", "count", "exists")[index % 3]
    target = rng.choice(SHAPES)
    others = [shape for shape in SHAPES if shape != target]
    colors = list(COLORS)

    def fillers(count: int) -> list[tuple[str, str]]:
        return [(rng.choice(others), rng.choice(colors)) for _ in range(count)]

    if kind == "color":
        color = rng.choice(colors)
        items = [(target, color)] + fillers(rng.randint(1, 3))
        question, answer = f"What color is the {target}?", color
    elif kind == "count":
        count = rng.randint(1, 3)
        items = [(target, rng.choice(colors)) for _ in range(count)] + fillers(rng.randint(0, 2))
        question, answer = f"How many {_plural(target)} are there?", str(count)
    else:
        color = rng.choice(colors)
        present = rng.random() < 0.5
        decoys = [(target, other) for other in colors if other != color]
        items = [(target, color)] if present else [rng.choice(decoys)]
        items += fillers(rng.randint(1, 3))
        question, answer = f"Is there a {color} {target}?", "yes" if present else "no"
    shapes = tuple(Shape(shape, color, cell) for (shape, color), cell in zip(items, cells))
    return Scene(shapes=shapes, question=question, answer=answer, kind=kind)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    step = size / GRID
    margin = step * 0.15
    for shape in scene.shapes:
        row, col = divmod(shape.cell, GRID)
        x0, y0 = col * step + margin, row * step + margin
        x1, y1 = (col + 1) * step - margin, (row + 1) * step - margin
        fill = COLORS[shape.color]
        if shape.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)
    return image


def load_shapes(request: LoadRequest) -> list[Sample]:
    """Options: `count` (samples), `seed`, `image_size` (pixels, square)."""
    count = int(request.options.get("count", 300))
    seed = int(request.options.get("seed", 0))
    size = int(request.options.get("image_size", 64))
    samples = []
    for index in range(count):
        scene = make_scene(seed, index)
        samples.append(
            Sample(
                id=index,
                question=scene.question,
                prompt=scene.question + request.prompt_suffix,
                gold=scene.answer,
                image_source=f"shapes(seed={seed}, index={index}, size={size})",
                load_image=partial(draw_scene, scene, size),
                meta={"kind": scene.kind},
            )
        )
    return samples


def write_gqa_folder(root: Path, count: int, sizes: Sequence[tuple[int, int]] = (GQA_SIZE,), seed: int = 0) -> None:
    """`count` scenes as a LLaVA GQA folder under `root` (gqa/llava_gqa_testdev_balanced.jsonl, the gold answers
    in gqa/data/testdev_balanced_questions.json, gqa/data/images/<id>.jpg), image i `sizes[i % len(sizes)]`
    (width, height) pixels. Noise over the drawing gives the JPEGs a photo's entropy, so they cost what a photo
    costs to decode."""
    folder = Path(root) / "gqa"
    images = folder / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, annotations = [], {}
    for index in range(count):
        scene = make_scene(seed, index)
        width, height = sizes[index % len(sizes)]
        drawing = draw_scene(scene, max(width, height)).resize((width, height))
        noise = Image.effect_noise((width, height), 64).convert("RGB")
        Image.blend(drawing, noise, 0.25).save(images / f"s{index}.jpg", format="JPEG", quality=90)
        question_id = str(index)
        rows.append({"question_id": question_id, "image": f"s{index}.jpg", "text": scene.question + GQA_SUFFIX})
        annotations[question_id] = {"imageId": f"s{index}", "question": scene.question, "answer": scene.answer}
    (folder / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "data" / "testdev_balanced_questions.json").write_text(json.dumps(annotations))
