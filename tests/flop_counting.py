"""One way for every method test to hold our FLOP count against torch's FlopCounterMode.

FlopCounterMode does not see CPU SDPA kernels, so whole generations are counted on eager-attention models (plain
matmuls). Whole generations keep a 2% allowance: on transformers 5.17.0 FlopCounterMode counts a few thousand
FLOPs more (~1e-5 relative) than on 5.24, which exact equality would fail; parts that are not lost in the LLM's
total (a method's own selection, the tower side) are compared exactly with `flops_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from torch.utils.flop_counter import FlopCounterMode

from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.models import build_batch
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.pyramid.engine import SampleTrace
from pdrop_eval.pyramid.flops import ModelShape, SampleFlops, sample_flops
from pdrop_eval.pyramid.vlm import generate

GENERATION_ALLOWANCE = 0.02
Result = TypeVar("Result")


def flops_of(call: Callable[[], Result]) -> tuple[Result, int]:
    """What `call` returns and the FLOPs FlopCounterMode saw it spend."""
    counter = FlopCounterMode(display=False)
    with counter:
        result = call()
    return result, counter.get_total_flops()


@dataclass(frozen=True)
class CountedGeneration:
    trace: SampleTrace
    shape: ModelShape
    ours: SampleFlops
    measured: int


def count_generation(
    loaded: LoadedVLM, method: PruningMethod, prompt: str, image, max_new_tokens: int = 3
) -> CountedGeneration:
    """`method` generating for one prompt and image under FlopCounterMode, with our count of the same sample; asserts
    the two agree within the allowance."""
    if loaded.model.config._attn_implementation != "eager":
        raise ValueError("count FLOPs on an eager-attention model: FlopCounterMode does not see CPU SDPA kernels")
    shape = ModelShape.from_config(loaded.model.config)
    batch = build_batch(loaded, [prompt], [image])
    result, measured = flops_of(
        lambda: generate(
            loaded.model,
            batch.input_ids,
            batch.attention_mask,
            method,
            pixel_values=batch.pixel_values,
            image_sizes=batch.image_sizes,
            max_new_tokens=max_new_tokens,
        )
    )
    trace = result.generations[0].trace
    counted = CountedGeneration(trace, shape, sample_flops(shape, trace), measured)
    assert counted.ours.exact == pytest.approx(measured, rel=GENERATION_ALLOWANCE)
    return counted
