"""Every pruning method by name, for the CLI, plan and report to look up instead of spelling names out (they still
spell vanilla, pdrop, fastv and random; the `--methods` sweep of issue 11 item 3 is to read this)."""

from __future__ import annotations

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
