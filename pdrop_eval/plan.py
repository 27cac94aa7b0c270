"""RunPlan: everything a run will do, parsed and validated before any model or data is touched.

The command line is strings; this module turns them into values (schedules, tasks, settings) and refuses bad input
with one clear line. User values are parsed with json / ast.literal_eval, never eval().
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.pyramid.flops import average_retained_tokens, image_tokens_per_layer
from pdrop_eval.pyramid.schedule import POSITION_MODES, DropSchedule, PruningMethod

BASELINES = ("vanilla", "fastv", "random")
DEFAULT_LAYERS = (8, 16, 24)


@dataclass(frozen=True)
class RunPlan:
    """One run: a model, tasks, and the cross product of schedules, written under `output_dir / run_name`."""

    model: str
    tasks: tuple[str, ...]
    schedules: tuple[PruningMethod, ...]
    run_name: str
    output_dir: Path
    batch_size: int = 8
    limit: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    attn: str = "sdpa"
    max_new_tokens: int | None = None
    data_root: str | None = None
    tasks_dir: str | None = None
    seed: int = 0
    overwrite: bool = False
    scorer: str = "native"
    budgets: tuple[float, ...] = ()
    budget_layers: tuple[tuple[int, ...], ...] = (DEFAULT_LAYERS,)
    position_mode: str = "compact"
    command: tuple[str, ...] = field(default_factory=tuple)

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.run_name


def _parse_literal_number(text: str, what: str) -> float:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PdropEvalError(f"{what}: {text.strip()!r} is not a number")
    return float(value)


def parse_number_list(text: str, what: str) -> tuple[float, ...]:
    """'0.3,0.5' or '[0.3, 0.5]' → (0.3, 0.5)."""
    items = [item for item in re.split(r"[,\s]+", text.strip().strip("[]()")) if item]
    if not items:
        raise PdropEvalError(f"{what}: no values given (e.g. {what} 0.3,0.5)")
    return tuple(_parse_literal_number(item, what) for item in items)


def parse_layer_lists(values: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Repeated `--layers 8,16,24 --layers 4,12,20`, or one value with ';' between schedules."""
    schedules = []
    for value in values:
        for part in value.split(";"):
            if not part.strip():
                continue
            numbers = parse_number_list(part, "--layers")
            if any(number != int(number) for number in numbers):
                raise PdropEvalError(f"--layers: {part.strip()!r} must be whole layer counts, e.g. 8,16,24")
            schedules.append(tuple(int(number) for number in numbers))
    return tuple(schedules)


def parse_ratio_lists(values: Sequence[str]) -> tuple[tuple[float, ...], ...]:
    return tuple(parse_number_list(part, "--ratios") for value in values for part in value.split(";") if part.strip())


def lambda_for_budget(budget: float, layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> float:
    """The λ (to 0.001) whose average retained image tokens per layer is closest to `budget`."""
    best, best_gap = 1.0, float("inf")
    for step in range(1, 1001):
        lam = step / 1000
        tokens = image_tokens_per_layer(DropSchedule.pyramid(lam, layers), num_layers, num_image_tokens)
        gap = abs(average_retained_tokens(tokens) - budget)
        if gap < best_gap:
            best, best_gap = lam, gap
    return best


def budget_schedules(plan: RunPlan, num_layers: int, num_image_tokens: int) -> list[tuple[float, PruningMethod]]:
    """For each layer list and budget, the PDrop schedule whose average retained tokens is closest to it."""
    chosen = []
    for layers, budget in itertools.product(plan.budget_layers, plan.budgets):
        lam = lambda_for_budget(budget, layers, num_layers, num_image_tokens)
        chosen.append((budget, DropSchedule.pyramid(lam, layers, positions=plan.position_mode)))
    return chosen


def build_schedules(
    lambdas: Sequence[float],
    layer_lists: Sequence[tuple[int, ...]],
    ratio_lists: Sequence[tuple[float, ...]],
    baselines: Sequence[str],
    position_mode: str,
    seed: int,
) -> tuple[PruningMethod, ...]:
    """The sweep: PDrop for every (λ or ratio list) × layer list, plus the requested baselines."""
    if position_mode not in POSITION_MODES:
        raise PdropEvalError(f"--position-mode {position_mode!r}: choose compact (official PDrop) or original")
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise PdropEvalError(f"unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(BASELINES)}")
    layer_lists = list(layer_lists) or [DEFAULT_LAYERS]
    schedules: list[PruningMethod] = []
    if "vanilla" in baselines:
        schedules.append(DropSchedule.none())
    if "fastv" in baselines:
        schedules.append(DropSchedule.fastv(k=2, r=0.5))
    for lam, layers in itertools.product(lambdas, layer_lists):
        schedules.append(DropSchedule.pyramid(lam, layers, positions=position_mode))
    for ratios, layers in itertools.product(ratio_lists, layer_lists):
        schedules.append(DropSchedule.explicit(layers, ratios, positions=position_mode))
    if "random" in baselines:
        ratio_sets = list(ratio_lists) or [tuple(0.5 ** (s + 1) for s in range(len(layers))) for layers in layer_lists]
        for layers, ratios in itertools.product(layer_lists, ratio_sets):
            if len(ratios) == len(layers):
                schedules.append(DropSchedule.random(layers, ratios, seed=seed, positions=position_mode))
    unique = list(dict.fromkeys(schedules))
    if not unique:
        raise PdropEvalError("nothing to run: give --lambda, --ratios, --budget or --baselines (e.g. --lambda 0.5)")
    return tuple(unique)


def schedule_record(schedule: PruningMethod) -> dict:
    """How a schedule is described in metrics.json and prediction files: the method describes itself."""
    return schedule.record()


def validate_run_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in {".", ".."}:
        raise PdropEvalError(f"--run-name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name
