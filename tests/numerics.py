"""The one rule for how close two float32 computations of the same quantity must be.

Why no fixed atol: the tests compare two fp32 evaluations of one mathematical function that differ only in the
order of operations (batched vs single rows, cached decoding vs recomputation, SDPA vs eager, our layer loop vs HF).
fp32 addition is not associative, so each evaluation is off from the exact value by its own rounding error, and
how large that error is depends on the values' magnitude, the reduction lengths (hidden size, sequence length),
the depth (32 decoder layers carry every layer's error forward on the residual stream) and how much the network
amplifies a perturbation. The kernels (ATen's DEFAULT/AVX2/AVX512 paths, another CPU, a GPU) choose the order, so a
constant tuned on one machine fails on the next: 1e-5 passed here and failed on an AMD EPYC by 1.2e-5.

The rule: compute the reference side once more in float64 (eps 2**-52, 2**29 times finer: exact for our purpose).
Its distance to the fp32 reference, E = max|expected - exact|, is what fp32 rounding does to these very values on
this input, on this machine's kernels, amplification included. The other fp32 evaluation is another ordering of the
same sums with kernels of like quality (blocked GEMMs, the same attention algorithm), so it too lies about E from
the exact value, and by the triangle inequality
|actual - expected| <= |actual - exact| + |expected - exact| ~ 2E. ORDER_MARGIN = 2 on top allows another order to
round up to twice as badly as the one measured (E is a maximum over hundreds of logits, a stable statistic).
Every fp32 result is rounded at least once, so E never counts as less than FP32_EPS * max|exact|.

A real bug (a wrong position, a stale cache entry, a missing mask row, one token too many) changes the function,
not the rounding, so it moves the compared values by a visible part of their magnitude, orders of magnitude past
4E: each equivalence test still fails on it (its docstring names the deliberate bug it was checked against).
Tokens, kept image indices and argmaxes are integers and are compared exactly, never through this rule.

Scores and other Python floats keep `pytest.approx`: that arithmetic is float64 in an order the code fixes, the same
on every CPU, and approx only absorbs that a test writes the expected value as another expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pdrop_eval.methods.base import Boundary, PruningMethod, ReducedFeatures
from pdrop_eval.pyramid.engine import Generation

FP32_EPS = torch.finfo(torch.float32).eps  # 2**-23 ~ 1.19e-7: the spacing of fp32 numbers in [1, 2)
ORDER_MARGIN = 2.0


def fp32_tolerance(expected: torch.Tensor, exact: torch.Tensor) -> float:
    """Absolute tolerance for another fp32 evaluation of `expected`, where `exact` is `expected`'s own computation
    done in float64 (same inputs, same integer choices)."""
    exact = exact.double()
    rounding = (expected.double() - exact).abs().max().item()
    floor = FP32_EPS * exact.abs().max().item()
    return 2 * ORDER_MARGIN * max(rounding, floor)


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, exact: torch.Tensor) -> None:
    """`actual` equals `expected` up to what fp32 reordering can do (module docstring); `exact` is the float64 twin
    of `expected`'s computation."""
    torch.testing.assert_close(actual, expected, atol=fp32_tolerance(expected, exact), rtol=0)


def fp32_differs(first: torch.Tensor, second: torch.Tensor, exact_first: torch.Tensor) -> bool:
    """True when two computations differ by more than fp32 rounding could explain: they compute different things."""
    return (first.double() - second.double()).abs().max().item() > fp32_tolerance(first, exact_first)


@dataclass(frozen=True)
class ForcedChoice(PruningMethod):
    """`method` with the integer choices of one fp32 run fixed, for that run's float64 twin through the whole
    `generate` path (decoding included; `prefill(forced_keep=...)` has no decoding).

    The twin must compute the same function as the fp32 run, on the same kept tokens: run anew in float64, a method
    may break a near-tie the other way, and the two would no longer differ by rounding alone. Kept tower features
    (DivPrune) are gathered as listed; kept image tokens inside the LLM (DART, PDrop, FastV) score 1 and all others 0,
    so the engine's top-`keep_count` keeps exactly them. Methods without integer choices (downsample) run as they are.
    Tower-reading methods (VisionZip) choose inside their own encoder and are forced by their own tests.
    """

    name = "forced"
    display_name = "forced"

    method: PruningMethod | None = None
    feature_indices: tuple[tuple[int, ...], ...] | None = None  # per image, the tower features that entered the LLM
    image_indices: tuple[tuple[tuple[int, ...], ...], ...] = ()  # per sample, per stage, the image ordinals kept

    @classmethod
    def of(cls, method: PruningMethod, generations: Sequence[Generation]) -> ForcedChoice:
        """The choices `method` made for each sample of an fp32 run (the twin's batch holds the same samples)."""
        if method.reads_tower:
            raise ValueError(f"{method.label} chooses inside the vision tower: force its choices in its own test")
        traces = [generation.trace for generation in generations]
        features = None
        if traces[0].kept_feature_indices is not None:
            features = tuple(tuple(trace.kept_feature_indices) for trace in traces)
        images = tuple(tuple(tuple(kept) for kept in trace.kept_image_indices) for trace in traces)
        return cls(positions=method.positions, method=method, feature_indices=features, image_indices=images)

    @property
    def label(self) -> str:
        return f"forced_{self.method.label}"

    @property
    def drops(self) -> bool:
        return self.method.drops

    @property
    def stage_layers(self) -> tuple[int, ...]:
        return self.method.stage_layers

    def kept_features(self, num_features: int, crops: int = 1) -> int:
        return self.method.kept_features(num_features, crops)

    def runs_tower(self, model: nn.Module) -> bool:
        """Downsample on LLaVA-NeXT pools each crop from the pixels: no integer choice to force there."""
        return self.method.runs_tower(model)

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ReducedFeatures:
        return self.method.encode_images(model, pixel_values, image_sizes)

    def reduce_features(self, features: list[torch.Tensor]) -> ReducedFeatures:
        if self.feature_indices is None:
            return self.method.reduce_features(features)
        kept = [image[list(indices)] for image, indices in zip(features, self.feature_indices, strict=True)]
        return ReducedFeatures(features=kept, kept_indices=[list(indices) for indices in self.feature_indices])

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """The method's own count (the engine asks per sample without saying which): tests assert the twin's traces
        list exactly the forced sets, which also catches a forced set of another size."""
        return self.method.keep_count(num_image_tokens, stage)

    def score(self, boundary: Boundary) -> torch.Tensor:
        scores = torch.zeros(boundary.valid.shape, dtype=torch.float32, device=boundary.valid.device)
        for row, per_stage in enumerate(self.image_indices):
            forced = torch.tensor(per_stage[boundary.stage], dtype=torch.long, device=scores.device)
            scores[row] = (torch.isin(boundary.image_ordinal[row], forced) & boundary.image_mask[row]).float()
        return scores
