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

import torch

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
