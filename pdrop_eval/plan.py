"""RunPlan: everything a run will do, parsed and validated before any model or data is touched.

The command line is strings; this module turns them into values (schedules, tasks, settings) and refuses bad input
with one clear line. User values are parsed with json / ast.literal_eval, never eval().
"""

from __future__ import annotations

import ast
import functools
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings, closest_names
from pdrop_eval.methods.registry import METHODS
from pdrop_eval.pyramid.flops import average_retained_tokens, image_tokens_per_layer
from pdrop_eval.pyramid.schedule import POSITION_MODES, DropSchedule, PruningMethod

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
    auto_batch_size: bool = False  # --batch-size auto: the runner replaces batch_size by what fits once loaded
    check_batch_effect: int = 0  # --check-batch-effect K: samples per task × schedule rerun at batch 1 afterwards
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
    methods: tuple[str, ...] = ()  # registered names swept over `budgets` (--methods); () = PDrop alone
    budget_layers: tuple[tuple[int, ...], ...] = (DEFAULT_LAYERS,)
    position_mode: str = "compact"  # resolved: never "auto"
    position_mode_from: str = "--position-mode"  # or "model family default"
    report: bool = True
    command: tuple[str, ...] = field(default_factory=tuple)
    data_workers: int | None = None  # threads preparing batches ahead of the model; None: pipeline.default_workers
    length_buckets: bool = True  # sort windows of samples by prompt length where image-token counts vary

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.run_name

    @property
    def budget_methods(self) -> tuple[str, ...]:
        """The methods `budgets` are mapped for: --methods, or PDrop alone as `--budget` always did."""
        return self.methods or (("pdrop",) if self.budgets else ())

    @property
    def sweep(self) -> SweepSettings:
        return SweepSettings(self.budget_layers, (), self.position_mode, self.seed)


