"""The value every loader produces and the runner consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One evaluation question.

    `image` is loaded lazily (`load_image`) so a task of 12k samples can be listed, sharded and resumed without
    decoding every picture; `gold` holds whatever the task's metric needs (a string, a list of answers, a letter,
    a label) and `meta` the fields its aggregation groups by (category, split, circular index...).
    """

    id: str | int
    question: str
    prompt: str
    gold: Any
    image_source: str
    load_image: Callable[[], Image.Image] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)
