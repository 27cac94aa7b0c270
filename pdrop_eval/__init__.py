"""pdrop-eval: evaluate PyramidDrop and rival visual-token pruning methods on LLaVA-style models."""

from pdrop_eval.errors import PdropEvalError

__all__ = ["PdropEvalError"]
__version__ = "0.1.0"
