"""Methods that drop image tokens at stage boundaries inside the LLM, keeping a fraction of each sample's count.

PyramidDrop, FastV and the random floor share this structure (layers, cumulative keep ratios, position mode) and
differ only in how they score tokens, how a keep count is rounded and how they are labelled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod, format_number
from pdrop_eval.pyramid.flops import last_query_rank_flops

if TYPE_CHECKING:
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


def positions_note(row: Mapping, default: str) -> str:
    """Legends name a result row's position mode only where it is not the method's own default."""
    positions = row["positions"]
    return f" ({positions} positions)" if positions and positions != default else ""


@dataclass(frozen=True)
class StagedDrop(PruningMethod):
    """Drop image tokens after each layer count in `layers`, keeping `ratios[s]` of the ORIGINAL count N.

    `layers[s] = k` means "after k decoder layers have run"; ratios are cumulative (REFERENCE §1).
    """

    layers: tuple[int, ...] = ()
    ratios: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        object.__setattr__(self, "ratios", tuple(float(v) for v in self.ratios))
        if len(self.layers) != len(self.ratios):
            raise PdropEvalError(
                f"{len(self.layers)} drop layers {list(self.layers)} but {len(self.ratios)} ratios "
                f"{list(self.ratios)}: give one keep ratio per layer"
            )
        if not self.layers:
            raise PdropEvalError("a dropping schedule needs at least one layer, e.g. layers 8,16,24")
        if any(b <= a for a, b in itertools.pairwise(self.layers)):
            raise PdropEvalError(f"layers must be strictly increasing, got {list(self.layers)} (e.g. 8,16,24)")
        if self.layers[0] < 1:
            raise PdropEvalError(
                f"layer {self.layers[0]} is invalid: a drop layer counts decoder layers run before it, so it must be >= 1"
            )
        for ratio in self.ratios:
            if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
                raise PdropEvalError(f"keep ratio {ratio} is outside (0, 1]: ratios are fractions of image tokens kept")
        if any(b > a for a, b in itertools.pairwise(self.ratios)):
            raise PdropEvalError(
                f"keep ratios must not increase from stage to stage (dropped tokens cannot come back), "
                f"got {list(self.ratios)}"
            )

    @property
    def stage_layers(self) -> tuple[int, ...]:
        return self.layers

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """PDrop floors: `int(N · ratio)` (REFERENCE §1)."""
        return int(num_image_tokens * self.ratios[stage])

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """One query row and all keys projected at each boundary (see `score`); the random floor overrides this."""
        return sum(last_query_rank_flops(shape.text, trace.tokens_per_layer[layer - 1]) for layer in self.stage_layers)

    @property
    def position_suffix(self) -> str:
        """Labels name the position mode only where it is not the method's own default."""
        return "" if self.positions == self.default_positions else f"_{self.positions}"

    @property
    def layers_text(self) -> str:
        return "-".join(str(v) for v in self.layers)

    @property
    def ratios_text(self) -> str:
        return "-".join(format_number(v) for v in self.ratios)

    def record(self) -> dict:
        return {**super().record(), "ratios": list(self.ratios)}
