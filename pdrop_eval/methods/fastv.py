"""FastV (Chen et al., ECCV'24; official code pkunlp-icler/FastV, its eager-attention inference path).

After K layers ran, drop R of the image tokens ranked by the head-averaged attention that the last prompt token paid
them in layer K-1 (the layer that just ran); keep `round(N · (1 - R))`; survivors keep their original positions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, format_number
from pdrop_eval.methods.staged import StagedDrop, positions_note
from pdrop_eval.pyramid.ranking import last_query_attention

if TYPE_CHECKING:
    import pandas as pd

    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings

PAPER_NAME = re.compile(r"fastv\D*k\s*(\d+)\D*r\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
BUDGET_LAYER = 2  # K of FastV's paper (and of PDrop's comparison with it)


@dataclass(frozen=True)
class FastV(StagedDrop):
    name = "fastv"
    display_name = "FastV"
    default_positions = "original"
    marker: ClassVar[str] = "D"

    positions: PositionMode = "original"
    layers: tuple[int, ...] = (2,)
    ratios: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.layers) != 1:
            raise PdropEvalError(f"FastV drops once, after K layers: give one layer, got {list(self.layers)}")

    @classmethod
    def from_k_r(cls, k: int = 2, r: float = 0.5, positions: PositionMode = "original") -> FastV:
        if not (0.0 <= r < 1.0):
            raise PdropEvalError(f"FastV drop ratio R={r} is outside [0, 1): R is the fraction of image tokens dropped")
        return cls(layers=(k,), ratios=(1.0 - r,), positions=positions)

    @property
    def label(self) -> str:
        return f"fastv_k{self.layers[0]}_r{format_number(1.0 - self.ratios[0])}{self.position_suffix}"

    @classmethod
    def baseline(cls, sweep: SweepSettings) -> tuple[FastV, ...]:
        """K=2, R=50%: the setting PDrop's paper compares with."""
        return (cls.from_k_r(BUDGET_LAYER, 0.5),)

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[FastV, ...]:
        """K = 2 and the R whose average image tokens per layer is closest to the budget.

        FastV's paper sets K and R, not a budget; with K layers at all N tokens and the other L−K at `keep`, the
        average is (K·N + (L−K)·keep)/L, so keep = round((budget·L − K·N)/(L−K)) and R = 1 − keep/N (576 tokens,
        32 layers: 192 → keep 166, 128 → 98, 64 → 30). A budget that would leave no token is refused.
        """
        layers, count, k = geometry.num_layers, geometry.image_tokens, BUDGET_LAYER
        keep = round((budget * layers - k * count) / (layers - k))
        if keep < 1:
            floor = (k * count + (layers - k)) / layers
            raise PdropEvalError(
                f"--budget {budget:g} is below FastV's floor: its first {k} of {layers} layers see all {count} image "
                f"tokens, so keeping one token after them averages {floor:.1f}; use a budget of at least {floor:.1f}"
            )
        return (cls.from_k_r(k, 1.0 - min(keep, count) / count),)

    @classmethod
    def describe(cls, row: Mapping) -> str:
        ratios = tuple(row["ratios"])
        name = f"FastV after layer {row['layers']}, drop {(1 - ratios[0]) * 100:.3g}%" if ratios else "FastV"
        return name + positions_note(row, cls.default_positions)

    @classmethod
    def paper_rows(cls, paper_name: str, rows: pd.DataFrame, num_layers: int | None) -> pd.DataFrame | None:
        """A paper name such as "FastV K2 R50": our FastV rows after K layers dropping R%."""
        found = PAPER_NAME.search(paper_name)
        if found is None:
            return None
        keep = 1.0 - float(found.group(2)) / 100.0
        return rows[
            (rows["method"] == cls.name)
            & (rows["layers"] == found.group(1))
            & rows["ratios"].map(lambda r: len(r) == 1 and math.isclose(r[0], keep, abs_tol=1e-6))
        ]

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """FastV rounds where PDrop floors."""
        return min(num_image_tokens, round(num_image_tokens * self.ratios[stage]))

    def score(self, boundary: Boundary) -> torch.Tensor:
        ranking_layer = boundary.layers[boundary.layer - 1]
        return last_query_attention(
            ranking_layer, boundary.last_input, boundary.position_embeddings, boundary.valid, boundary.rotary
        )
