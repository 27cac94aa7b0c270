"""The unpruned model: every layer sees every token. The reference every method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from pdrop_eval.methods.base import PruningMethod


@dataclass(frozen=True)
class Vanilla(PruningMethod):
    name = "vanilla"
    display_name = "vanilla"

    @property
    def label(self) -> str:
        return "vanilla"

    @property
    def drops(self) -> bool:
        return False
