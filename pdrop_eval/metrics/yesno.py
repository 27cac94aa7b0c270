"""POPE exactly as LLaVA scores it (`llava/eval/eval_pope.py`), with lmms-eval's rule as a labelled extra.

Parsing (LLaVA): keep the text before the first "."; delete commas; split on single spaces; the answer is "no"
when one of the words is exactly "No", "no" or "not", else "yes". So "Not sure" is a yes (capital "Not" is not
in the list) while "I am not sure" is a no, and an empty answer is a yes. Per category (adversarial, popular,
random): TP/FP/TN/FN with "yes" as the positive class, accuracy, precision, recall, F1 and the share of "yes"
predictions. The paper's POPE number is the mean F1 over the three categories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import Metric, ScoredRecord, empty_result, require_meta

_NO_WORDS = frozenset({"No", "no", "not"})


def pope_answer(prediction: str) -> str:
    """LLaVA `eval_pope` parsing: "no" if the first sentence holds the word No / no / not, else "yes"."""
    first_sentence = prediction.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if _NO_WORDS.intersection(words) else "yes"


def _label(gold: Any) -> str:
    """LLaVA maps the label "no" to negative and anything else to positive; we insist on yes/no to catch bad joins."""
    if gold not in ("yes", "no"):
        raise PdropEvalError(f"metric 'pope' needs gold 'yes' or 'no', got {gold!r}; check the POPE label join")
    return gold


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    return 1.0 if pope_answer(prediction) == _label(gold) else 0.0


@dataclass(frozen=True)
class Confusion:
    """Counts with "yes" as the positive class, and LLaVA's rates (0.0 where LLaVA would divide by zero)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]]) -> Confusion:
        """From (predicted, gold) pairs of "yes"/"no"."""
        return cls(
            tp=sum(p == "yes" and g == "yes" for p, g in pairs),
            fp=sum(p == "yes" and g == "no" for p, g in pairs),
            tn=sum(p == "no" and g == "no" for p, g in pairs),
            fn=sum(p == "no" and g == "yes" for p, g in pairs),
        )

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def yes_ratio(self) -> float:
        return (self.tp + self.fp) / self.n


def _category_keys(category: str, c: Confusion) -> dict[str, float]:
    return {
        f"accuracy/{category}": c.accuracy * 100,
        f"precision/{category}": c.precision * 100,
        f"recall/{category}": c.recall * 100,
        f"f1/{category}": c.f1 * 100,
        f"yes_pct/{category}": c.yes_ratio * 100,
        f"n/{category}": float(c.n),
        f"tp/{category}": float(c.tp),
        f"fp/{category}": float(c.fp),
        f"tn/{category}": float(c.tn),
        f"fn/{category}": float(c.fn),
    }


def _lmms_eval_keys(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """lmms-eval 0.7.3 `pope/utils.py` (`pope_process_results`, `pope_aggregate_*`) over all records, pooled: the
    prediction must equal "yes"/"no" after lower().strip(); anything else is wrong for accuracy and falls out of
    precision/recall entirely. Its `pope_yes_ratio` counts gold labels, not predictions, so it has no column here."""
    pairs = [(r.prediction.lower().strip(), r.gold) for r in records]
    c = Confusion.of(pairs)
    return {
        "lmms_eval/accuracy": sum(p == g for p, g in pairs) / len(pairs) * 100,
        "lmms_eval/precision": c.precision * 100,
        "lmms_eval/recall": c.recall * 100,
        "lmms_eval/f1": c.f1 * 100,
    }


def _answer(record: ScoredRecord) -> str:
    """The parsed answer; a failed sample (no prediction) counts as the wrong one, whatever its label."""
    if record.failed:
        return "no" if _label(record.gold) == "yes" else "yes"
    return pope_answer(record.prediction)


def _aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """Per-category LLaVA metrics, their means (`f1_mean` is the paper's POPE), and lmms-eval's pooled numbers."""
    if not records:
        return empty_result("f1_mean")
    by_category: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        category = str(require_meta(r.meta, "category", "pope", r.id))
        by_category.setdefault(category, []).append((_answer(r), _label(r.gold)))
    out: dict[str, float] = {}
    confusions = {cat: Confusion.of(pairs) for cat, pairs in sorted(by_category.items())}
    for cat, c in confusions.items():
        out.update(_category_keys(cat, c))
    out["f1_mean"] = sum(c.f1 for c in confusions.values()) / len(confusions) * 100
    out["accuracy_mean"] = sum(c.accuracy for c in confusions.values()) / len(confusions) * 100
    out["n"] = float(len(records))
    out.update(_lmms_eval_keys(records))
    return out


POPE = Metric(
    name="pope",
    primary="f1_mean",
    score=_score,
    aggregate=_aggregate,
    reference="LLaVA llava/eval/eval_pope.py (per category; paper = mean F1 over categories)",
)
