"""Pruning methods as plugins: one small class per method on the `PruningMethod` interface (see base.py)."""

from pdrop_eval.methods.base import Boundary, Prepared, PruningMethod, ReducedFeatures
from pdrop_eval.methods.registry import METHODS, display_name, method_class

__all__ = ["METHODS", "Boundary", "Prepared", "PruningMethod", "ReducedFeatures", "display_name", "method_class"]
