"""The evaluation loop: data checked first, model loaded once, each image encoded once for the whole sweep.

For every batch of a task the vision tower runs once, then every schedule that still lacks those samples generates
from the same features, so a sweep of N schedules costs clearly less than N runs. Predictions are appended and
fsynced per batch (resume is the default); rank 0 merges the shards of all processes, scores, and writes
metrics.json and the reports atomically, for every task × schedule the run folder holds, not only this command's.
One command at a time owns a run folder (pdrop_eval.lock).

A sample whose input cannot be used (`SampleError`: a missing, corrupt or oversized image, a literal `<image>` in
its prompt) is recorded as failed with its reason, scored wrong, and the run goes on; the next run retries it (the
user may have fixed the file). When more than half of a task's first FAILURE_WINDOW samples fail, the data itself
is broken and the run stops with one error line, keeping what it wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pdrop_eval import __version__, batch_check
from pdrop_eval.batch_size import choose_batch_size
from pdrop_eval.data.hf import HFTable
from pdrop_eval.data.sample import Sample
from pdrop_eval.distributed import World, barrier, broadcast_from_main, current_world, device_for, finish, init, shard
from pdrop_eval.errors import PdropEvalError, RefusedOnEveryRank, SampleError
from pdrop_eval.lock import FolderLock
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.budgets import BudgetChoice, ModelGeometry, resolve_budgets
from pdrop_eval.methods.registry import describe_record
from pdrop_eval.metrics import ScoredRecord, get_metric
from pdrop_eval.model_geometry import llava_geometry, read_model_geometry
from pdrop_eval.models import LoadedVLM, decode, image_token_count, load_vlm
from pdrop_eval.models.images import to_rgb
from pdrop_eval.pipeline import BatchPipeline, PreparedBatch, default_workers, varies_in_length
from pdrop_eval.plan import RunPlan, method_classes, schedule_record
from pdrop_eval.progress import TaskProgress, is_terminal, quiet_loading_bars
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.flops import ModelShape, sample_flops
from pdrop_eval.pyramid.timing import Stopwatch
from pdrop_eval.pyramid.vlm import count_crops, encode_images, generate
from pdrop_eval.registry import ResolvedSource, Task, check_data, get_task, load_samples
from pdrop_eval.run_folder import (
    held_labels,
    in_recorded_order,
    other_held_tasks,
    previous_metrics,
    previous_rows,
    read_run_file,
    record_contents,
    schedule_records,
)
from pdrop_eval.store import (
    ShardWriter,
    atomic_path,
    is_failed,
    merge_shards,
    read_predictions,
    remove_stale_temporaries,
    write_json_atomic,
)
from pdrop_eval.store import merged_path as predictions_path

if TYPE_CHECKING:
    from pdrop_eval.report import ReportPaths

SAMPLE_IMAGES_PER_TASK = 4
RESUME_SETTINGS = ("model", "dtype", "attn", "max_new_tokens", "seed", "scorer")
FAILURE_WINDOW = 32  # a task's first samples judged together: more than half failing means broken data
# What finishing a run reads from each stored record; a record missing one was edited or damaged on disk.
FAILED_FIELDS = ("prediction", "gold", "meta")
RECORD_FIELDS = (*FAILED_FIELDS, "flops_paper", "flops_exact", "image_tokens_per_layer", "timing")
# metrics.json `run.timing`: how the speed columns were measured, so a reader can tell what they mean.
TIMING_NOTE = (
    "model time only: each batch's vision-tower pass (shared among the schedules that reuse it), prefill and "
    "decode, synchronised with the GPU; reading and preprocessing run ahead in data workers and are not counted. "
    "The first batch each process ran of each task x schedule is warm-up (kernel selection, memory-pool growth, "
    "lazy initialisation) and is left out of prefill_ms, decode_ms_per_token and samples_per_s; each result's "
    "`timing` counts the timed and warm-up samples (a task x schedule with only warm-up batches is timed on them "
    "and says `includes_warmup`)"
)


@dataclass
class TaskData:
    task: Task
    source: ResolvedSource
    samples: list[Sample]


def _resolved_dtype(dtype: str, device: torch.device) -> str:
    """`auto`: float16 on GPU (as LLaVA's own evaluation runs), float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float16" if device.type == "cuda" else "float32"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{current_world().rank}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise PdropEvalError(
            f"cannot write to the output directory {run_dir} ({error.strerror}): choose another with --output-dir"
        ) from error


def _settings(plan: RunPlan, dtype: str, tasks: list[TaskData]) -> dict[str, Any]:
    return {
        "model": plan.model,
        "dtype": dtype,
        "attn": plan.attn,
        "max_new_tokens": plan.max_new_tokens,
        "seed": plan.seed,
        "scorer": plan.scorer,
        "data": {
            data.task.name: {
                "source": f"{data.source.source.format} {data.source.where}",
                "prompt_suffix": data.task.prompt_suffix,
                "max_new_tokens": plan.max_new_tokens or data.task.max_new_tokens,
            }
            for data in tasks
        },
    }


