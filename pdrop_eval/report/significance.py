"""Is a difference noise? 95% bootstrap intervals per score, paired tests per Δ vs vanilla, agreement with vanilla.

Everything is recomputed from the per-sample predictions on disk (`predictions/<task>/<schedule>.jsonl`), so an
old run gets intervals too. The resampled unit is what the metric scores independently: a sample, or for MMBench a
question with all its circular rotations (VLMEvalKit `mcq_circular_eval` scores the group, not the row).

Each score's statistic is rebuilt from per-unit values with the task's own metric functions (per-sample scores,
`circular_hits`, POPE's `pope_answer` and F1) and checked against the metric's `aggregate` on the full set before
it is used; a metric with no vectorised statistic is bootstrapped by calling its `aggregate` on resampled records
(fewer resamples, it is slower). Resampling is seeded, so a rebuilt report prints the same intervals.

Paired tests use only the units both schedules scored: a paired bootstrap gives the Δ interval (same resampled
units for both schedules), and the p-value is McNemar's exact test when both scores are per-unit 0/1 means
(Efron & Tibshirani 1993, ch. 16; McNemar 1947), else the paired bootstrap's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import ScoredRecord, get_metric
from pdrop_eval.metrics.choice import circular_hits
from pdrop_eval.metrics.mme import PERCEPTION, QUESTIONS_PER_IMAGE
from pdrop_eval.metrics.yesno import pope_answer
from pdrop_eval.report.load import Run, iter_records

RESAMPLES = 1000
SLOW_RESAMPLES = 200
SEED = 0
CONFIDENCE = 0.95
_CHUNK = 100
# Per-sample scores whose primary is their plain mean ×100 (checked against `aggregate` before use).
_MEAN_OF_SCORES = frozenset({"exact_match", "vqa_accuracy", "mcq_accuracy", "anls", "relaxed_accuracy", "ocrvqa_exact"})
SIGNIFICANCE_COLUMNS = (
    "ci_low",
    "ci_high",
    "delta_low",
    "delta_high",
    "p_value",
    "test",
    "agreement",
    "paired_n",
    "significance_note",
)


@dataclass(frozen=True)
class Units:
    """A schedule's scored units: their keys, and how to compute the primary from per-unit resampling weights.

    `statistic(weights)` takes a (replicates × units) array of how often each unit was drawn and returns one value
    per replicate; weights of all ones give the score itself. `binary` marks per-unit 0/1 values averaged (McNemar
    applies), `values` holds them then.
    """

    keys: list[str]
    statistic: Callable[[np.ndarray], np.ndarray]
    binary: bool = False
    values: np.ndarray | None = None
    resamples: int = RESAMPLES

    def subset(self, keys: Sequence[str]) -> Units:
        """The same statistic over only `keys` (the units two schedules share), in that order."""
        position = {key: i for i, key in enumerate(self.keys)}
        index = np.array([position[key] for key in keys], dtype=int)

        def statistic(weights: np.ndarray) -> np.ndarray:
            full = np.zeros((weights.shape[0], len(self.keys)))
            full[:, index] = weights
            return self.statistic(full)

        values = None if self.values is None else self.values[index]
        return Units(list(keys), statistic, self.binary, values, self.resamples)


def _weighted_mean(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def statistic(weights: np.ndarray) -> np.ndarray:
        return weights @ values / weights.sum(axis=1) * 100

    return statistic


def _scored(records: list[dict[str, Any]], metric_name: str) -> list[ScoredRecord]:
    return [
        ScoredRecord(
            id=r["id"],
            prediction=r["prediction"],
            gold=r["gold"],
            score=float((r.get("scores") or {}).get(metric_name, r.get("score", math.nan))),
            meta=r.get("meta") or {},
        )
        for r in records
    ]


def _mean_units(scored: list[ScoredRecord]) -> Units:
    values = np.array([r.score for r in scored], dtype=float)
    binary = bool(np.isin(values, (0.0, 1.0)).all())
    return Units([str(r.id) for r in scored], _weighted_mean(values), binary, values)


def _circular_units(scored: list[ScoredRecord]) -> Units:
    hits = circular_hits(scored)
    values = np.array([hit for _, hit in hits.values()], dtype=float)
    return Units([str(base) for base in hits], _weighted_mean(values), True, values)


def _pope_units(scored: list[ScoredRecord]) -> Units:
    """POPE's paper number: F1 per category from weighted confusion counts, averaged over categories."""
    categories = sorted({str(r.meta.get("category")) for r in scored})
    category = np.array([categories.index(str(r.meta.get("category"))) for r in scored])
    answer = np.array([pope_answer(r.prediction) for r in scored])
    gold = np.array([r.gold for r in scored])
    masks = [(category == c) for c in range(len(categories))]
    tp = [m & (answer == "yes") & (gold == "yes") for m in masks]
    fp = [m & (answer == "yes") & (gold == "no") for m in masks]
    fn = [m & (answer == "no") & (gold == "yes") for m in masks]

    def statistic(weights: np.ndarray) -> np.ndarray:
        f1s = []
        for c in range(len(categories)):
            t, f_pos, f_neg = weights @ tp[c], weights @ fp[c], weights @ fn[c]
            precision = np.divide(t, t + f_pos, out=np.zeros_like(t), where=(t + f_pos) > 0)
            recall = np.divide(t, t + f_neg, out=np.zeros_like(t), where=(t + f_neg) > 0)
            total = precision + recall
            f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(t), where=total > 0)
            present = weights @ masks[c] > 0
            f1s.append(np.where(present, f1, np.nan))
        return np.nanmean(np.vstack(f1s), axis=0) * 100

    return Units([str(r.id) for r in scored], statistic)


