"""PyramidDrop (Xing et al., CVPR'25; official code Cooperx521/PyramidDrop, `pdrop_rank_drop`), inference only.

After each stage (`layers = (8, 16, 24)`: after 8, 16, 24 decoder layers) keep `int(N · λ^(s+1))` image tokens of
the N that entered the LLM, ranked by the head-averaged softmax attention that the last prompt token pays them in the
NEXT layer (its input norm and q/k projections, RoPE at the current positions). Survivors are re-indexed 0..len-1
(`compact`), as the official code does; `original` keeps FastV-style positions. REFERENCE §1 has every detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, format_number
from pdrop_eval.methods.staged import StagedDrop
from pdrop_eval.pyramid.ranking import last_query_attention


@dataclass(frozen=True)
class PDrop(StagedDrop):
    """`lam` is set when the ratios are λ's powers (the label then names λ); hand-picked ratios leave it None."""

    name = "pdrop"
    display_name = "PDrop"

    lam: float | None = None

    @classmethod
    def from_lambda(
        cls, lam: float, layers: tuple[int, ...] = (8, 16, 24), positions: PositionMode = "compact"
    ) -> PDrop:
        """Keep λ^(s+1) of the image tokens after stage s (λ=0.5: 0.5, 0.25, 0.125)."""
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (0.0 < lam <= 1.0):
            raise PdropEvalError(f"lambda {lam!r} is outside (0, 1]: e.g. --lambda 0.5 keeps half at each stage")
        ratios = tuple(float(lam) ** (s + 1) for s in range(len(layers)))
        return cls(layers=tuple(layers), ratios=ratios, positions=positions, lam=float(lam))

    @property
    def label(self) -> str:
        if self.lam is not None:
            return f"pdrop_lam{format_number(self.lam)}_{self.layers_text}{self.position_suffix}"
        return f"pdrop_{self.layers_text}_r{self.ratios_text}{self.position_suffix}"

    def score(self, boundary: Boundary) -> torch.Tensor:
        ranking_layer = boundary.layers[boundary.layer]
        return last_query_attention(
            ranking_layer, boundary.hidden, boundary.position_embeddings, boundary.valid, boundary.rotary
        )

    def record(self) -> dict:
        return {**super().record(), "lam": self.lam}