def _check_resume(run_dir: Path, settings: dict[str, Any], world: World) -> None:
    """Refuse to mix predictions made under other settings, or from other data, into this run; say which differs.
    Tasks new to the run are added to what it records."""
    path = run_dir / "run.json"
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PdropEvalError(f"{path} is not valid JSON: rerun with --overwrite to start afresh") from error
        if not isinstance(stored, dict):
            raise PdropEvalError(f"{path} is not a JSON object: rerun with --overwrite to start afresh")
        for key in RESUME_SETTINGS:
            if stored.get(key) != settings.get(key):
                raise PdropEvalError(
                    f"run {run_dir} was made with {key}={stored.get(key)!r} but this command asks for "
                    f"{settings.get(key)!r}: use the same setting to resume, another --run-name, or --overwrite"
                )
        for task, now in settings["data"].items():
            before = stored.get("data", {}).get(task)
            if before is None:
                continue
            for key, value in now.items():
                if before.get(key) != value:
                    raise PdropEvalError(
                        f"run {run_dir} ran task {task} with {key}={before.get(key)!r}, this command gives "
                        f"{value!r}: resume with the same data and task card, or use another --run-name or --overwrite"
                    )
    merged = {**stored, **settings, "data": {**stored.get("data", {}), **settings["data"]}}
    if world.is_main and merged != stored:
        write_json_atomic(path, merged)


def _clear_run(run_dir: Path) -> None:
    import shutil

    for name in (
        "predictions",
        "samples",
        "vlmeval",
        batch_check.FOLDER,
        "report_files",
        "metrics.json",
        "run.json",
        "results.xlsx",
        "report.md",
        "report.html",
    ):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _vlmeval_tsv(task: Task, source: ResolvedSource) -> Path | None:
    """The VLMEvalKit TSV `--scorer vlmeval` scores against, or None when the task has no VLMEvalKit scorer.

    VLMEvalKit rebuilds its dataset from `$LMUData/<name>.tsv` (and would try to download it otherwise), so the task
    must have been read from exactly that file, not from another TSV such as LLaVA's MMBench copy.
    """
    if task.vlmeval_dataset is None:
        return None
    tsv = source.paths.get("tsv")
    expected = f"{task.vlmeval_dataset}.tsv"
    if source.source.spec.location != "lmu_data" or tsv is None or Path(tsv).name != expected:
        raise PdropEvalError(
            f"--scorer vlmeval scores {task.name} against VLMEvalKit's {expected} in $LMUData, but "
            f"its data was found as {source.source.format} ({source.where}): put the TSV there, or use --scorer native"
        )
    return Path(tsv)


def prepare_tasks(plan: RunPlan) -> list[TaskData]:
    """Every task's card and data, before any model is loaded: a missing file should cost seconds, not a load."""
    tasks = [get_task(name, plan.tasks_dir) for name in plan.tasks]
    sources = [check_data(task, plan.data_root) for task in tasks]
    for task, source in zip(tasks, sources):
        for metric in task.metrics:
            get_metric(metric)
        if plan.scorer == "vlmeval":
            _vlmeval_tsv(task, source)
    return [
        TaskData(task, source, load_samples(task, plan.data_root, plan.limit, source=source.source.format))
        for task, source in zip(tasks, sources)
    ]


def _sample_key(sample: Sample) -> str:
    return str(sample.id)


def _sample_seed(task: str, sample: Sample) -> int:
    return zlib.crc32(f"{task}:{sample.id}".encode())


