"""Every pruning method by name: the CLI, plan, budget sweep and report look methods up here instead of spelling
names out, so a new method file plus one line below is all a new method needs."""

from __future__ import annotations

from collections.abc import Mapping

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.dart import DART
from pdrop_eval.methods.divprune import DivPrune
from pdrop_eval.methods.downsample import Downsample
from pdrop_eval.methods.fastv import FastV
from pdrop_eval.methods.pdrop import PDrop
from pdrop_eval.methods.random import RandomDrop
from pdrop_eval.methods.sparsevlm import SparseVLM
from pdrop_eval.methods.vanilla import Vanilla
from pdrop_eval.methods.visionzip import VisionZip

METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (Vanilla, PDrop, FastV, RandomDrop, DivPrune, Downsample, VisionZip, DART, SparseVLM)
}


def method_class(name: str) -> type[PruningMethod]:
    """The class registered under `name`, or one line naming the known methods."""
    try:
        return METHODS[name]
    except KeyError:
        raise PdropEvalError(f"unknown pruning method {name!r}: choose from {', '.join(METHODS)}") from None


def display_name(name: str) -> str:
    """How a report names the method recorded as `name` (a name from an older or newer run is shown as is)."""
    cls = METHODS.get(name)
    return cls.display_name if cls is not None else name


def method_colour(name: str) -> str:
    """One colour per method in every plot (matplotlib's tab10 cycle, in registry order); grey for a method this
    version does not know."""
    names = list(METHODS)
    return f"C{names.index(name) % 10}" if name in METHODS else "0.5"


def method_marker(name: str) -> str:
    cls = METHODS.get(name)
    return cls.marker if cls is not None else "s"


def describe_row(row: Mapping) -> str:
    """A result row's legend name (keys as the report's results frame: method, layers text, ratios, lam,
    positions, schedule), by the method's own `describe`; a method this version does not know, by its label."""
    cls = METHODS.get(row["method"])
    return cls.describe(row) if cls is not None else str(row["schedule"])


def describe_record(record: Mapping) -> str:
    """A schedule record's (PruningMethod.record) legend name, for console lines."""
    lam = record.get("lam")
    row = {
        "method": record["method"],
        "layers": "-".join(str(v) for v in record.get("layers") or []),
        "ratios": tuple(record.get("ratios") or ()),
        "lam": float("nan") if lam is None else float(lam),
        "positions": record.get("positions") or "",
        "schedule": record["label"],
    }
    return describe_row(row)
