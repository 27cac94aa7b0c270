"""The random floor: drops at the same layers and ratios as a ranking method, chosen uniformly at random.

Draws depend on (the method's seed, the sample's own seed, the stage) only, so a sample keeps the same tokens
whatever batch it lands in.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from pdrop_eval.methods.base import Boundary
from pdrop_eval.methods.staged import StagedDrop, positions_note
from pdrop_eval.pyramid.ranking import random_scores

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


@dataclass(frozen=True)
class RandomDrop(StagedDrop):
    name = "random"
    display_name = "random"
    marker: ClassVar[str] = "X"

    layers: tuple[int, ...] = (8, 16, 24)
    ratios: tuple[float, ...] = (0.5, 0.25, 0.125)
    seed: int = 0

    @property
    def label(self) -> str:
        return f"random_{self.layers_text}_r{self.ratios_text}_s{self.seed}{self.position_suffix}"

    @classmethod
    def baseline(cls, sweep: SweepSettings) -> tuple[RandomDrop, ...]:
        """At each layer list, with each --ratios list of its length, else λ=0.5's ratios."""
        ratio_sets = list(sweep.ratio_lists) or [
            tuple(0.5 ** (s + 1) for s in range(len(layers))) for layers in sweep.layer_lists
        ]
        return tuple(
            cls(layers=layers, ratios=ratios, seed=sweep.seed, positions=sweep.positions)
            for layers, ratios in itertools.product(sweep.layer_lists, ratio_sets)
            if len(ratios) == len(layers)
        )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[RandomDrop, ...]:
        """The floor for PDrop at the same budget: PDrop's layers and keep ratios there, tokens drawn at random."""
        from pdrop_eval.methods.pdrop import PDrop

        return tuple(
            cls(layers=pdrop.layers, ratios=pdrop.ratios, seed=sweep.seed, positions=sweep.positions)
            for pdrop in PDrop.for_budget(budget, geometry, sweep)
        )

    @classmethod
    def describe(cls, row: Mapping) -> str:
        keep = "/".join(f"{r * 100:.3g}%" for r in row["ratios"])
        return f"random drop at {row['layers']}, keep {keep}{positions_note(row, cls.default_positions)}"

    def score(self, boundary: Boundary) -> torch.Tensor:
        return random_scores(
            boundary.image_ordinal,
            boundary.original_image_counts,
            boundary.sample_seeds,
            self.seed,
            boundary.stage,
        )

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Random draws involve no matrix product."""
        return 0