def _mme_units(scored: list[ScoredRecord]) -> Units:
    """MME's perception total resampled by image: an image's two questions stay together (acc+ pairs them), and
    each replicate sums (acc + acc+)·100 over the perception subtasks as calculation.py does; NaN when a subtask is
    missing, as the official total is."""
    images: dict[tuple[str, str], list[float]] = {}
    for r in scored:
        images.setdefault((str(r.meta.get("category")), str(r.meta.get("image"))), []).append(r.score)
    keys = list(images)
    right = np.array([sum(hits) for hits in images.values()], dtype=float)
    asked = np.array([len(hits) for hits in images.values()], dtype=float)
    both = (right == QUESTIONS_PER_IMAGE).astype(float)
    subtask = np.array([key[0] for key in keys])
    masks = [subtask == name for name in PERCEPTION]

    def statistic(weights: np.ndarray) -> np.ndarray:
        if not all(mask.any() for mask in masks):
            return np.full(weights.shape[0], math.nan)
        total = np.zeros(weights.shape[0])
        for mask in masks:
            w = weights[:, mask]
            drawn = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                total += (w @ right[mask]) / (w @ asked[mask]) * 100 + (w @ both[mask]) / drawn * 100
        return total

    return Units([f"{category}/{image}" for category, image in keys], statistic)


def _aggregate_units(scored: list[ScoredRecord], metric_name: str, primary: str) -> Units:
    """Any other metric: its own `aggregate` on records drawn with repetition (weights say how often)."""
    metric = get_metric(metric_name)

    def statistic(weights: np.ndarray) -> np.ndarray:
        out = []
        for row in weights:
            drawn = [record for record, times in zip(scored, row) for _ in range(int(times))]
            out.append(metric.aggregate(drawn).get(primary, math.nan))
        return np.array(out, dtype=float)

    return Units([str(r.id) for r in scored], statistic, resamples=SLOW_RESAMPLES)


_UNITS: dict[str, Callable[[list[ScoredRecord]], Units]] = {
    **{name: _mean_units for name in _MEAN_OF_SCORES},
    "mmbench_circular": _circular_units,
    "pope": _pope_units,
    "mme": _mme_units,
}


def schedule_units(records: list[dict[str, Any]], metric_name: str, primary: str, stored: float) -> Units:
    """The units of one schedule; the vectorised statistic is used only if it reproduces `aggregate` exactly."""
    scored = _scored(records, metric_name)
    metric = get_metric(metric_name)
    official = metric.aggregate(scored).get(primary, math.nan)
    if not _close(official, stored):
        raise PdropEvalError(
            f"predictions on disk give {primary} {official:.4f} but metrics.json says {stored:.4f}: "
            "rerun the evaluation to rescore"
        )
    build = _UNITS.get(metric_name)
    if build is not None:
        units = build(scored)
        if _close(float(units.statistic(np.ones((1, len(units.keys))))[0]), official):
            return units
    return _aggregate_units(scored, metric_name, primary)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))


def _replicate_weights(rng: np.random.Generator, units: int, replicates: int) -> np.ndarray:
    """How often each unit is drawn in each of `replicates` resamples of `units` units with replacement."""
    draws = rng.integers(0, units, size=(replicates, units)) + units * np.arange(replicates)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * units).reshape(replicates, units).astype(float)