def _parse_literal_number(text: str, what: str) -> float:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PdropEvalError(f"{what}: {text.strip()!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise PdropEvalError(f"{what}: {text.strip()!r} is not a finite number")
    return number


def parse_number_list(text: str, what: str) -> tuple[float, ...]:
    """'0.3,0.5' or '[0.3, 0.5]' → (0.3, 0.5)."""
    items = [item for item in re.split(r"[,\s]+", text.strip().strip("[]()")) if item]
    if not items:
        raise PdropEvalError(f"{what}: no values given (e.g. {what} 0.3,0.5)")
    return tuple(_parse_literal_number(item, what) for item in items)


def _parts(value: str, what: str, example: str) -> list[str]:
    """The ';'-separated lists of one flag value; a value with none in it is an error, not the default."""
    parts = [part for part in value.split(";") if part.strip()]
    if not parts:
        raise PdropEvalError(f"{what}: no values given (e.g. {what} {example})")
    return parts


def parse_layer_lists(values: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Repeated `--layers 8,16,24 --layers 4,12,20`, or one value with ';' between schedules."""
    schedules = []
    for value in values:
        for part in _parts(value, "--layers", "8,16,24"):
            numbers = parse_number_list(part, "--layers")
            if any(number != int(number) for number in numbers):
                raise PdropEvalError(f"--layers: {part.strip()!r} must be whole layer counts, e.g. 8,16,24")
            schedules.append(tuple(int(number) for number in numbers))
    return tuple(schedules)


def parse_ratio_lists(values: Sequence[str]) -> tuple[tuple[float, ...], ...]:
    return tuple(
        parse_number_list(part, "--ratios") for value in values for part in _parts(value, "--ratios", "0.5,0.25,0.125")
    )


LAMBDA_STEPS = 1000  # λ is searched on a 0.001 grid


@functools.lru_cache(maxsize=64)
def _valid_lambdas(layers: tuple[int, ...], num_image_tokens: int) -> tuple[float, ...]:
    """λ on the 0.001 grid whose every stage keeps at least one image token: a stage with none left would make
    every later layer text-only, which is no longer the method being measured."""
    lams = [step / LAMBDA_STEPS for step in range(1, LAMBDA_STEPS + 1)]
    return tuple(
        lam
        for lam in lams
        if all(keep >= 1 for keep in _stage_keeps(DropSchedule.pyramid(lam, layers), num_image_tokens, len(layers)))
    )


def _stage_keeps(schedule: PruningMethod, num_image_tokens: int, stages: int) -> list[int]:
    return [schedule.keep_count(num_image_tokens, stage) for stage in range(stages)]


def _average(lam: float, layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> float:
    return average_retained_tokens(
        image_tokens_per_layer(DropSchedule.pyramid(lam, layers), num_layers, num_image_tokens)
    )


def budget_range(layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> tuple[float, float]:
    """The fewest and most average retained image tokens PDrop can give at `layers` (every stage keeping ≥1)."""
    valid = _valid_lambdas(layers, num_image_tokens)
    if not valid:
        raise PdropEvalError(
            f"--layers {_layers_text(layers)}: {num_image_tokens} image tokens cannot keep one token through "
            f"{len(layers)} stages of λ, λ², λ³…: use fewer drop layers"
        )
    return _average(valid[0], layers, num_layers, num_image_tokens), float(num_image_tokens)


def lambda_for_budget(budget: float, layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> float:
    """The λ (to 0.001) whose average retained image tokens per layer is closest to `budget`, among the λ that keep
    at least one image token at every stage."""
    return min(
        _valid_lambdas(layers, num_image_tokens),
        key=lambda lam: abs(_average(lam, layers, num_layers, num_image_tokens) - budget),
    )


def layers_reaching(budget: float, layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> tuple[int, ...]:
    """The same layer list shrunk towards layer 1 until its floor is below `budget` (what to suggest instead).

    The floor is set by the first drop layer (every image token goes through the layers before it), so the list is
    scaled by the largest first layer that can reach the budget; () when even layer 1 cannot.
    """
    for first in range(layers[0], 0, -1):
        scaled = tuple(dict.fromkeys(max(1, round(layer * first / layers[0])) for layer in layers))
        if budget_range(scaled, num_layers, num_image_tokens)[0] <= budget:
            return scaled
    return ()


def _layers_text(layers: tuple[int, ...]) -> str:
    return ",".join(str(layer) for layer in layers)


def check_budget(budget: float, layers: tuple[int, ...], num_layers: int, num_image_tokens: int) -> None:
    floor, ceiling = budget_range(layers, num_layers, num_image_tokens)
    if budget > ceiling:
        raise PdropEvalError(
            f"--budget {budget:g} is more than the {num_image_tokens} image tokens this model gets per image: "
            f"use a budget up to {num_image_tokens} (or --baselines vanilla for no pruning)"
        )
    if budget < floor:
        shorter = layers_reaching(budget, layers, num_layers, num_image_tokens)
        advice = f", or drop earlier, e.g. --layers {_layers_text(shorter)}" if shorter else ""
        raise PdropEvalError(
            f"--budget {budget:g} cannot be reached with --layers {_layers_text(layers)}: all {num_image_tokens} "
            f"image tokens go through the first {layers[0]} of {num_layers} layers and every stage keeps at least "
            f"one, so the floor is {floor:.1f} average tokens; use a budget of at least {floor:.1f}{advice}"
        )


def budget_schedules(plan: RunPlan, num_layers: int, num_image_tokens: int) -> list[tuple[float, PruningMethod]]:
    """For each layer list and budget, the PDrop schedule whose average retained tokens is closest to it.

    A budget the layer list cannot reach is refused (naming the floor and a layer list that reaches it), and two
    budgets that land on the same λ are refused too, so every budget asked for is a schedule of its own.
    """
    geometry = ModelGeometry(num_layers, num_image_tokens)
    chosen: list[tuple[float, PruningMethod]] = []
    by_label: dict[str, float] = {}
    for budget in plan.budgets:
        for schedule in METHODS["pdrop"].for_budget(budget, geometry, plan.sweep):
            if schedule.label in by_label:
                raise PdropEvalError(
                    f"--budget {by_label[schedule.label]:g} and {budget:g} both give λ {schedule.lam:g} with --layers "
                    f"{_layers_text(schedule.layers)} (λ moves in steps of 0.001): give budgets further apart"
                )
            by_label[schedule.label] = budget
            chosen.append((budget, schedule))
    return sorted(chosen, key=lambda pair: plan.budget_layers.index(pair[1].layers))


def method_classes(names: Sequence[str], flag: str) -> list[type[PruningMethod]]:
    """Registered classes by name; an unknown name is one line naming the closest and every known method."""
    for name in names:
        if name not in METHODS:
            raise PdropEvalError(
                f"{flag}: unknown pruning method {name!r}: {closest_names(name, list(METHODS))}"
                f"choose from {', '.join(METHODS)}"
            )
    return [METHODS[name] for name in names]


def check_methods(plan: RunPlan) -> None:
    """--methods names registered methods, and each that maps a budget has --budget to map."""
    classes = method_classes(plan.methods, "--methods")
    needing = [cls.name for cls in classes if cls.takes_budget]
    if needing and not plan.budgets:
        raise PdropEvalError(
            f"--methods {','.join(needing)} needs --budget (e.g. --budget 192,128,64) to choose each method's "
            f"settings; for their default settings use --baselines {','.join(needing)}"
        )


def resolve_position_mode(mode: str, model: str) -> str:
    """`auto` becomes the model family's default (read from the model's config.json); the others stay."""
    if mode != "auto":
        return mode
    from pdrop_eval.families.base import ModelFamily
    from pdrop_eval.families.registry import family_for_model

    family = family_for_model(model)
    return (family or ModelFamily).default_position_mode


def build_schedules(
    lambdas: Sequence[float],
    layer_lists: Sequence[tuple[int, ...]],
    ratio_lists: Sequence[tuple[float, ...]],
    baselines: Sequence[str],
    position_mode: str,
    seed: int,
) -> tuple[PruningMethod, ...]:
    """The sweep: the requested baselines at their default settings (any registered method: its `baseline()`, given
    the sweep's layer lists, ratio lists, positions and seed), then PDrop for every (λ or ratio list) × layer list."""
    if position_mode not in POSITION_MODES:
        raise PdropEvalError(f"--position-mode {position_mode!r}: choose compact (official PDrop) or original")
    classes = method_classes(baselines, "--baselines")
    layer_lists = list(layer_lists) or [DEFAULT_LAYERS]
    sweep = SweepSettings(tuple(layer_lists), tuple(ratio_lists), position_mode, seed)
    schedules: list[PruningMethod] = [method for cls in classes for method in cls.baseline(sweep)]
    for lam, layers in itertools.product(lambdas, layer_lists):
        schedules.append(DropSchedule.pyramid(lam, layers, positions=position_mode))
    for ratios, layers in itertools.product(ratio_lists, layer_lists):
        schedules.append(DropSchedule.explicit(layers, ratios, positions=position_mode))
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
