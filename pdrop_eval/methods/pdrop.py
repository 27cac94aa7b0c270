"""PyramidDrop (Xing et al., CVPR'25; official code Cooperx521/PyramidDrop, `pdrop_rank_drop`), inference only.

After each stage (`layers = (8, 16, 24)`: after 8, 16, 24 decoder layers) keep `int(N · λ^(s+1))` image tokens of
the N that entered the LLM, ranked by the head-averaged softmax attention that the last prompt token pays them in the
NEXT layer (its input norm and q/k projections, RoPE at the current positions). Survivors are re-indexed 0..len-1
(`compact`), as the official code does; `original` keeps FastV-style positions. REFERENCE §1 has every detail.
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

PAPER_NAME = re.compile(r"pdrop\D*(?:λ|lambda|lam)\s*=?\s*(\d*\.?\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class PDrop(StagedDrop):
    """`lam` is set when the ratios are λ's powers (the label then names λ); hand-picked ratios leave it None."""

    name = "pdrop"
    display_name = "PDrop"
    marker: ClassVar[str] = "o"

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

    @classmethod
    def baseline(cls, sweep: SweepSettings) -> tuple[PDrop, ...]:
        """λ = 0.5 (the paper's default) at each layer list."""
        return tuple(cls.from_lambda(0.5, layers, sweep.positions) for layers in sweep.layer_lists)

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[PDrop, ...]:
        """At each layer list, the λ (0.001 grid) whose average retained tokens is closest to the budget; a budget
        below the layer list's floor is refused, naming the floor and a layer list that reaches it."""
        from pdrop_eval.plan import check_budget, lambda_for_budget

        chosen = []
        for layers in sweep.layer_lists:
            check_budget(budget, layers, geometry.num_layers, geometry.image_tokens)
            lam = lambda_for_budget(budget, layers, geometry.num_layers, geometry.image_tokens)
            chosen.append(cls.from_lambda(lam, layers, sweep.positions))
        return tuple(chosen)

    @classmethod
    def describe(cls, row: Mapping) -> str:
        if isinstance(row["lam"], float) and not math.isnan(row["lam"]):
            return f"PDrop λ{round(row['lam'], 3):g} at {row['layers']}{positions_note(row, 'compact')}"
        keep = "/".join(f"{r * 100:.3g}%" for r in row["ratios"])
        return f"PDrop at {row['layers']}, keep {keep}{positions_note(row, 'compact')}"

    @classmethod
    def paper_rows(cls, paper_name: str, rows: pd.DataFrame, num_layers: int | None) -> pd.DataFrame | None:
        """A paper name such as "PDrop λ0.5": our rows at that λ, the paper's layer split (L/4, L/2, 3L/4) and
        compact positions first."""
        found = PAPER_NAME.search(paper_name)
        if found is None:
            return None
        lam = float(found.group(1))
        candidates = rows[(rows["method"] == cls.name) & rows["lam"].map(lambda v: math.isclose(v, lam, abs_tol=1e-6))]
        paper_split = num_layers and "-".join(str(num_layers * q // 4) for q in (1, 2, 3))
        order = sorted(
            range(len(candidates)),
            key=lambda i: (
                candidates["layers"].iloc[i] != paper_split,
                candidates["positions"].iloc[i] not in ("compact", ""),
            ),
        )
        return candidates.iloc[order]

    def score(self, boundary: Boundary) -> torch.Tensor:
        ranking_layer = boundary.layers[boundary.layer]
        return last_query_attention(
            ranking_layer, boundary.hidden, boundary.position_embeddings, boundary.valid, boundary.rotary
        )

    def record(self) -> dict:
        return {**super().record(), "lam": self.lam}
