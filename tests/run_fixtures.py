"""Writes synthetic run directories in the runner's layout (metrics.json, predictions/, samples/) for report tests.

Numbers are made up but shaped like LLaVA-1.5-7B's: the paper's TFLOPs formula at d=4096, m=11008, 32 layers,
scores that fall as λ shrinks, POPE's per-category confusion keys as the scorer writes them, and kept indices
that favour the patches around the drawn objects so kept-token maps look like attention would make them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

HIDDEN, FFN, NUM_LAYERS = 4096, 11008, 32
IMAGE_SIZE = 336
SAMPLE_IDS = (0, 1, 2)
POPE_CATEGORIES = ("adversarial", "popular", "random")
PAPER_ROWS = [
    {"method": "vanilla", "tflops": 3.82, "score": 85.9},
    {"method": "FastV K2 R50", "tflops": 2.01, "score": 84.8},
    {"method": "PDrop λ0.5", "tflops": 1.78, "score": 84.8},
]


@dataclass(frozen=True)
class FixtureSchedule:
    label: str
    method: str
    lam: float | None
    layers: tuple[int, ...]
    ratios: tuple[float, ...]
    positions: str


def standard_schedules() -> list[FixtureSchedule]:
    """vanilla, FastV K2 R50, random, and PDrop λ 0.3/0.5/0.7 at two layer schedules."""
    schedules = [
        FixtureSchedule("vanilla", "vanilla", None, (), (), "compact"),
        FixtureSchedule("fastv_k2_r0.5", "fastv", None, (2,), (0.5,), "original"),
        FixtureSchedule(
            "random_8-16-24_r0.5-0.25-0.125_s0", "random", None, (8, 16, 24), (0.5, 0.25, 0.125), "compact"
        ),
    ]
    for layers in ((8, 16, 24), (4, 12, 20)):
        for lam in (0.3, 0.5, 0.7):
            ratios = tuple(lam ** (s + 1) for s in range(len(layers)))
            label = f"pdrop_lam{lam:g}_{'-'.join(map(str, layers))}"
            schedules.append(FixtureSchedule(label, "pdrop", lam, layers, ratios, "compact"))
    return schedules


def tokens_per_layer(schedule: FixtureSchedule, n_image: int) -> list[int]:
    counts, kept = [], n_image
    bounds = dict(zip(schedule.layers, schedule.ratios))
    for layer in range(NUM_LAYERS):
        if layer in bounds:
            ratio = bounds[layer]
            kept = round(n_image * ratio) if schedule.method == "fastv" else int(n_image * ratio)
        counts.append(kept)
    return counts


def paper_tflops(per_layer: list[int]) -> float:
    return sum(4 * n * HIDDEN**2 + 2 * n * n * HIDDEN + 3 * n * HIDDEN * FFN for n in per_layer) / 1e12


def _score(base: float, schedule: FixtureSchedule) -> float:
    """A plausible accuracy: PDrop loses more at small λ and with earlier drops; random loses most."""
    if schedule.method == "vanilla":
        return base
    if schedule.method == "fastv":
        return base - 1.4
    if schedule.method == "random":
        return base - 7.5
    early = 1.0 if schedule.layers[0] < 8 else 0.0
    return base - 9.0 * (1.0 - schedule.lam) ** 2 - early


def _pope_metrics(f1_target: float, n_per_category: int) -> dict[str, float]:
    """POPE keys as `pdrop_eval.metrics.yesno` writes them, from confusions whose F1 is close to the target."""
    out: dict[str, float] = {}
    f1s, accs = [], []
    for i, cat in enumerate(POPE_CATEGORIES):
        pos = n_per_category // 2
        tp = round(pos * (f1_target - 2 * i) / 100)
        fn, fp = pos - tp, max(0, round(pos * (100 - f1_target) / 150) + i)
        tn = n_per_category - pos - fp
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        f1 = 2 * precision * recall / (precision + recall)
        acc = (tp + tn) / n_per_category
        f1s.append(f1)
        accs.append(acc)
        out.update({
            f"accuracy/{cat}": acc * 100, f"precision/{cat}": precision * 100, f"recall/{cat}": recall * 100,
            f"f1/{cat}": f1 * 100, f"yes_pct/{cat}": (tp + fp) / n_per_category * 100,
            f"n/{cat}": float(n_per_category),
            f"tp/{cat}": float(tp), f"fp/{cat}": float(fp), f"tn/{cat}": float(tn), f"fn/{cat}": float(fn),
        })
    out["f1_mean"] = sum(f1s) / 3 * 100
    out["accuracy_mean"] = sum(accs) / 3 * 100
    out["n"] = float(3 * n_per_category)
    out["lmms_eval/accuracy"] = out["accuracy_mean"] - 0.3
    return out


def _object_centres(sample_id: int) -> list[tuple[int, int]]:
    rng = random.Random(sample_id)
    return [(rng.randint(60, 276), rng.randint(90, 246)) for _ in range(2)]


def write_sample_png(path: Path, sample_id: int) -> None:
    """A 336×336 'padded' image: grey bars above and below a scene with a red circle and a blue square."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (122, 116, 104))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 60, IMAGE_SIZE - 1, 275), fill=(200, 220, 190))
    (cx, cy), (sx, sy) = _object_centres(sample_id)
    draw.ellipse((cx - 30, cy - 30, cx + 30, cy + 30), fill=(220, 40, 40))
    draw.rectangle((sx - 25, sy - 25, sx + 25, sy + 25), fill=(40, 60, 220))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def kept_indices(schedule: FixtureSchedule, sample_id: int, grid: tuple[int, int]) -> list[list[int]]:
    """Nested kept sets per stage, ranked by closeness to the sample's objects plus noise."""
    rows, cols = grid
    n = rows * cols
    rng = random.Random(1000 + sample_id)
    centres = _object_centres(sample_id)
    patch = IMAGE_SIZE / cols

    def closeness(i: int) -> float:
        x, y = (i % cols + 0.5) * patch, (i // cols + 0.5) * patch
        return -min((x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres) ** 0.5 + rng.uniform(0, 60)

    ranked = sorted(range(n), key=closeness, reverse=True)
    if schedule.method == "random":
        rng.shuffle(ranked)
    stages = []
    for ratio in schedule.ratios:
        keep = round(n * ratio) if schedule.method == "fastv" else int(n * ratio)
        stages.append(sorted(ranked[:keep]))
    return stages


def write_run_dir(
    root: Path,
    name: str = "demo",
    *,
    image_grid: tuple[int, int] | None = (24, 24),
    tasks: tuple[str, ...] = ("shapes", "pope"),
    score_offset: float = 0.0,
) -> Path:
    """Write results/<name>/ under `root` and return it; `score_offset` makes a second run distinguishable."""
    run_dir = root / name
    n_image = image_grid[0] * image_grid[1] if image_grid else 2880
    schedules = standard_schedules()
    results, task_info = [], {}
    for task in tasks:
        task_info[task] = _task_info(task)
        for schedule in schedules:
            results.append(_result(run_dir, task, schedule, n_image, image_grid, score_offset))
        if image_grid:
            for sample_id in SAMPLE_IDS[:2]:
                write_sample_png(run_dir / "samples" / task / f"{sample_id}.png", sample_id)
    metrics = {
        "run": {
            "name": name,
            "created": "2026-11-26T10:00:00+00:00",
            "command": ["run_eval.py", "--tasks", ",".join(tasks)],
            "git_sha": "abc123",
            "versions": {"pdrop_eval": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0", "python": "3.11.7"},
            "model": {
                "name": "llava-1.5-7b" if image_grid else "llava-v1.6-vicuna-7b",
                "kind": "llava" if image_grid else "llava_next",
                "dtype": "float16", "attn": "sdpa", "device": "cuda", "num_layers": NUM_LAYERS,
                "image_grid": list(image_grid) if image_grid else None,
            },
            "seed": 0,
            "settings": {"batch_size": 8, "limit": 64, "max_new_tokens": None},
            "data_files": {t: {"synthetic": "seed=0"} for t in tasks},
        },
        "tasks": task_info,
        "results": results,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    return run_dir


def _task_info(task: str) -> dict[str, Any]:
    if task == "pope":
        reference = {
            "model": "llava-1.5-7b",
            "source": "PyramidDrop (Xing et al., arXiv:2410.17247), inference-only results on LLaVA-1.5-7B",
            "metric": "F1 (%), mean of adversarial, popular and random",
            "rows": PAPER_ROWS,
        }
        return {"metrics": ["pope"], "primary_metric": "f1_mean", "reference": reference}
    return {"metrics": ["exact_match"], "primary_metric": "accuracy", "reference": None}


def _result(
    run_dir: Path,
    task: str,
    schedule: FixtureSchedule,
    n_image: int,
    grid: tuple[int, int] | None,
    score_offset: float,
) -> dict[str, Any]:
    per_layer = tokens_per_layer(schedule, n_image)
    tflops = paper_tflops(per_layer)
    if task == "pope":
        metrics = _pope_metrics(_score(85.9, schedule) + score_offset, 1000)
        primary_metric = "f1_mean"
    else:
        metrics = {"accuracy": round(_score(70.0, schedule) + score_offset, 4), "n": 64.0}
        primary_metric = "accuracy"
    predictions = f"predictions/{task}/{schedule.label}.jsonl"
    _write_predictions(run_dir / predictions, schedule, n_image, grid, per_layer)
    return {
        "task": task,
        "schedule": {
            "label": schedule.label, "method": schedule.method, "lam": schedule.lam, "layers": list(schedule.layers),
            "ratios": list(schedule.ratios), "positions": schedule.positions,
        },
        "n": int(metrics["n"]),
        "metrics": metrics,
        "primary_metric": primary_metric,
        "primary": metrics[primary_metric],
        "tflops_paper": tflops,
        "tflops_exact": 2.05 * tflops + 0.35,
        "retained_tokens": sum(per_layer) / NUM_LAYERS,
        "prefill_ms": 12.0 + 9.0 * tflops,
        "decode_ms_per_token": 22.0,
        "samples_per_s": 40.0 / (1.0 + tflops),
        "predictions": predictions,
    }


def _write_predictions(
    path: Path, schedule: FixtureSchedule, n_image: int, grid: tuple[int, int] | None, per_layer: list[int]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for sample_id in SAMPLE_IDS:
        if grid:
            kept = kept_indices(schedule, sample_id, grid)
        else:
            kept = [list(range(int(n_image * r))) for r in schedule.ratios]
        lines.append(json.dumps({
            "id": sample_id, "prompt": "USER: <image>\nWhat colour is the circle? ASSISTANT:", "prediction": "red",
            "gold": "red", "score": 1.0, "meta": {}, "image_source": f"synthetic:{sample_id}",
            "num_image_tokens": n_image, "kept_image_indices": kept, "image_tokens_per_layer": per_layer,
            "tokens_per_layer": [t + 40 for t in per_layer], "generated_tokens": 2,
            "flops_paper": paper_tflops(per_layer) * 1e12, "flops_exact": 2.05 * paper_tflops(per_layer) * 1e12,
        }))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Per schedule of `write_sampled_run`: the chance it changes vanilla's answer on a sample (0 = vanilla's twin).
SAMPLED_FLIPS = {"vanilla": 0.0, "pdrop_lam0.7_8-16-24": 0.0, "pdrop_lam0.5_8-16-24": 0.08,
                 "pdrop_lam0.254_8-16-24": 0.3, "random_8-16-24_r0.5-0.25-0.125_s0": 0.45}


def write_sampled_run(
    root: Path,
    name: str,
    *,
    task: str = "shapes",
    n: int = 48,
    model: str = "tiny-llava",
    max_new_tokens: int = 8,
    seed: int = 0,
    vanilla_accuracy: float = 0.6,
) -> Path:
    """A run whose metrics.json is what the real scorers give on its per-sample predictions (unlike
    `write_run_dir`, whose predictions are placeholders), so intervals and paired tests can be checked.

    task "shapes" is scored with exact_match, "pope" with the POPE metric (three categories); a schedule's answers
    are vanilla's with a share flipped (SAMPLED_FLIPS), so schedules are paired on the same samples.
    """
    from pdrop_eval.metrics import get_metric

    rng = random.Random(seed)
    run_dir = root / name
    metric_name = "pope" if task == "pope" else "exact_match"
    metric = get_metric(metric_name)
    golds = [rng.choice(["yes", "no"]) if task == "pope" else rng.choice(["red", "blue", "green"]) for _ in range(n)]
    metas = [{"category": POPE_CATEGORIES[i % 3]} if task == "pope" else {} for i in range(n)]
    vanilla = [g if rng.random() < vanilla_accuracy else _other(g, task) for g in golds]
    by_label = {s.label: s for s in standard_schedules()}
    by_label["pdrop_lam0.254_8-16-24"] = FixtureSchedule(
        "pdrop_lam0.254_8-16-24", "pdrop", 0.254, (8, 16, 24), tuple(0.254 ** (s + 1) for s in range(3)), "compact"
    )
    results = []
    for label, flip in SAMPLED_FLIPS.items():
        schedule = by_label[label]
        answers = [_other(a, task) if rng.random() < flip else a for a in vanilla]
        per_layer = tokens_per_layer(schedule, 576)
        records = []
        for i, (answer, gold, meta) in enumerate(zip(answers, golds, metas)):
            score = metric.score(answer, gold, meta)
            records.append({
                "id": i, "prompt": f"<image>\nWhat colour is shape {i}?", "prediction": answer, "gold": gold,
                "score": score, "scores": {metric_name: score}, "meta": meta,
                "num_image_tokens": 576, "kept_image_indices": kept_indices(schedule, i % 3, (24, 24)) if i < 2 else [],
                "image_tokens_per_layer": per_layer, "flops_paper": paper_tflops(per_layer) * 1e12,
                "flops_exact": 2 * paper_tflops(per_layer) * 1e12,
            })
        predictions = f"predictions/{task}/{label}.jsonl"
        (run_dir / predictions).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / predictions).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        from pdrop_eval.metrics import ScoredRecord

        metrics = metric.aggregate([ScoredRecord(r["id"], r["prediction"], r["gold"], r["score"], r["meta"])
                                    for r in records])
        results.append({
            "task": task,
            "schedule": {"label": label, "method": schedule.method, "lam": schedule.lam,
                         "layers": list(schedule.layers), "ratios": list(schedule.ratios),
                         "positions": schedule.positions},
            "n": n, "metrics": metrics, "primary_metric": metric.primary, "primary": metrics[metric.primary],
            "tflops_paper": paper_tflops(per_layer), "tflops_exact": 2 * paper_tflops(per_layer),
            "retained_tokens": sum(per_layer) / NUM_LAYERS, "predictions": predictions,
        })
    for sample_id in SAMPLE_IDS[:2]:
        write_sample_png(run_dir / "samples" / task / f"{sample_id}.png", sample_id)
    info = _task_info(task)
    info.update(metrics=[metric_name], primary_metric=metric.primary, max_new_tokens=max_new_tokens)
    metrics_json = {
        "run": {
            "name": name, "created": "2026-11-30T10:00:00+00:00", "command": ["run_eval.py"], "git_sha": "abc123",
            "model": {"name": model, "kind": "llava", "dtype": "float32", "attn": "sdpa", "device": "cpu",
                      "num_layers": NUM_LAYERS, "image_grid": [24, 24]},
            "settings": {"batch_size": 8, "limit": n, "max_new_tokens": max_new_tokens, "scorer": "native"},
        },
        "tasks": {task: info},
        "results": results,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics_json, indent=2), encoding="utf-8")
    return run_dir


def _other(answer: str, task: str) -> str:
    if task == "pope":
        return "no" if answer == "yes" else "yes"
    return {"red": "blue", "blue": "green", "green": "red"}[answer]