def _bootstrap(units: Units, other: Units | None = None) -> np.ndarray:
    """Replicate values of `units`' statistic, or of its difference to `other` on the same draws (paired)."""
    rng = np.random.default_rng(SEED)
    resamples = min(units.resamples, other.resamples) if other else units.resamples
    out = []
    for start in range(0, resamples, _CHUNK):
        weights = _replicate_weights(rng, len(units.keys), min(_CHUNK, resamples - start))
        value = units.statistic(weights)
        out.append(value - other.statistic(weights) if other else value)
    return np.concatenate(out)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_p(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs under a fair coin."""
    gained = int(((ours == 1) & (theirs == 0)).sum())
    lost = int(((ours == 0) & (theirs == 1)).sum())
    discordant = gained + lost
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def _bootstrap_p(deltas: np.ndarray, observed: float) -> float:
    """Share of centred paired-bootstrap Δs at least as far from 0 as the one observed (two-sided)."""
    deltas = deltas[~np.isnan(deltas)]
    if not len(deltas) or math.isnan(observed):
        return math.nan  # no total to compare (e.g. MME cut by --limit)
    extreme = np.abs(deltas - deltas.mean()) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (1 + len(deltas)))


def _agreement(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[float, int]:
    """Share of shared samples where both schedules answered the very same text (whitespace-stripped)."""
    by_id = {str(r["id"]): str(r["prediction"]).strip() for r in theirs}
    same = [str(r["prediction"]).strip() == by_id[str(r["id"])] for r in ours if str(r["id"]) in by_id]
    return (sum(same) / len(same) * 100 if same else math.nan), len(same)


def read_records(run_dir: Path, relative: str, n: float) -> list[dict[str, Any]]:
    """A schedule's stored records, the first `n` of them: the runner writes the run's samples first, in order."""
    path = run_dir / relative
    if not relative or not path.is_file():
        raise PdropEvalError(f"no predictions file {path}")
    records = list(iter_records(path))
    return records[: int(n)] if not math.isnan(n) else records


def significance_frame(runs: list[Run], frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s index with SIGNIFICANCE_COLUMNS: why a value is missing is said in `significance_note`."""
    out = pd.DataFrame(index=frame.index, columns=list(SIGNIFICANCE_COLUMNS), dtype=object)
    out[["ci_low", "ci_high", "delta_low", "delta_high", "p_value", "agreement", "paired_n"]] = math.nan
    out[["test", "significance_note"]] = ""
    tasks = {run.name: run.tasks for run in runs}
    for (run, task), rows in frame.groupby(["run", "task"], sort=False):
        card = tasks.get(run, {}).get(task) or {}
        metric_names = card.get("metrics") or []
        if not metric_names:
            out.loc[rows.index, "significance_note"] = "metrics.json names no metric for this task"
            continue
        loaded: dict[Any, tuple[list[dict[str, Any]], Units]] = {}
        for index, row in rows.iterrows():
            try:
                records = read_records(Path(row["run_dir"]), row["predictions"], row["n"])
                units = schedule_units(records, metric_names[0], row["primary_metric"], row["primary"])
            except PdropEvalError as err:
                out.at[index, "significance_note"] = str(err)
                continue
            loaded[index] = (records, units)
            out.at[index, "ci_low"], out.at[index, "ci_high"] = _interval(_bootstrap(units))
        vanilla = [i for i in rows.index[rows["method"] == "vanilla"] if i in loaded]
        if vanilla:
            _paired(out, loaded, vanilla[0])
    return out


def _paired(out: pd.DataFrame, loaded: dict[Any, tuple[list, Units]], base: Any) -> None:
    base_records, base_units = loaded[base]
    for index, (records, units) in loaded.items():
        if index == base:
            continue
        shared = [key for key in units.keys if key in set(base_units.keys)]
        if not shared:
            out.at[index, "significance_note"] = "no sample in common with vanilla"
            continue
        ours, theirs = units.subset(shared), base_units.subset(shared)
        deltas = _bootstrap(ours, theirs)
        out.at[index, "delta_low"], out.at[index, "delta_high"] = _interval(deltas)
        if ours.binary and theirs.binary:
            out.at[index, "p_value"], out.at[index, "test"] = mcnemar_p(ours.values, theirs.values), "McNemar"
        else:
            ones = np.ones((1, len(shared)))
            observed = float(ours.statistic(ones)[0] - theirs.statistic(ones)[0])
            out.at[index, "p_value"], out.at[index, "test"] = _bootstrap_p(deltas, observed), "paired bootstrap"
        out.at[index, "agreement"], out.at[index, "paired_n"] = _agreement(records, base_records)
