"""Budgets of image tokens, mapped to each method's own settings the way its paper sets them.

Papers report "retain K tokens": the average image tokens per LLM layer (REFERENCE §7; LLaVA-1.5 192/128/64 of
576, LLaVA-NeXT 640/320/160 of 2880). Each method class maps a budget with `for_budget`; this module holds what
they are given (the model's geometry, the sweep's shared flags) and resolves a whole `--methods × --budget` grid,
refusing an unreachable pair with one line before any sample runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod


@dataclass(frozen=True)
class ModelGeometry:
    """What a budget mapping needs to know of the model. `image_tokens` is what the papers' budgets are a share of:
    LLaVA-1.5's 576, LLaVA-NeXT's `crops` × the patches of one crop (5 × 576 = 2880: the base view and the largest
    grid pinpoint's tiles, newline tokens and unpadding left out, as the papers count it); None where it cannot be
    known (a family whose count depends on each image)."""

    num_layers: int
    image_tokens: int | None
    anyres: bool = False
    tiling: str | None = None  # model_type of a tiling model: methods that pack tiles support only some layouts
    num_heads: int | None = None  # attention heads of the language model, where a method picks among them
    cls_token: bool = True  # the vision tower has a CLS token (SigLIP, in LLaVA-OneVision, has none)
    crops: int = 1  # tower crops per image that `image_tokens` counts


@dataclass(frozen=True)
class SweepSettings:
    """The flags a sweep gives every method: PDrop's layer lists, explicit ratio lists, positions, the seed."""

    layer_lists: tuple[tuple[int, ...], ...] = ((8, 16, 24),)
    ratio_lists: tuple[tuple[float, ...], ...] = ()
    positions: str = "compact"
    seed: int = 0


@dataclass(frozen=True)
class BudgetChoice:
    """One method's settings for one budget, and what it actually keeps (average image tokens per LLM layer); a
    method that takes no budget (the unpruned model) has budget None."""

    budget: float | None
    method: PruningMethod
    retained: float


def closest_names(name: str, known: Sequence[str]) -> str:
    """'did you mean' text for a mistyped method name."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(close)}? " if close else ""


def check_budget_size(budget: float, geometry: ModelGeometry) -> None:
    if geometry.image_tokens is not None and budget > geometry.image_tokens:
        raise PdropEvalError(
            f"--budget {budget:g} is more than the {geometry.image_tokens} image tokens this model gets per image: "
            f"use a budget up to {geometry.image_tokens} (or --baselines vanilla for no pruning)"
        )


def resolve_budgets(
    classes: Sequence[type[PruningMethod]],
    budgets: Sequence[float],
    geometry: ModelGeometry,
    sweep: SweepSettings,
) -> list[BudgetChoice]:
    """Every method × budget, in the order given (methods that take no budget once). Two budgets that give one
    method the same settings are refused: every budget asked for is a point of its own."""
    from pdrop_eval.pyramid.flops import average_retained_tokens, image_tokens_per_layer

    for budget in budgets:
        check_budget_size(budget, geometry)
    chosen: list[BudgetChoice] = []
    for cls in classes:
        cls.check_model(geometry)
        if not cls.takes_budget:
            chosen.extend(BudgetChoice(None, method, float("nan")) for method in cls.baseline(sweep))
            continue
        seen: dict[str, float] = {}
        for budget in budgets:
            for method in cls.for_budget(budget, geometry, sweep):
                if method.label in seen:
                    raise PdropEvalError(
                        f"--budget {seen[method.label]:g} and {budget:g} give {cls.display_name} the same settings "
                        f"({method.label}): give budgets further apart"
                    )
                seen[method.label] = budget
                counts = image_tokens_per_layer(method, geometry.num_layers, geometry.image_tokens, geometry.crops)
                chosen.append(BudgetChoice(budget, method, average_retained_tokens(counts)))
    return chosen
