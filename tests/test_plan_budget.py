"""--budget: a budget the layer list cannot reach is refused with its floor and a layer list that reaches it; no
schedule ever keeps zero image tokens; two budgets never collapse into one schedule silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.plan import RunPlan, budget_range, budget_schedules, lambda_for_budget, layers_reaching
from pdrop_eval.pyramid.flops import average_retained_tokens, image_tokens_per_layer


def _plan(budgets: tuple[float, ...], layers: tuple[tuple[int, ...], ...] = ((8, 16, 24),)) -> RunPlan:
    return RunPlan(
        model="m",
        tasks=("gqa",),
        schedules=(),
        run_name="r",
        output_dir=Path("."),
        budgets=budgets,
        budget_layers=layers,
    )


def test_readme_budgets_below_the_floor_are_refused_naming_floor_and_layers():
    with pytest.raises(PdropEvalError) as err:
        budget_schedules(_plan((192, 128, 64)), 32, 576)
    message = str(err.value)
    floor, _ = budget_range((8, 16, 24), 32, 576)
    assert floor > 144, "576 tokens through 8 of 32 layers alone are 144 on average"
    assert "--budget 128" in message and f"{floor:.1f}" in message and "--layers 6,12,18" in message
    suggested = layers_reaching(128, (8, 16, 24), 32, 576)
    assert budget_range(suggested, 32, 576)[0] <= 128 < budget_range((8, 16, 24), 32, 576)[0]


@pytest.mark.parametrize("budget", [192.0, 270.0, 576.0])
def test_reachable_budgets_get_a_schedule_that_keeps_tokens_at_every_stage(budget):
    ((asked, schedule),) = budget_schedules(_plan((budget,)), 32, 576)
    assert asked == budget
    assert all(schedule.keep_count(576, stage) >= 1 for stage in range(3))
    average = average_retained_tokens(image_tokens_per_layer(schedule, 32, 576))
    assert abs(average - budget) < 5


def test_closest_lambda_never_empties_a_stage():
    lam = lambda_for_budget(1, (2, 4, 6), 32, 576)
    assert int(576 * lam**3) >= 1 and int(576 * (lam - 0.001) ** 3) == 0


def test_two_budgets_on_one_lambda_are_refused_not_merged():
    with pytest.raises(PdropEvalError, match=r"both give λ"):
        budget_schedules(_plan((270, 270.2)), 32, 576)


def test_budget_above_the_image_tokens_is_refused():
    with pytest.raises(PdropEvalError, match="more than the 576 image tokens"):
        budget_schedules(_plan((600,)), 32, 576)


def test_readme_example_layers_reach_all_three_budgets():
    chosen = budget_schedules(_plan((192, 128, 64), ((2, 6, 12),)), 32, 576)
    assert len({schedule.lam for _, schedule in chosen}) == 3
