"""DropSchedule: the constructors callers have always used to name what to run, now returning pruning methods.

A schedule is a `PruningMethod` value (pdrop_eval.methods) passed to each generate call, never state stored on the
model, so one loaded model serves a whole sweep of λ values, layer lists and baselines. These constructors keep the
names the CLI, tests and benchmarks use; labels (prediction file names) are unchanged, so older runs resume.
"""

from __future__ import annotations

from pdrop_eval.methods.base import POSITION_MODES, PositionMode, PruningMethod
from pdrop_eval.methods.fastv import FastV
from pdrop_eval.methods.pdrop import PDrop
from pdrop_eval.methods.random import RandomDrop
from pdrop_eval.methods.vanilla import Vanilla

__all__ = ["POSITION_MODES", "DropSchedule", "PositionMode", "PruningMethod"]


class DropSchedule:
    """Named constructors for the in-LLM methods and the unpruned model (not instantiated itself)."""

    @staticmethod
    def none() -> Vanilla:
        """The unpruned model: every layer sees every token."""
        return Vanilla()

    @staticmethod
    def pyramid(lam: float, layers: tuple[int, ...] = (8, 16, 24), positions: PositionMode = "compact") -> PDrop:
        """PyramidDrop: keep λ^(s+1) of the image tokens after stage s (λ=0.5: 0.5, 0.25, 0.125)."""
        return PDrop.from_lambda(lam, layers, positions)

    @staticmethod
    def explicit(layers: tuple[int, ...], ratios: tuple[float, ...], positions: PositionMode = "compact") -> PDrop:
        """PyramidDrop ranking with hand-picked cumulative keep ratios per stage."""
        return PDrop(layers=tuple(layers), ratios=tuple(ratios), positions=positions)

    @staticmethod
    def fastv(k: int = 2, r: float = 0.5, positions: PositionMode = "original") -> FastV:
        """FastV: after K layers drop R of the image tokens, ranked by layer K-1's attention, keeping positions."""
        return FastV.from_k_r(k, r, positions)

    @staticmethod
    def random(
        layers: tuple[int, ...] = (8, 16, 24),
        ratios: tuple[float, ...] = (0.5, 0.25, 0.125),
        seed: int = 0,
        positions: PositionMode = "compact",
    ) -> RandomDrop:
        """Random drops at the same layers and ratios: the floor any ranking must beat."""
        return RandomDrop(layers=tuple(layers), ratios=tuple(ratios), seed=seed, positions=positions)
