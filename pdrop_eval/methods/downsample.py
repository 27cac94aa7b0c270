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

LLaVA-NeXT: each crop (the base view and every anyres tile) has its own S×S grid, which the packed features no
longer hold (the tiles are stitched, unpadded and given newline tokens), so on NeXT the method runs the tower itself
(`runs_tower`), pools each crop's projected grid to G×G as above, and packs the pooled crops exactly as NeXT packs
its S×S crops (pdrop_eval.methods.anyres_tiles.pack_crops: base grid, stitched tiles unpadded to the image's aspect
at G, a newline token per row). G = S gives the unpruned model. A budget counts crops as the papers do (LLaVA-NeXT
640/320/160 of 2880 = 5 crops × 576): G is the grid nearest K / 5 per crop (128 → 11, 64 → 8, 32 → 6); unpadding
then removes the padded rows or columns as it does for the unpruned model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.nn import functional

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.anyres_tiles import is_anyres, pack_crops, project_crops, split_crops
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
            "use it with models whose image tokens form one square grid (LLaVA-1.5: 576 = 24 × 24) or LLaVA-NeXT"
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
        if geometry.anyres and geometry.tiling != "llava_next":
            raise PdropEvalError(
                "downsample pools each crop's grid and packs the crops as LLaVA-NeXT does, but this model tiles its "
                "images another way (LLaVA-OneVision's anyres_max_9): leave downsample out of --methods and "
                "--baselines for it"
            )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[Downsample, ...]:
        """The grid G whose G² is closest to the budget per crop (LLaVA-1.5: 192 → 14, 128 → 11, 64 → 8; NeXT's
        5 crops: 640 → 11, 320 → 8, 160 → 6)."""
        grid = grid_for_budget(budget / geometry.crops)
        side = square_side(geometry.image_tokens // geometry.crops)
        if grid > side:
            raise PdropEvalError(
                f"--budget {budget:g} maps downsample to a {grid}×{grid} grid, larger than the model's {side}×{side}"
                f": use a budget of at most {side * side * geometry.crops}"
            )
        return (cls(grid=grid),)

    @property
    def label(self) -> str:
        return f"downsample_g{self.grid}"

    def kept_features(self, num_features: int, crops: int = 1) -> int:
        side = square_side(num_features // crops)
        if self.grid > side:
            raise PdropEvalError(
                f"downsample grid {self.grid} is larger than the image's {side}×{side} feature grid: "
                f"choose a grid of at most {side}"
            )
        return crops * self.grid * self.grid

    def pool(self, grids: torch.Tensor) -> torch.Tensor:
        """[n, S·S, d] row-major grids → [n, G·G, d]."""
        count, length, width = grids.shape
        self.kept_features(length)
        side = square_side(length)
        grid = grids.transpose(1, 2).reshape(count, width, side, side)
        small = functional.adaptive_avg_pool2d(grid, self.grid)  # [n, d, G, G]
        return small.reshape(count, width, -1).transpose(1, 2)

    def reduce_features(self, features: list[torch.Tensor]) -> ReducedFeatures:
        return ReducedFeatures(features=[self.pool(image[None])[0].contiguous() for image in features])

    def runs_tower(self, model: nn.Module) -> bool:
        return is_anyres(model)

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ReducedFeatures:
        """LLaVA-NeXT: every crop projected, pooled, and packed as the model packs its crops."""
        images = split_crops(model, pixel_values, image_sizes)
        projected = project_crops(model, torch.cat([image.crops for image in images]))
        pooled = self.pool(projected).split([image.crops.shape[0] for image in images])
        return ReducedFeatures(features=[pack_crops(model, crops, image) for crops, image in zip(pooled, images)])

    def record(self) -> dict:
        return {**super().record(), "grid": self.grid}