def _trim_left_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Drop leading columns that are padding in every row (a sub-batch may not need the batch's longest prompt)."""
    first = int(attention_mask.any(0).nonzero()[0])
    return input_ids[:, first:], attention_mask[:, first:]


def _scores(task: Task, prediction: str, gold: Any, meta: dict[str, Any]) -> dict[str, float]:
    return {name: get_metric(name).score(prediction, gold, meta) for name in task.metrics}


def _rescored(task: Task, label: str, record: dict[str, Any]) -> dict[str, Any]:
    """A stored record scored again by today's metrics, so a scorer fix or a changed card applies to old runs;
    a failed sample scores 0 on every metric."""
    missing = [key for key in (FAILED_FIELDS if is_failed(record) else RECORD_FIELDS) if key not in record]
    if missing:
        raise PdropEvalError(
            f"the stored prediction of sample {record['id']!r} in {predictions_path(Path('.'), task.name, label)} "
            f"lacks {missing}: the file was edited or damaged; delete that line to recompute the sample, or rerun "
            "with --overwrite"
        )
    if is_failed(record):
        scores = {name: 0.0 for name in task.metrics}
    else:
        scores = _scores(task, record["prediction"], record["gold"], record["meta"])
    return {**record, "score": scores[task.metrics[0]], "scores": scores}


def _failed_record(task: Task, sample: Sample, reason: str) -> dict[str, Any]:
    """What a failed sample leaves in the predictions: no answer, score 0, and why."""
    return {
        "id": sample.id,
        "prompt": sample.prompt,
        "prediction": "",
        "gold": sample.gold,
        "score": 0.0,
        "scores": {name: 0.0 for name in task.metrics},
        "meta": sample.meta,
        "image_source": sample.image_source,
        "failed": reason,
    }


@dataclass
class FailureWatch:
    """Tells one odd sample (recorded, the run goes on) from a broken dataset (the run stops): judged once, over
    the first min(FAILURE_WINDOW, total) of this process's samples of the task. Samples a previous run finished
    count as good ones at the front (`tried` starts at their number), so retrying the one odd sample of a finished
    run does not look like a broken dataset."""

    task: str
    total: int
    tried: int = 0
    early_failures: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def window(self) -> int:
        return min(FAILURE_WINDOW, self.total)

    def add(self, outcomes: list[str | None]) -> None:
        """Record a batch, in sample order: each sample's failure reason, or None when it could be used."""
        judged = self.tried >= self.window
        for reason in outcomes:
            if reason is not None:
                self.reasons.append(reason)
                self.early_failures += self.tried < self.window
            self.tried += 1
        if not judged and self.tried >= self.window and 2 * self.early_failures > self.window:
            raise PdropEvalError(
                f"task {self.task}: {self.early_failures} of its first {self.window} samples failed (first: "
                f"{self.reasons[0]}); the data looks broken, not one odd sample: fix or download it again, then rerun "
                "the same command (failed samples are retried, finished ones kept)"
            )


def _record(
    task: Task,
    sample: Sample,
    prediction: str,
    generation,
    shape: ModelShape,
    timing: dict[str, float],
) -> dict[str, Any]:
    trace = generation.trace
    scores = _scores(task, prediction, sample.gold, sample.meta)
    flops = sample_flops(shape, trace)
    return {
        "id": sample.id,
        "prompt": sample.prompt,
        "prediction": prediction,
        "gold": sample.gold,
        "score": scores[task.metrics[0]],
        "scores": scores,
        "meta": sample.meta,
        "image_source": sample.image_source,
        "num_image_tokens": trace.num_image_tokens,
        "kept_image_indices": trace.kept_image_indices,
        "kept_feature_indices": trace.kept_feature_indices,
        "image_tokens_per_layer": trace.image_tokens_per_layer,
        "tokens_per_layer": trace.tokens_per_layer,
        "generated_tokens": trace.generated_tokens,
        "vision_crops": trace.vision_crops,
        "vision_grid": list(trace.vision_grid) if trace.vision_grid else None,
        "flops_paper": flops.paper,
        "flops_exact": flops.exact,
        "timing": timing,
    }


class TaskEvaluator:
    """Runs one task's pending samples through every schedule, appending each batch's records as it finishes."""

    def __init__(self, plan: RunPlan, loaded: LoadedVLM, schedules: Sequence[PruningMethod], world: World):
        self.plan = plan
        self.loaded = loaded
        self.schedules = schedules
        self.world = world
        self.parts = DecoderParts.from_model(loaded.model, loaded.family.positions)
        self.shape = loaded.family.model_shape(loaded.model.config)
        self.warmed_up: set[tuple[str, str]] = set()  # (task, schedule) pairs that ran a batch in this process

    def run(self, data: TaskData) -> None:
        task, run_dir = data.task, self.plan.run_dir
        labels = [schedule.label for schedule in self.schedules]
        done = {
            label: {key for key, record in read_predictions(run_dir, task.name, label).items() if not is_failed(record)}
            for label in labels
        }
        mine = shard(data.samples, self.world)
        pending = [s for s in mine if any(_sample_key(s) not in done[label] for label in labels)]
        writers = {label: ShardWriter(run_dir, task.name, label, self.world.rank) for label in labels}
        progress = TaskProgress(
            task.name,
            labels,
            len(mine),
            {label: sum(_sample_key(s) in done[label] for s in mine) for label in labels},
            enabled=self.world.is_main,
        )
        max_new_tokens = self.plan.max_new_tokens or task.max_new_tokens
        watch = FailureWatch(task.name, total=len(mine), tried=len(mine) - len(pending))
        batches = BatchPipeline(
            self.loaded,
            pending,
            self.plan.batch_size,
            workers=default_workers() if self.plan.data_workers is None else self.plan.data_workers,
            by_length=self.plan.length_buckets and varies_in_length(self.loaded),
            gpu=self.loaded.device if self.loaded.device.type == "cuda" else None,
        )
        try:
            with batches:
                for prepared in batches:
                    self._record_failures(task, prepared, done, writers, progress, watch)
                    if prepared.inputs is not None:
                        self._run_batch(task, prepared, done, writers, progress, max_new_tokens)
        finally:
            progress.close()
        if watch.reasons:
            print(
                f"task {task.name}: {len(watch.reasons)} sample(s) failed and are scored wrong (first: "
                f"{watch.reasons[0]}); they are listed in the report and retried by the next run",
                file=sys.stderr,
            )

    def _record_failures(self, task, prepared: PreparedBatch, done, writers, progress, watch: FailureWatch) -> None:
        """Write each failed sample of the step as a failed record for every schedule lacking it, then let the
        watch judge the step's outcomes (it stops the run when the data looks broken)."""
        for label, writer in writers.items():
            records = [
                _failed_record(task, s, reason) for s, reason in prepared.failures if _sample_key(s) not in done[label]
            ]
            if records:
                writer.append(records)
                progress.update(label, len(records))
        if prepared.outcomes:
            watch.add(prepared.outcomes)

    def _run_batch(self, task, prepared: PreparedBatch, done, writers, progress, max_new_tokens) -> None:
        """The model's part of a step: move the prepared inputs to the device, one vision pass, every schedule."""
        loaded, batch, host = self.loaded, prepared.samples, prepared.inputs
        device = loaded.device
        inputs = host.to(device, non_blocking=True)
        with Stopwatch(device) as watch:
            features = encode_images(loaded.model, inputs.pixel_values, inputs.image_sizes)
        vision_s = watch.seconds
        crops = count_crops(loaded.model, host.image_sizes, len(batch))
        for schedule in self.schedules:
            label = schedule.label
            rows = [i for i, sample in enumerate(batch) if _sample_key(sample) not in done[label]]
            if not rows:
                continue
            index = torch.tensor(rows, device=device)
            input_ids, attention_mask = _trim_left_padding(inputs.input_ids[index], inputs.attention_mask[index])
            own_tower_pass = {}  # a method that reads the tower's internals runs it on the pixels itself
            own_tower = schedule.runs_tower(loaded.model)
            if own_tower:
                own_tower_pass["pixel_values"] = inputs.pixel_values[index]
            result = generate(
                loaded.model,
                input_ids,
                attention_mask,
                schedule,
                image_features=[features[i] for i in rows],
                # the image grids also give M-RoPE positions and windowed-tower FLOPs, so every schedule gets them
                image_sizes=None if inputs.image_sizes is None else inputs.image_sizes[index],
                **own_tower_pass,
                vision_crops=[crops[i] for i in rows],
                max_new_tokens=max_new_tokens,
                eos_token_ids=loaded.eos_token_ids,
                pad_token_id=loaded.pad_token_id,
                sample_seeds=[_sample_seed(task.name, batch[i]) for i in rows],
                parts=self.parts,
            )
            timings = result.timings
            share = timings.vision_s if own_tower else vision_s * len(rows) / len(batch)
            steps = max(max(g.trace.generated_tokens for g in result.generations) - 1, 1)
            timing = {
                "warmup": (task.name, label) not in self.warmed_up,
                "batch_size": len(rows),
                "time_share_s": (share + timings.prefill_s + timings.decode_s) / len(rows),
                "prefill_ms": timings.prefill_s * 1e3,
                "rank_ms": timings.rank_s * 1e3,
                "vision_ms": share * 1e3,
                "decode_ms_per_token": timings.decode_s * 1e3 / steps,
            }
            records = [
                _record(task, batch[i], decode(loaded, g.token_ids), g, self.shape, timing)
                for i, g in zip(rows, result.generations)
            ]
            writers[label].append(records)
            self.warmed_up.add((task.name, label))
            done[label].update(_sample_key(batch[i]) for i in rows)
            progress.update(label, len(rows))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_per_layer(profiles: Sequence[Sequence[int]]) -> list[float]:
    """Each LLM layer's image tokens averaged over samples (per-sample counts differ on LLaVA-NeXT)."""
    return [_mean(layer) for layer in zip(*profiles)] if profiles else []


def score_schedule(task: Task, schedule: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate one task × schedule (its `schedule_record`) from its records: the official metrics plus cost and
    speed."""
    metrics: dict[str, float] = {}
    for name in task.metrics:
        metric = get_metric(name)
        scored = [
            ScoredRecord(
                id=r["id"],
                prediction=r["prediction"],
                gold=r["gold"],
                score=r["scores"][name],
                meta=r["meta"],
                failed=is_failed(r),
            )
            for r in records
        ]
        metrics.update(metric.aggregate(scored))
    primary = get_metric(task.metrics[0])
    primary_metric = primary.primary
    ran = [r for r in records if not is_failed(r)]  # failed samples count in the scores, not in cost or speed
    timed = [r for r in ran if not r["timing"].get("warmup")]  # TIMING_NOTE; older records carry no flag
    measured = timed or ran
    total_time = sum(r["timing"]["time_share_s"] for r in measured)
    return {
        "task": task.name,
        "schedule": schedule,
        "n": len(records),
        "failed": len(records) - len(ran),
        "failed_samples": [{"id": r["id"], "reason": r["failed"]} for r in records if is_failed(r)],
        "metrics": metrics,
        "primary_metric": primary_metric,
        "primary_unit": primary.unit,
        "primary": metrics.get(primary_metric, math.nan),
        "tflops_paper": _mean([r["flops_paper"] for r in ran]) / 1e12,
        "tflops_exact": _mean([r["flops_exact"] for r in ran]) / 1e12,
        "retained_tokens": _mean([_mean(r["image_tokens_per_layer"]) for r in ran]),
        "image_tokens_per_layer": _mean_per_layer([r["image_tokens_per_layer"] for r in ran]),
        "prefill_ms": _mean([r["timing"]["prefill_ms"] for r in measured]),
        "decode_ms_per_token": _mean([r["timing"]["decode_ms_per_token"] for r in measured]),
        "samples_per_s": len(measured) / total_time if total_time > 0 else math.nan,
        "timing": {
            "timed_samples": len(timed),
            "warmup_samples": len(ran) - len(timed),
            "includes_warmup": bool(ran) and not timed,
        },
        "predictions": str(predictions_path(Path("."), task.name, schedule["label"])),
    }


def _flatten_scores(result: Any) -> dict[str, float]:
    """VLMEvalKit's `evaluate` returns a dict or a DataFrame of scores: flat `vlmeval/...` keys of its numbers."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        if len(result) == 1:
            result = result.iloc[0].to_dict()
        else:
            result = {f"{row}/{column}": value for row, values in result.iterrows() for column, value in values.items()}
    flat = {}
    for key, value in dict(result).items():
        try:
            flat[f"vlmeval/{key}"] = float(value)
        except (TypeError, ValueError):
            continue
    return flat


def _vlmeval_metrics(plan: RunPlan, data: TaskData, label: str, records: list[dict]) -> dict[str, float]:
    from pdrop_eval.data.vlmeval_scoring import score_with_vlmeval

    tsv = _vlmeval_tsv(data.task, data.source)
    if tsv is None:
        return {}
    predictions = {record["id"]: record["prediction"] for record in records}
    out_dir = plan.run_dir / "vlmeval" / data.task.name / label
    return _flatten_scores(score_with_vlmeval(data.task.vlmeval_dataset, tsv, predictions, out_dir))


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _file_hashes(source: ResolvedSource) -> dict[str, str]:
    """sha256 of each data file a task was read from (folders of images are named, not hashed)."""
    hashes = {}
    for role, value in source.paths.items():
        if isinstance(value, HFTable):
            value = value.files
        for path in value if isinstance(value, (list, tuple)) else [value]:
            path = Path(path)
            if path.is_file():
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                hashes[f"{role}:{path}"] = digest.hexdigest()
            else:
                hashes[f"{role}:{path}"] = "folder" if path.is_dir() else "-"
    return hashes or {"source": source.where}


def _save_sample_images(plan: RunPlan, loaded: LoadedVLM, data: TaskData) -> None:
    """The first few images as the model saw them (LLaVA-1.5: the padded square at the tower's size; NeXT: the base
    view beside its tiles), each with the JSON layout of its tokens on that picture (`ModelFamily.token_layout`),
    for kept-token maps; nothing for families that give no layout."""
    folder = plan.run_dir / "samples" / data.task.name
    for sample in data.samples[:SAMPLE_IMAGES_PER_TASK]:
        try:
            image = sample.load_image()
        except SampleError:
            continue  # recorded as a failed sample; it has no kept-token map to draw
        drawn = loaded.family.token_layout(loaded, image)
        if drawn is None:
            return
        view, layout = drawn
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / _safe_name(sample.id)
        write_json_atomic(stem.with_suffix(".json"), layout.to_json())
        with atomic_path(stem.with_suffix(".png")) as temporary:
            view.save(temporary, format="PNG")


def _safe_name(sample_id: object) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(sample_id))


def _model_info(plan: RunPlan, loaded: LoadedVLM, dtype: str, device: torch.device) -> dict[str, Any]:
    grid = loaded.family.image_grid(loaded)
    return {
        "name": plan.model,
        "path": str(loaded.path),
        "kind": loaded.kind,
        "family": loaded.family.name,
        "dtype": dtype,
        "attn": plan.attn,
        "device": str(device),
        "num_layers": DecoderParts.from_model(loaded.model).num_layers,
        "image_grid": list(grid) if grid else None,
    }


@dataclass(frozen=True)
class RunOutcome:
    """What rank 0 hands back: metrics.json's content and, unless --no-report, the report files it wrote."""

    metrics: dict[str, Any]
    report: ReportPaths | None


def _reports(plan: RunPlan) -> ReportPaths | None:
    """The spreadsheet and sweep report of the whole run folder, unless --no-report."""
    if not plan.report:
        return None
    from pdrop_eval.report import build_reports

    return build_reports([plan.run_dir])


def _task_info(task: Task, plan: RunPlan) -> dict[str, Any]:
    reference = task.reference
    return {
        "size": task.size,
        "max_new_tokens": plan.max_new_tokens or task.max_new_tokens,
        "prompt_suffix": task.prompt_suffix,
        "metrics": list(task.metrics),
        "primary_metric": get_metric(task.metrics[0]).primary,
        "reference": None
        if reference is None
        else {
            "model": reference.model,
            "source": reference.source,
            "metric": reference.metric,
            "rows": [{"method": r.method, "tflops": r.tflops, "score": r.score} for r in reference.rows],
        },
    }


def finalize(
    plan: RunPlan,
    loaded: LoadedVLM | None,
    tasks: list[TaskData],
    others: list[Task],
    schedules: Sequence[PruningMethod],
    run_info: dict,
) -> dict[str, Any]:
    """Rank 0, after every rank finished: merge shards, score and write metrics.json for every task × schedule the
    run folder holds predictions of (this command's and every earlier command's), and this command's sample images
    (only with a model loaded: a rerun of a complete run keeps the ones it saved).

    Tasks this command did not run are read as they are on disk: their vlmeval scores and data hashes come from the
    last metrics.json, since their data need not be at hand now.
    """
    previous = previous_metrics(plan.run_dir)
    before = previous_rows(previous)
    recorded = schedule_records(plan.run_dir)
    current = {data.task.name: data for data in tasks}
    ours = [schedule.label for schedule in schedules]
    previous_files = (previous.get("run") or {}).get("data_files") or {}
    results, task_info = [], {}
    for task in [*(data.task for data in tasks), *others]:
        data = current.get(task.name)
        order = [_sample_key(s) for s in data.samples] if data else []
        labels = in_recorded_order([*(ours if data else []), *held_labels(plan.run_dir, task.name)], recorded)
        for label in labels:
            if label not in recorded:
                print(
                    f"warning: {predictions_path(plan.run_dir, task.name, label)} is left out: run.json does not "
                    "record its schedule",
                    file=sys.stderr,
                )
                continue
            records = merge_shards(
                plan.run_dir,
                task.name,
                label,
                order,
                lambda record, task=task, label=label: _rescored(task, label, record),
            )
            result = score_schedule(task, recorded[label], records)
            result.update(batch_check.agreement_field(plan.run_dir, task.name, label, records))
            if plan.scorer == "vlmeval":
                result["metrics"].update(
                    _vlmeval_metrics(plan, data, label, records) if data else _kept_vlmeval(before, result)
                )
            results.append(result)
        task_info[task.name] = _task_info(task, plan)
        if data:
            if loaded is not None:
                _save_sample_images(plan, loaded, data)
            run_info["data_files"][task.name] = _file_hashes(data.source)
        elif task.name in previous_files:
            run_info["data_files"][task.name] = previous_files[task.name]
    task_order = in_recorded_order(task_info, read_run_file(plan.run_dir).get("cards", {}))
    results.sort(key=lambda result: task_order.index(result["task"]))
    run_info["commands"] = _commands(previous, run_info["command"])
    run_info["timing"] = TIMING_NOTE
    payload = {"run": run_info, "tasks": {name: task_info[name] for name in task_order}, "results": results}
    write_json_atomic(plan.run_dir / "metrics.json", payload)
    return payload


def _kept_vlmeval(before: dict[tuple[str, str], dict[str, Any]], result: dict[str, Any]) -> dict[str, float]:
    """The vlmeval scores the last metrics.json had for this row, while they still score the same predictions."""
    row = before.get((result["task"], result["schedule"]["label"]))
    if row is None or row.get("n") != result["n"]:
        return {}
    return {key: value for key, value in (row.get("metrics") or {}).items() if key.startswith("vlmeval/")}


def _commands(previous: dict[str, Any], command: list[str]) -> list[list[str]]:
    """Every distinct command line whose predictions metrics.json describes, oldest first."""
    run = previous.get("run") or {}
    earlier = run.get("commands") or ([run["command"]] if run.get("command") else [])
    return [list(c) for c in dict.fromkeys(tuple(c) for c in [*earlier, command])]


def format_table(results: list[dict[str, Any]]) -> str:
    header = ("task", "schedule", "metric", "score", "TFLOPs paper", "TFLOPs exact", "retained", "samples/s")
    rows = [
        (
            r["task"],
            r["schedule"]["label"],
            r["primary_metric"],
            f"{r['primary']:.2f}",
            f"{r['tflops_paper']:.4g}",
            f"{r['tflops_exact']:.4g}",
            f"{r['retained_tokens']:.1f}",
            f"{r['samples_per_s']:.2f}",
        )
        for r in results
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _budget_choices_before_loading(plan: RunPlan) -> list[BudgetChoice] | None:
    """Each --methods × --budget setting from the model's config.json alone (LLaVA-NeXT included: its budgets are
    a share of crops × patches), so a method that cannot run on the model or reach a budget costs seconds, not a
    model load; None where the config cannot be read before loading or the count depends on each image. The flags'
    own schedules (--baselines, --lambda) are checked against the model here too."""
    geometry = read_model_geometry(plan.model)
    if geometry is not None:
        for cls in dict.fromkeys(type(schedule) for schedule in plan.schedules):
            cls.check_model(geometry)
    if not plan.budget_methods:
        return None
    classes = method_classes(plan.budget_methods, "--methods")
    if geometry is None:
        return None
    for cls in classes:
        cls.check_model(geometry)
    if geometry.image_tokens is None:
        return None
    return resolve_budgets(classes, plan.budgets, geometry, plan.sweep)


def _budget_choices_after_loading(plan: RunPlan, loaded: LoadedVLM, tasks: list[TaskData], depth: int):
    heads = int(loaded.model.config.text_config.num_attention_heads)
    family = loaded.family
    if loaded.kind in ("llava", "llava_next"):
        geometry = dataclasses.replace(llava_geometry(loaded.model.config), num_layers=depth)
    else:
        count = loaded.image_tokens_per_image
        if count is None:
            count = image_token_count(loaded, to_rgb(_first_image(tasks)))
        anyres = loaded.kind in family.anyres_kinds
        geometry = ModelGeometry(
            depth,
            count,
            anyres=anyres,
            num_heads=heads,
            cls_token=family.vision_cls_token,
            tiling=loaded.kind if anyres else None,
        )
    return resolve_budgets(method_classes(plan.budget_methods, "--methods"), plan.budgets, geometry, plan.sweep)


def _resolve_schedules(plan: RunPlan, choices: list[BudgetChoice], depth: int) -> list[PruningMethod]:
    """This command's schedules: the flags' own, then each budget's, each printed with what it keeps."""
    schedules = list(plan.schedules)
    for choice in choices:
        if choice.method.label not in {s.label for s in schedules}:
            if choice.budget is not None:
                name = describe_record(choice.method.record())
                label = "" if choice.method.label in name else f" [{choice.method.label}]"
                print(
                    f"budget {choice.budget:g} tokens: {name}{label}, {choice.retained:.1f} image tokens per layer "
                    "on average",
                    file=sys.stderr,
                )
            schedules.append(choice.method)
    schedules = list(dict.fromkeys(schedules))
    for schedule in schedules:
        schedule.validate_for_depth(depth)
    return schedules


def _with_budget_schedules(plan: RunPlan, choices: list[BudgetChoice]) -> RunPlan:
    """The plan with its budgets' schedules added, for telling a complete run before any model loads."""
    added = [choice.method for choice in choices]
    return dataclasses.replace(plan, schedules=tuple(dict.fromkeys([*plan.schedules, *added])))


def _budget_field(budgets: dict[str, float], label: str) -> dict[str, float]:
    """The budget a schedule was chosen for, recorded so the report can set methods side by side at it."""
    return {"budget": budgets[label]} if label in budgets else {}


def _first_image(tasks: list[TaskData]):
    """The first sample image that opens: size-dependent models (NeXT) need one to count image tokens."""
    for data in tasks:
        for sample in data.samples:
            try:
                return sample.load_image()
            except SampleError:
                continue
    raise PdropEvalError("--budget needs at least one readable sample image to know the image-token count")


def _finished_run_info(plan: RunPlan, tasks: list[TaskData]) -> dict[str, Any] | None:
    """The previous metrics.json's run description when every task × schedule already has every sample on disk
    (nothing left to compute, so the model need not load), else None. `plan.schedules` must be complete: budgets
    already resolved (`_with_budget_schedules`)."""
    if plan.overwrite or not plan.schedules:
        return None
    try:
        previous = json.loads((plan.run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or not isinstance(previous.get("run"), dict):
        return None
    for data in tasks:
        wanted = {_sample_key(s) for s in data.samples}
        for schedule in plan.schedules:
            stored = read_predictions(plan.run_dir, data.task.name, schedule.label)
            if not wanted <= {key for key, record in stored.items() if not is_failed(record)}:
                return None  # samples left, or failed ones to retry
    return previous["run"]


def _rebuild_finished(
    plan: RunPlan, tasks: list[TaskData], others: list[Task], previous: dict[str, Any]
) -> dict[str, Any]:
    print(
        f"run {plan.run_dir} is already complete ({len(tasks)} task(s) × {len(plan.schedules)} schedule(s)): "
        "rescoring and rebuilding its outputs from disk without loading the model (--overwrite to recompute)",
        file=sys.stderr,
    )
    for schedule in plan.schedules:
        schedule.validate_for_depth(int((previous.get("model") or {}).get("num_layers") or 10**6))
    run_info = {**previous, "command": list(plan.command), "git_sha": _git_sha(), "data_files": {}}
    return finalize(plan, None, tasks, others, plan.schedules, run_info)


@contextmanager
def _run_folder_lock(plan: RunPlan, world: World) -> Iterator[None]:
    """The run folder for this command alone: rank 0 takes the lock and every rank learns whether it got it, so
    the ranks of one torchrun share the run and all refuse together when another command holds it."""
    lock = FolderLock(plan.run_dir) if world.is_main else None
    refusal = None
    if lock is not None:
        try:
            lock.acquire(
                ["pdrop-eval", *plan.command],
                "wait for it to finish (a killed run never holds it), or use another --run-name",
            )
        except PdropEvalError as error:
            refusal = str(error)
    refusal = broadcast_from_main(refusal, world)
    if refusal is not None:
        raise RefusedOnEveryRank(refusal)
    try:
        if lock is not None:
            remove_stale_temporaries(plan.run_dir)
        yield
    finally:
        if lock is not None:
            lock.release()


def run(plan: RunPlan) -> RunOutcome | None:
    """The whole run, holding the run folder's lock from before the model loads until the reports are written;
    returns what was written on rank 0 (None elsewhere)."""
    world = current_world()
    device = device_for(plan.device, world)
    dtype = _resolved_dtype(plan.dtype, device)
    _check_writable(plan.run_dir)
    tasks = prepare_tasks(plan)
    init(world, device)
    with _run_folder_lock(plan, world):
        outcome = _run_locked(plan, world, device, dtype, tasks)
    finish(world)
    return outcome


def _batch_checks_left(plan: RunPlan, tasks: list[TaskData]) -> bool:
    """Whether --check-batch-effect still has samples to run at batch 1 (then the model must load)."""
    return plan.check_batch_effect > 0 and any(
        batch_check.pending(
            plan.run_dir, data.task.name, schedule.label, data.samples, _sample_key, plan.check_batch_effect
        )
        for data in tasks
        for schedule in plan.schedules
    )


def _check_batch_effect(plan: RunPlan, loaded: LoadedVLM, schedules: Sequence[PruningMethod], tasks: list[TaskData]):
    """Rank 0, once every rank's predictions are on disk: the first K samples of each task × schedule at batch 1."""
    print(
        f"batch effect: rerunning the first {plan.check_batch_effect} sample(s) of each task × schedule at batch 1",
        file=sys.stderr,
    )
    with torch.inference_mode():
        for data in tasks:
            batch_check.run_checks(
                plan.run_dir,
                loaded,
                data.task.name,
                data.samples,
                schedules,
                plan.check_batch_effect,
                plan.max_new_tokens or data.task.max_new_tokens,
                key=_sample_key,
                seed=lambda sample, task=data.task.name: _sample_seed(task, sample),
            )


def _with_auto_batch_size(
    plan: RunPlan,
    loaded: LoadedVLM,
    schedules: Sequence[PruningMethod],
    tasks: list[TaskData],
    device: torch.device,
    world: World,
) -> RunPlan:
    """The plan with the batch size `--batch-size auto` measured on this rank's device (each rank its own GPU)."""
    samples = [sample for data in tasks for sample in data.samples]
    longest = max((plan.max_new_tokens or data.task.max_new_tokens for data in tasks), default=1)
    largest = max((len(shard(data.samples, world)) for data in tasks), default=1)
    with torch.inference_mode():
        auto = choose_batch_size(loaded, schedules, samples, longest, device, largest)
    if world.is_main:
        print(auto.line, file=sys.stderr)
    return dataclasses.replace(plan, batch_size=auto.size)


def _run_locked(
    plan: RunPlan, world: World, device: torch.device, dtype: str, tasks: list[TaskData]
) -> RunOutcome | None:
    others = [] if plan.overwrite else other_held_tasks(plan.run_dir, [d.task.name for d in tasks], plan.tasks_dir)
    choices = _budget_choices_before_loading(plan)
    if not plan.budget_methods:
        known: RunPlan | None = plan
    else:  # None: the config could not be read before loading (an original-format checkpoint)
        known = None if choices is None else _with_budget_schedules(plan, choices)
    if (
        world.size == 1
        and known is not None
        and not _batch_checks_left(known, tasks)
        and (previous := _finished_run_info(known, tasks)) is not None
    ):
        _check_resume(plan.run_dir, _settings(plan, dtype, tasks), world)
        return RunOutcome(_rebuild_finished(known, tasks, others, previous), _reports(plan))
    torch.manual_seed(plan.seed)
    if not is_terminal():
        quiet_loading_bars()
    loaded = load_vlm(plan.model, dtype=dtype, device=str(device), attn=plan.attn)
    depth = DecoderParts.from_model(loaded.model).num_layers
    if choices is None and plan.budget_methods:
        choices = _budget_choices_after_loading(plan, loaded, tasks, depth)
    schedules = _resolve_schedules(plan, choices or [], depth)
    budgets = {choice.method.label: choice.budget for choice in choices or [] if choice.budget is not None}
    if plan.overwrite and world.is_main:
        _clear_run(plan.run_dir)
    barrier(world)
    _check_resume(plan.run_dir, _settings(plan, dtype, tasks), world)
    if world.is_main:
        cards = {data.task.name: str(data.task.card) if data.task.card else None for data in tasks}
        records = [{**schedule_record(s), **_budget_field(budgets, s.label)} for s in schedules]
        record_contents(plan.run_dir, cards, records)
    barrier(world)  # recorded before any rank writes a prediction, so a kill leaves nothing undescribable
    if plan.auto_batch_size:
        plan = _with_auto_batch_size(plan, loaded, schedules, tasks, device, world)
    evaluator = TaskEvaluator(plan, loaded, schedules, world)
    with torch.inference_mode():
        for data in tasks:
            evaluator.run(data)
    barrier(world)
    if plan.check_batch_effect and world.is_main:
        _check_batch_effect(plan, loaded, schedules, tasks)
    outcome = None
    if world.is_main:
        run_info = {
            "name": plan.run_name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": list(plan.command),
            "git_sha": _git_sha(),
            "versions": {
                "pdrop_eval": __version__,
                "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
                "python": platform.python_version(),
            },
            "model": _model_info(plan, loaded, dtype, device),
            "seed": plan.seed,
            "settings": {
                "batch_size": plan.batch_size,
                "batch_size_auto": plan.auto_batch_size,
                "limit": plan.limit,
                "max_new_tokens": plan.max_new_tokens,
                "world_size": world.size,
                "scorer": plan.scorer,
                "position_mode": plan.position_mode,
                "position_mode_from": plan.position_mode_from,
                "length_buckets": plan.length_buckets and varies_in_length(loaded),
            },
            "data_files": {},
        }
        outcome = RunOutcome(finalize(plan, loaded, tasks, others, schedules, run_info), _reports(plan))
    barrier(world)
    return outcome
