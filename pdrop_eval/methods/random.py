"""The random floor: drops at the same layers and ratios as a ranking method, chosen uniformly at random.

Draws depend on (the method's seed, the sample's own seed, the stage) only, so a sample keeps the same tokens
whatever batch it lands in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pdrop_eval.methods.base import Boundary
from pdrop_eval.methods.staged import StagedDrop
from pdrop_eval.pyramid.ranking import random_scores

if TYPE_CHECKING:
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


@dataclass(frozen=True)
class RandomDrop(StagedDrop):
    name = "random"
    display_name = "random"

    layers: tuple[int, ...] = (8, 16, 24)
    ratios: tuple[float, ...] = (0.5, 0.25, 0.125)
    seed: int = 0

    @property
    def label(self) -> str:
        return f"random_{self.layers_text}_r{self.ratios_text}_s{self.seed}{self.position_suffix}"

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
