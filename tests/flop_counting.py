"""One way for every FLOP test to hold our count against torch's FlopCounterMode, exactly, on every transformers.

FlopCounterMode does not see CPU SDPA kernels, so whole generations are counted on eager-attention models (plain
matmuls). The exact convention counts matrix products and leaves elementwise work out (pdrop_eval.pyramid.flops).
The rotary module's cos/sin table is elementwise by nature (the outer product of the inverse frequencies and the
positions, one multiply per entry, nothing summed), but transformers 5.17 writes it as a batched matmul with an
inner dimension of 1, which FlopCounterMode counts (2 · head_dim/2 · tokens per call), while 5.24 writes it so that
it does not. Taking the rotary modules' share out makes both versions equal the convention to the FLOP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch.utils.flop_counter import FlopCounterMode

from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.models import build_batch
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.pyramid.engine import SampleTrace
from pdrop_eval.pyramid.flops import ModelShape, SampleFlops, sample_flops
from pdrop_eval.pyramid.vlm import generate

Result = TypeVar("Result")


def _is_rotary_table(module_path: str) -> bool:
    name = module_path.rsplit(".", 1)[-1]
    return name == "rotary_emb" or name.endswith("RotaryEmbedding")


def counted_matmul_flops(counter: FlopCounterMode) -> int:
    """The counter's total less what it counted inside rotary modules (module docstring)."""
    tables = sum(sum(per_op.values()) for path, per_op in counter.get_flop_counts().items() if _is_rotary_table(path))
    return counter.get_total_flops() - tables


def flops_of(call: Callable[[], Result]) -> tuple[Result, int]:
    """What `call` returns and the matrix-product FLOPs FlopCounterMode saw it spend."""
    counter = FlopCounterMode(display=False)
    with counter:
        result = call()
    return result, counted_matmul_flops(counter)


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
    the two are equal."""
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
    assert counted.ours.exact == measured
    return counted
