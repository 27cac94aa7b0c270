"""What torch's FlopCounterMode counts that the exact convention covers, the same on every transformers version.

The exact convention counts matrix products and leaves elementwise work out (pdrop_eval.pyramid.flops). The rotary
module's cos/sin table is elementwise by nature (the outer product of the inverse frequencies and the positions, one
multiply per entry, nothing summed), but transformers 5.17 writes it as a batched matmul with an inner dimension of 1,
which FlopCounterMode counts (2 · head_dim/2 · tokens per call), while 5.24 writes it so that it does not. Taking the
rotary modules' share out makes both versions comparable to the convention exactly, to the FLOP.
"""

from torch.utils.flop_counter import FlopCounterMode


def _is_rotary_table(module_path: str) -> bool:
    name = module_path.rsplit(".", 1)[-1]
    return name == "rotary_emb" or name.endswith("RotaryEmbedding")


def counted_matmul_flops(counter: FlopCounterMode) -> int:
    """The counter's total less what it counted inside rotary modules (module docstring)."""
    tables = sum(sum(per_op.values()) for path, per_op in counter.get_flop_counts().items() if _is_rotary_table(path))
    return counter.get_total_flops() - tables
