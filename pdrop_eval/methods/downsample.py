"""Downsampling: average-pool each image's feature grid to a smaller grid before the LLM; the floor every
method must beat (VTC-Bench, Chenfei-Liao/VTC-Bench, found plain downsampling ahead of many published methods).

VTC-Bench downsamples the IMAGE of models with native dynamic resolution (Qwen2-VL), which LLaVA-1.5's fixed
336 px input cannot do. The analogue here pools the projected features, as LLaVA-OneVision / LLaVA-Video pool
theirs after the projector (LLaVA-VL/LLaVA-NeXT, llava/model/llava_arch.py: `get_2dPool`, average mode), but with
`torch.nn.functional.adaptive_avg_pool2d` so any budget maps to a grid: the S×S grid (row-major image tokens,
S = √N, 24 for LLaVA-1.5) becomes G×G, output cell (i, j) being the mean of rows floor(i·S/G) .. ceil((i+1)·S/G)−1
and the same columns (cells overlap where G does not divide S). The pooled tokens are written row-major, and the
prompt then holds G² image tokens with positions as if it had been built with G² placeholders.

A budget of K tokens maps to the G whose G² is closest to K (192 → 14, 128 → 11, 64 → 8): `grid_for_budget`.
Pooling is elementwise work, which the exact FLOPs convention does not count (as torch's FlopCounterMode does not).
Only square grids are supported: LLaVA-NeXT's anyres features (tiles, unpadding, newline tokens) are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.nn import functional

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod, ReducedFeatures

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings


def grid_for_budget(budget: float) -> int:
    """The side G whose G × G tokens are closest to `budget` (the smaller side on an exact tie)."""
    low = max(1, math.isqrt(int(budget)))
    return min((low, low + 1), key=lambda side: (abs(side * side - budget), side))


def square_side(num_features: int) -> int:
    side = math.isqrt(num_features)
    if side * side != num_features:
        raise PdropEvalError(
            f"downsample pools a square feature grid, but an image gave {num_features} features (not a square): "
            "use it with LLaVA-1.5-style models (576 = 24 × 24), not LLaVA-NeXT's anyres tiles"
        )
    return side


@dataclass(frozen=True)
class Downsample(PruningMethod):
    """`grid` is the side G of the pooled grid: G² image tokens enter the LLM."""

    name = "downsample"
    display_name = "downsample"
    marker: ClassVar[str] = "v"

    grid: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise PdropEvalError(
                f"downsample grid {self.grid!r} is not a positive whole number: it is the side of the pooled grid, "
                "e.g. 14 for 196 tokens"
            )

    @classmethod
    def check_model(cls, geometry: ModelGeometry) -> None:
        if geometry.anyres:
            raise PdropEvalError(
                "downsample pools one square feature grid per image, but this model tiles its images (LLaVA-NeXT, "
                "LLaVA-OneVision anyres): leave downsample out of --methods and --baselines for it"
            )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[Downsample, ...]:
        """The grid G whose G² is closest to the budget (192 → 14, 128 → 11, 64 → 8)."""
        grid = grid_for_budget(budget)
        side = square_side(geometry.image_tokens)
        if grid > side:
            raise PdropEvalError(
                f"--budget {budget:g} maps downsample to a {grid}×{grid} grid, larger than the model's {side}×{side}"
                f": use a budget of at most {side * side}"
            )
        return (cls(grid=grid),)

    @property
    def label(self) -> str:
        return f"downsample_g{self.grid}"

    def kept_features(self, num_features: int) -> int:
        side = square_side(num_features)
        if self.grid > side:
            raise PdropEvalError(
                f"downsample grid {self.grid} is larger than the image's {side}×{side} feature grid: "
                f"choose a grid of at most {side}"
            )
        return self.grid * self.grid

    def reduce_features(self, features: list[torch.Tensor]) -> ReducedFeatures:
        pooled = []
        for image in features:
            self.kept_features(image.shape[0])
            side = square_side(image.shape[0])
            grid = image.T.reshape(1, image.shape[1], side, side)  # [1, d, S, S], row-major patches
            small = functional.adaptive_avg_pool2d(grid, self.grid)  # [1, d, G, G]
            pooled.append(small.reshape(image.shape[1], -1).T.contiguous())
        return ReducedFeatures(features=pooled)

    def record(self) -> dict:
        return {**super().record(), "grid": self.grid}
