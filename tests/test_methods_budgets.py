"""Budgets of image tokens mapped to each method's own settings, refused before the model loads where they cannot
be met, swept over every method in one run, and reported per method (issue 11 items 3 and 5)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import pytest

from pdrop_eval import cli, runner
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings, resolve_budgets
from pdrop_eval.methods.registry import METHODS, describe_row, method_colour
from pdrop_eval.methods.vanilla import Vanilla
from pdrop_eval.pyramid.flops import average_retained_tokens, image_tokens_per_layer
from pdrop_eval.report.load import load_run
from pdrop_eval.report.plots import task_figure
from pdrop_eval.report.reference import match_method, paper_method, reference_frame
from pdrop_eval.report.table import results_frame

LLAVA = ModelGeometry(num_layers=32, image_tokens=576)
NEXT = ModelGeometry(num_layers=32, image_tokens=2880, anyres=True, crops=5, tiling="llava_next")
SWEEP = SweepSettings(layer_lists=((2, 6, 12),))
BUDGETS = (192, 128, 64)


def _labels(name: str, geometry: ModelGeometry = LLAVA, sweep: SweepSettings = SWEEP) -> list[str]:
    return [choice.method.label for choice in resolve_budgets([METHODS[name]], BUDGETS, geometry, sweep)]


def test_before_the_llm_methods_keep_the_budget_as_their_papers_set_it():
    # DivPrune: SUBSET_RATIO = K/N; VisionZip: dominant = round(K·54/64) with CLS, the rest contextual;
    # downsample: the G with G² nearest K (14² = 196, 11² = 121, 8² = 64).
    assert _labels("divprune") == ["divprune_r0.333333", "divprune_r0.222222", "divprune_r0.111111"]
    assert _labels("visionzip") == ["visionzip_d162_c30", "visionzip_d108_c20", "visionzip_d54_c10"]
    assert _labels("downsample") == ["downsample_g14", "downsample_g11", "downsample_g8"]
    kept = {
        name: [choice.method.kept_features(576) for choice in resolve_budgets([METHODS[name]], BUDGETS, LLAVA, SWEEP)]
        for name in ("divprune", "visionzip", "downsample")
    }
    assert kept == {"divprune": [192, 128, 64], "visionzip": [192, 128, 64], "downsample": [196, 121, 64]}


def test_fastv_budget_is_the_average_over_layers_with_k_2():
    # keep = round((K·L − 2·N)/(L − 2)): (6144 − 1152)/30 = 166.4, (4096 − 1152)/30 = 98.1, (2048 − 1152)/30 = 29.9
    choices = resolve_budgets([METHODS["fastv"]], BUDGETS, LLAVA, SWEEP)
    profiles = [image_tokens_per_layer(choice.method, 32, 576) for choice in choices]
    assert profiles == [[576] * 2 + [keep] * 30 for keep in (166, 98, 30)]
    assert [choice.retained for choice in choices] == [(1152 + 30 * keep) / 32 for keep in (166, 98, 30)]


def test_dart_budget_is_max_num_trunction_and_keeps_its_pivots_formula():
    choices = resolve_budgets([METHODS["dart"]], BUDGETS, LLAVA, SWEEP)
    assert [c.method.max_num_trunction for c in choices] == [192, 128, 64]
    assert [c.method.keep_count(576, 0) for c in choices] == [4 + 8 * 24, 4 + 8 * 16, 4 + 8 * 8]


def test_pdrop_budget_is_the_closest_lambda_at_each_layer_list():
    sweep = SweepSettings(layer_lists=((2, 6, 12), (4, 12, 20)))
    choices = resolve_budgets([METHODS["pdrop"]], (192,), LLAVA, sweep)
    assert [c.method.layers for c in choices] == [(2, 6, 12), (4, 12, 20)]
    for choice in choices:
        method = choice.method
        error = abs(_pdrop_average(method.lam, method.layers) - 192)
        assert error <= abs(_pdrop_average(round(method.lam - 0.001, 3), method.layers) - 192)
        assert error <= abs(_pdrop_average(round(method.lam + 0.001, 3), method.layers) - 192)


def _pdrop_average(lam: float, layers: tuple[int, ...]) -> float:
    return average_retained_tokens(image_tokens_per_layer(METHODS["pdrop"].from_lambda(lam, layers), 32, 576))


def test_random_floor_at_a_budget_drops_where_and_as_much_as_pdrop():
    (pdrop,) = resolve_budgets([METHODS["pdrop"]], (128,), LLAVA, SWEEP)
    (floor,) = resolve_budgets([METHODS["random"]], (128,), LLAVA, SWEEP)
    assert (floor.method.layers, floor.method.ratios) == (pdrop.method.layers, pdrop.method.ratios)
    assert floor.retained == pdrop.retained


def test_vanilla_takes_no_budget_and_runs_once():
    choices = resolve_budgets([Vanilla], BUDGETS, LLAVA, SWEEP)
    assert [(c.budget, c.method) for c in choices] == [(None, Vanilla())]


@pytest.mark.parametrize(
    ("name", "budget", "message"),
    [
        ("fastv", 30, "below FastV's floor"),  # two layers at 576 alone average 36
        ("dart", 4, "below one token per pivot"),
        ("pdrop", 64, "--budget 64 cannot be reached with --layers 8,16,24"),
        ("divprune", 600, "more than the 576 image tokens"),
    ],
)
def test_unreachable_budgets_are_refused(name, budget, message):
    with pytest.raises(PdropEvalError, match=message):
        resolve_budgets([METHODS[name]], (budget,), LLAVA, SweepSettings())


def test_two_budgets_giving_one_setting_are_refused():
    with pytest.raises(PdropEvalError, match="--budget 128 and 121 give downsample the same settings"):
        resolve_budgets([METHODS["downsample"]], (128, 121), LLAVA, SWEEP)


def test_llava_next_budgets_count_five_crops_of_576():
    # 640/320/160 of 2880: VisionZip and downsample per crop (128/64/32), DART's retain count = the budget.
    next_budgets = (640, 320, 160)

    def chosen(name):
        return resolve_budgets([METHODS[name]], next_budgets, NEXT, SWEEP)

    assert [c.method.label for c in chosen("visionzip")] == [
        "visionzip_d108_c20",
        "visionzip_d54_c10",
        "visionzip_d27_c5",
    ]
    assert [c.method.label for c in chosen("downsample")] == ["downsample_g11", "downsample_g8", "downsample_g6"]
    assert [c.method.label for c in chosen("dart")] == ["dart_k2_t640", "dart_k2_t320", "dart_k2_t160"]
    assert [c.retained for c in chosen("visionzip")] == [640, 320, 160]
    assert [c.retained for c in chosen("downsample")] == [5 * 121, 5 * 64, 5 * 36]
    assert [c.method.keep_count(2880, 0) for c in chosen("dart")] == [4 + 8 * 80, 4 + 8 * 40, 4 + 8 * 20]


@dataclass(frozen=True)
class KeepFirst(PruningMethod):
    """A method registered by a test alone: what a new method file gives, with no edit anywhere else."""

    name = "keepfirst"
    display_name = "KeepFirst"
    marker: ClassVar[str] = "p"
    count: int = 1

    @classmethod
    def for_budget(cls, budget, geometry, sweep):
        return (cls(count=int(budget)),)

    @property
    def label(self) -> str:
        return f"keepfirst_{self.count}"


def test_a_newly_registered_method_plugs_into_budgets_and_reports(monkeypatch):
    monkeypatch.setitem(METHODS, "keepfirst", KeepFirst)
    argv = ["--tasks", "shapes", "--methods", "keepfirst,vanilla", "--budget", "64,32"]
    plan = cli.plan_from_args(cli.build_parser().parse_args(argv), argv)
    choices = resolve_budgets([METHODS[n] for n in plan.methods], plan.budgets, LLAVA, plan.sweep)
    assert [c.method.label for c in choices] == ["keepfirst_64", "keepfirst_32", "vanilla"]
    row = {"method": "keepfirst", "schedule": "keepfirst_64", "layers": "", "ratios": (), "lam": float("nan")}
    assert describe_row(row) == "KeepFirst (keepfirst_64)"
    assert len({method_colour(n) for n in METHODS}) == len(METHODS), "its own colour"
    assert paper_method("KeepFirst") == "keepfirst"


def test_paper_names_are_matched_by_each_methods_own_rule():
    rows = pd.DataFrame(
        [
            {
                "method": "vanilla",
                "schedule": "vanilla",
                "lam": float("nan"),
                "layers": "",
                "ratios": (),
                "positions": "compact",
            },
            {
                "method": "fastv",
                "schedule": "fastv_k2_r0.5",
                "lam": float("nan"),
                "layers": "2",
                "ratios": (0.5,),
                "positions": "original",
            },
            {
                "method": "pdrop",
                "schedule": "pdrop_lam0.5_2-6-12",
                "lam": 0.5,
                "layers": "2-6-12",
                "ratios": (0.5, 0.25, 0.125),
                "positions": "compact",
            },
            {
                "method": "pdrop",
                "schedule": "pdrop_lam0.5_8-16-24",
                "lam": 0.5,
                "layers": "8-16-24",
                "ratios": (0.5, 0.25, 0.125),
                "positions": "compact",
            },
            {
                "method": "divprune",
                "schedule": "divprune_r0.1",
                "lam": float("nan"),
                "layers": "",
                "ratios": (0.1,),
                "positions": "compact",
            },
        ]
    )
    assert match_method("FastV K2 R50", rows, 32)["schedule"] == "fastv_k2_r0.5"
    assert match_method("FastV K3 R50", rows, 32) is None
    assert match_method("PDrop λ0.5", rows, 32)["schedule"] == "pdrop_lam0.5_8-16-24", "the paper's split first"
    assert match_method("vanilla", rows, 32)["schedule"] == "vanilla"
    assert match_method("DivPrune", rows, 32)["schedule"] == "divprune_r0.1"
    assert [paper_method(n) for n in ("FastV K2 R50", "PDrop λ0.4", "vanilla", "SparseVLM 64")] == [
        "fastv",
        "pdrop",
        "vanilla",
        None,
    ]


def _fail_if_model_loads(*args, **kwargs):
    raise AssertionError("the model was loaded although the command was bad")


def _error(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "visionzp", "--budget", "64"], "unknown pruning method 'visionzp': did you mean visionzip?"),
        (["--methods", "divprune,dart"], "--methods divprune,dart needs --budget"),
        (["--methods", "fastv", "--budget", "30"], "below FastV's floor"),
        (["--methods", "dart", "--budget", "600"], "more than the 576 image tokens"),
        (["--methods", "pdrop", "--budget", "64"], "cannot be reached with --layers 8,16,24"),
        (["--model", "tiny-llava-next", "--methods", "dart", "--budget", "400"], "more than the 320 image tokens"),
        (["--model", "tiny-llava-next", "--methods", "downsample", "--budget", "320,300"], "give downsample the same"),
        (["--methods", "sparsevlm", "--budget", "64"], "this model has 4"),
    ],
)
def test_bad_method_or_budget_is_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    argv = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "1", "--output-dir", str(tmp_path), *extra]
    assert cli.main(argv) == 2
    assert message in _error(capsys.readouterr().err)


SWEEP_ARGS = [
    "--methods",
    "visionzip,divprune,dart,downsample,fastv,pdrop,vanilla",
    "--budget",
    "192,128,64",
    "--layers",
    "2,6,12",
]


@pytest.mark.engine
def test_every_method_at_every_budget_in_one_sweep_with_one_tower_pass(tmp_path, monkeypatch, capsys):
    encoded = []
    original = runner.encode_images

    def counting(model, pixel_values, image_sizes=None):
        encoded.append(pixel_values.shape[0])
        return original(model, pixel_values, image_sizes)

    monkeypatch.setattr(runner, "encode_images", counting)
    argv = [
        "--model",
        "tiny-llava",
        "--tasks",
        "shapes",
        "--limit",
        "3",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "2",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "sweep",
        *SWEEP_ARGS,
    ]
    assert cli.main(argv) == 0
    assert "budget 128 tokens: FastV after layer 2, drop 83% [fastv_k2_r0.829861]" in capsys.readouterr().err
    assert sum(encoded) == 3, "every method but VisionZip reuses one tower pass per image"

    run_dir = tmp_path / "sweep"
    results = {r["schedule"]["label"]: r for r in json.loads((run_dir / "metrics.json").read_text())["results"]}
    assert len(results) == 6 * 3 + 1
    retained = {label: r["retained_tokens"] for label, r in results.items()}
    for budget, share in zip(BUDGETS, ("0.333333", "0.222222", "0.111111")):
        assert retained[f"divprune_r{share}"] == budget
    for budget, dominant in zip(BUDGETS, (162, 108, 54)):
        assert retained[f"visionzip_d{dominant}_c{budget - dominant}"] == budget
    assert [retained[f"downsample_g{g}"] for g in (14, 11, 8)] == [196, 121, 64]
    assert [retained[f"dart_k2_t{b}"] for b in BUDGETS] == [(1152 + 30 * (4 + b)) / 32 for b in BUDGETS]
    fastv = results["fastv_k2_r0.711806"]
    assert fastv["image_tokens_per_layer"] == [576] * 2 + [166] * 30
    assert retained["fastv_k2_r0.711806"] == (1152 + 30 * 166) / 32
    pdrop = [r for r in results.values() if r["schedule"]["method"] == "pdrop"]
    assert [r["schedule"]["budget"] for r in pdrop] == [192, 128, 64]
    assert all(abs(r["retained_tokens"] - r["schedule"]["budget"]) < 1 for r in pdrop)
    assert "budget" not in results["vanilla"]["schedule"]
    assert all(r["tflops_exact"] > 0 and r["prefill_ms"] > 0 for r in results.values())

    frame = results_frame([load_run(run_dir)])
    figure = task_figure(frame, reference_frame([load_run(run_dir)], frame), "paper", "shapes")
    ax = figure.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [
        "VisionZip (budget varies)",
        "DivPrune (budget varies)",
        "DART (budget varies)",
        "downsample (budget varies)",
        "FastV (budget varies)",
        "PDrop at layers 2-6-12 (λ varies)",
        "vanilla (all image tokens)",
    ]
    colours = {line.get_label(): line.get_color() for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert len(set(colours.values())) == 7, "one colour per method"
    assert colours["PDrop at layers 2-6-12 (λ varies)"] == method_colour("pdrop"), "the method's colour in every plot"
    joined = {line.get_label(): len(line.get_xdata()) for line in ax.get_lines()}
    assert joined["DivPrune (budget varies)"] == 3 and joined["vanilla (all image tokens)"] == 1

    markdown = (run_dir / "report.md").read_text(encoding="utf-8")
    table = markdown[markdown.index("### Methods at matched budgets") :].split("\n\n")[1].splitlines()[2:]
    assert [line.split(" | ")[:2] for line in table[:6]] == [
        ["| 192", name] for name in ("VisionZip", "DivPrune", "downsample", "FastV", "PDrop", "DART")
    ], "each budget's methods, cheapest paper TFLOPs first"
    assert len(table) == 18
    shown = {"VisionZip", "DivPrune", "DART", "downsample", "FastV", "PDrop", "vanilla"}  # display names
    for heading in ("### Schedules", "### Pareto front"):
        block = markdown[markdown.index(heading) :].split("\n\n")[1].splitlines()[2:]
        assert block and {line.split(" | ")[1] for line in block} <= shown, f"{heading} shows registry keys"
    schedules = markdown[markdown.index("### Schedules") :].split("\n\n")[1].splitlines()[2:]
    assert len({line.split(" | ")[1] for line in schedules}) == 7

    from openpyxl import load_workbook

    sheet = load_workbook(run_dir / "results.xlsx")["Summary"]
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    by_label = {row[header.index("Schedule")]: row for row in rows[1:]}
    assert by_label["dart_k2_t64"][header.index("Budget")] == 64
    assert by_label["fastv_k2_r0.711806"][header.index("Image tokens per layer")] == "576×2, 166×30"
    assert by_label["vanilla"][header.index("Budget")] is None
    assert by_label["dart_k2_t64"][header.index("Method")] == "DART"


@pytest.mark.engine
def test_a_complete_budget_sweep_is_rebuilt_without_loading_the_model(tmp_path, monkeypatch, capsys):
    argv = [
        "--model",
        "tiny-llava",
        "--tasks",
        "shapes",
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "again",
        "--no-report",
        "--methods",
        "divprune,vanilla",
        "--budget",
        "64",
    ]
    assert cli.main(argv) == 0
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    assert cli.main(argv) == 0
    assert "already complete (1 task(s) × 2 schedule(s))" in capsys.readouterr().err


def test_baselines_take_any_registered_method_at_its_defaults():
    argv = ["--tasks", "shapes", "--lambda", "0.5", "--baselines", "divprune,visionzip,random,fastv", "--seed", "3"]
    plan = cli.plan_from_args(cli.build_parser().parse_args(argv), argv)
    assert [schedule.label for schedule in plan.schedules] == [
        "divprune_r0.098",
        "visionzip_d54_c10",
        "random_8-16-24_r0.5-0.25-0.125_s3",
        "fastv_k2_r0.5",
        "pdrop_lam0.5_8-16-24",
    ]
