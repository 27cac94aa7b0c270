"""The one value a loader receives, so loaders stay independent of the task registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoadRequest:
    """Resolved inputs of one data source.

    `paths` maps each file role of the card (`questions`, `images`, `tsv`...) to what was found for it: a `Path`
    for LLaVA folders and TSVs, an `HFTable` for Hugging Face layouts. `options` are the card's other source
    keys (field names, split, subset...). `prompt_suffix` is the task's instruction appended to each question.
    `absent_columns` is filled by the loader with the metadata-only columns the card names but the files lack, so
    the registry can say so once per task instead of once per file or split.
    """

    paths: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    prompt_suffix: str = ""
    absent_columns: set[str] = field(default_factory=set)
