"""The unpruned model: every layer sees every token. The reference every method is compared with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pdrop_eval.methods.base import PruningMethod


@dataclass(frozen=True)
class Vanilla(PruningMethod):
    name = "vanilla"
    display_name = "vanilla"
    takes_budget: ClassVar[bool] = False
    marker: ClassVar[str] = "*"

    @property
    def label(self) -> str:
        return "vanilla"

    @property
    def drops(self) -> bool:
        return False

    @classmethod
    def describe(cls, row: Mapping) -> str:
        return "vanilla (all image tokens)"
