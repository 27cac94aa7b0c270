"""FastV (Chen et al., ECCV'24; official code pkunlp-icler/FastV, its eager-attention inference path).

After K layers ran, drop R of the image tokens ranked by the head-averaged attention that the last prompt token paid
them in layer K-1 (the layer that just ran); keep `round(N · (1 - R))`; survivors keep their original positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, format_number
from pdrop_eval.methods.staged import StagedDrop
from pdrop_eval.pyramid.ranking import last_query_attention


@dataclass(frozen=True)
class FastV(StagedDrop):
    name = "fastv"
    display_name = "FastV"
    default_positions = "original"

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

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """FastV rounds where PDrop floors."""
        return min(num_image_tokens, round(num_image_tokens * self.ratios[stage]))

    def score(self, boundary: Boundary) -> torch.Tensor:
        ranking_layer = boundary.layers[boundary.layer - 1]
        return last_query_attention(
            ranking_layer, boundary.last_input, boundary.position_embeddings, boundary.valid, boundary.rotary
        )
