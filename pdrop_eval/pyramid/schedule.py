"""DropSchedule: which image tokens survive which layers.

A schedule is a plain value passed to each generate call, never state stored on the model, so one loaded model
serves a whole sweep of λ values, layer lists and baselines.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

from pdrop_eval.errors import PdropEvalError

Ranker = Literal["none", "attention", "fastv", "random"]
PositionMode = Literal["compact", "original"]
Rounding = Literal["floor", "round"]

POSITION_MODES: tuple[str, ...] = ("compact", "original")


@dataclass(frozen=True)
class DropSchedule:
    """Drop image tokens after each layer in `layers`, keeping `ratios[s]` of the ORIGINAL count N per sample.

    `layers[s] = k` means "after k decoder layers have run". `ranker` says how tokens are ranked there:
    `attention` (PyramidDrop: the next layer's attention from the last prompt token), `fastv` (the attention of
    the layer that just ran), `random`. `positions` says what RoPE positions survivors get: `compact` re-indexes
    them 0..len-1 as the official PDrop code does; `original` keeps each token's position as FastV does.
    `rounding` is how a keep count is made an integer: PDrop floors, FastV rounds.
    """

    layers: tuple[int, ...] = ()
    ratios: tuple[float, ...] = ()
    ranker: Ranker = "none"
    positions: PositionMode = "compact"
    rounding: Rounding = "floor"
    seed: int = 0
    lam: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        object.__setattr__(self, "ratios", tuple(float(v) for v in self.ratios))
        if self.positions not in POSITION_MODES:
            raise PdropEvalError(
                f"unknown position mode {self.positions!r}: use 'compact' (official PDrop) or 'original' (FastV)"
            )
        if self.ranker == "none":
            if self.layers or self.ratios:
                raise PdropEvalError("the 'none' schedule drops nothing: give it no layers and no ratios")
            return
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

    @classmethod
    def none(cls) -> DropSchedule:
        """The unpruned model: every layer sees every token."""
        return cls()

    @classmethod
    def pyramid(
        cls, lam: float, layers: tuple[int, ...] = (8, 16, 24), positions: PositionMode = "compact"
    ) -> DropSchedule:
        """PyramidDrop: keep λ^(s+1) of the image tokens after stage s (λ=0.5: 0.5, 0.25, 0.125)."""
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (0.0 < lam <= 1.0):
            raise PdropEvalError(f"lambda {lam!r} is outside (0, 1]: e.g. --lambda 0.5 keeps half at each stage")
        ratios = tuple(float(lam) ** (s + 1) for s in range(len(layers)))
        return cls(layers=tuple(layers), ratios=ratios, ranker="attention", positions=positions, lam=float(lam))

    @classmethod
    def explicit(
        cls, layers: tuple[int, ...], ratios: tuple[float, ...], positions: PositionMode = "compact"
    ) -> DropSchedule:
        """PyramidDrop ranking with hand-picked cumulative keep ratios per stage."""
        return cls(layers=tuple(layers), ratios=tuple(ratios), ranker="attention", positions=positions)

    @classmethod
    def fastv(cls, k: int = 2, r: float = 0.5, positions: PositionMode = "original") -> DropSchedule:
        """FastV: after K layers drop R of the image tokens, ranked by layer K-1's attention, keeping positions."""
        if not (0.0 <= r < 1.0):
            raise PdropEvalError(f"FastV drop ratio R={r} is outside [0, 1): R is the fraction of image tokens dropped")
        return cls(layers=(k,), ratios=(1.0 - r,), ranker="fastv", positions=positions, rounding="round")

    @classmethod
    def random(
        cls,
        layers: tuple[int, ...] = (8, 16, 24),
        ratios: tuple[float, ...] = (0.5, 0.25, 0.125),
        seed: int = 0,
        positions: PositionMode = "compact",
    ) -> DropSchedule:
        """Random drops at the same layers and ratios: the floor any ranking must beat."""
        return cls(layers=tuple(layers), ratios=tuple(ratios), ranker="random", positions=positions, seed=seed)

    @property
    def drops(self) -> bool:
        return self.ranker != "none"

    @property
    def label(self) -> str:
        """A short stable name, used for file names and table rows."""
        if not self.drops:
            return "vanilla"
        layers = "-".join(str(v) for v in self.layers)
        suffix = "" if self.positions == _DEFAULT_POSITIONS[self.ranker] else f"_{self.positions}"
        if self.ranker == "fastv":
            return f"fastv_k{self.layers[0]}_r{_num(1.0 - self.ratios[0])}{suffix}"
        ratios = "-".join(_num(v) for v in self.ratios)
        if self.ranker == "random":
            return f"random_{layers}_r{ratios}_s{self.seed}{suffix}"
        if self.lam is not None:
            return f"pdrop_lam{_num(self.lam)}_{layers}{suffix}"
        return f"pdrop_{layers}_r{ratios}{suffix}"

    def validate_for_depth(self, num_layers: int) -> None:
        """Refuse layers the model does not have; ranking at layer k needs layer k to exist."""
        for layer in self.layers:
            if layer >= num_layers:
                raise PdropEvalError(
                    f"drop layer {layer} is beyond the model's depth: it has {num_layers} decoder layers, so drop "
                    f"layers must be between 1 and {num_layers - 1}"
                )

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """Image tokens kept after `stage`, relative to the sample's original count (REFERENCE §1)."""
        exact = num_image_tokens * self.ratios[stage]
        if self.rounding == "round":
            return min(num_image_tokens, round(exact))
        return int(exact)

    def stage_ranges(self, num_layers: int) -> list[tuple[int, int]]:
        """Half-open layer ranges [start, end) between drops; a single range when nothing drops."""
        bounds = [0, *self.layers, num_layers]
        return list(itertools.pairwise(bounds))


_DEFAULT_POSITIONS = {"attention": "compact", "random": "compact", "fastv": "original"}


def _num(value: float) -> str:
    return f"{value:.6g}"
