"""Scorers that reproduce the official evaluators, one module per family, looked up by name from task cards.

| name               | task            | gold                      | meta used                                    | primary             |
|--------------------|-----------------|---------------------------|----------------------------------------------|---------------------|
| `exact_match`      | GQA, shapes     | answer string             | -                                            | `accuracy`          |
| `vqa_accuracy`     | TextVQA         | list of the 10 answers    | -                                            | `accuracy`          |
| `pope`             | POPE            | "yes" / "no"              | `category`                                   | `f1_mean`           |
| `mmbench_circular` | MMBench en, cn  | option letter             | `options`, `index`, `category`, `l2-category`| `circular_accuracy` |
| `mcq_accuracy`     | MMStar          | option letter             | `options`, `category`, `l2-category`         | `accuracy`          |
| `anls`             | DocVQA, InfoVQA | answer list (or string)   | `split` / `category` (optional breakdown)    | `anls`              |
| `relaxed_accuracy` | ChartQA         | answer list (or string)   | `split` (optional breakdown)                 | `relaxed_accuracy`  |
| `ocrvqa_exact`     | OCRVQA          | answer list (or string)   | `split` / `category` (optional breakdown)    | `accuracy`          |
| `scienceqa_accuracy` | ScienceQA-IMG | option letter           | -                                            | `accuracy`          |
| `mme`              | MME             | "Yes" / "No"              | `category` (subtask), `image`                | `perception`        |
| `seed_image`       | SEED-Bench img  | option letter             | `question_id`, `question_type` (+ `_id`)     | `accuracy`          |
"""

from __future__ import annotations

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.anls import ANLS
from pdrop_eval.metrics.base import Metric, ScoredRecord
from pdrop_eval.metrics.choice import MCQ_ACCURACY, MMBENCH_CIRCULAR
from pdrop_eval.metrics.exact import EXACT_MATCH, OCRVQA_EXACT
from pdrop_eval.metrics.mme import MME
from pdrop_eval.metrics.relaxed import RELAXED_ACCURACY
from pdrop_eval.metrics.scienceqa import SCIENCEQA_ACCURACY
from pdrop_eval.metrics.seed import SEED_IMAGE
from pdrop_eval.metrics.vqa import VQA_ACCURACY
from pdrop_eval.metrics.yesno import POPE

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        EXACT_MATCH,
        VQA_ACCURACY,
        POPE,
        MMBENCH_CIRCULAR,
        MCQ_ACCURACY,
        ANLS,
        RELAXED_ACCURACY,
        OCRVQA_EXACT,
        SCIENCEQA_ACCURACY,
        MME,
        SEED_IMAGE,
    )
}


def get_metric(name: str) -> Metric:
    """The registered metric called `name`; an unknown name is a user error that lists the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise PdropEvalError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None


__all__ = ["METRICS", "Metric", "ScoredRecord", "get_metric"]
