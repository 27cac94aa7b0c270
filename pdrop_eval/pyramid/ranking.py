"""How image tokens are ranked at a drop boundary.

PyramidDrop ranks by the attention that the last prompt token (the last instruction token) pays to each image
token in the NEXT layer; FastV by that of the layer that just ran. Only that one query row is needed, so we project
q for one token per sample instead of the whole sequence as the official code does.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from pdrop_eval.families.positions import RotaryFunction, module_rotary


def last_query_attention(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    key_valid: torch.Tensor,
    rotary: RotaryFunction = module_rotary,
) -> torch.Tensor:
    """Head-averaged softmax attention of the last token over all keys, as `layer` would compute it.

    hidden_states: [B, L, d], the layer's input (left padded, so the last column is every sample's last prompt
    token). key_valid: [B, L] bool, False for padding. `rotary` is the model family's rotary rule
    (`Boundary.rotary`). Returns [B, L] in the model's dtype; padding gets 0.

    Rounding follows the official code (PyramidDrop `pdrop_rank_drop`, FastV's eager attention): logits in the
    model's dtype divided by sqrt(head_dim), softmax in float32 cast back to the model's dtype, then the mean over
    heads. In float16/bfloat16 that rounding creates the ties the official top-k sees; ranking in float32 would
    keep other tokens there. In float32 every step is exact either way.
    """
    attention = layer.self_attn
    head_dim = attention.head_dim
    normed = layer.input_layernorm(hidden_states)
    batch, length, _ = normed.shape

    query = attention.q_proj(normed[:, -1:]).view(batch, 1, -1, head_dim)
    key = attention.k_proj(normed).view(batch, length, -1, head_dim)
    if getattr(attention, "q_norm", None) is not None:
        query = attention.q_norm(query)
    if getattr(attention, "k_norm", None) is not None:
        key = attention.k_norm(key)
    query, key = query.transpose(1, 2), key.transpose(1, 2)  # [B, H, 1, hd], [B, Hkv, L, hd]

    cos, sin = position_embeddings
    query = rotary(attention, query, cos[:, -1:], sin[:, -1:])
    key = rotary(attention, key, cos, sin)

    heads, kv_heads = query.shape[1], key.shape[1]
    query = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)  # group query heads by kv head
    logits = _scaled(torch.matmul(query, key.transpose(-1, -2)), attention)  # [B, Hkv, groups, L]
    logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1, dtype=torch.float32).to(hidden_states.dtype).mean(dim=(1, 2))


def _scaled(logits: torch.Tensor, attention: nn.Module) -> torch.Tensor:
    """The official code divides by sqrt(head_dim); multiplying by HF's `scaling` can differ by an ulp in half
    precision, so divide wherever the two mean the same (architectures with another scale keep theirs)."""
    root = math.sqrt(attention.head_dim)
    if math.isclose(attention.scaling * root, 1.0, rel_tol=1e-12):
        return logits / root
    return logits * attention.scaling


def random_scores(
    image_ordinal: torch.Tensor, num_image_tokens: list[int], sample_seeds: list[int], seed: int, stage: int
) -> torch.Tensor:
    """Uniform scores drawn per sample from (schedule seed, sample seed, stage) and indexed by each image token's
    original ordinal, so a sample gets the same random drops whatever batch (and padding) it lands in.

    image_ordinal: [B, L], the index of each image token among its sample's image tokens, -1 elsewhere.
    """
    rows = []
    for row, count, sample_seed in zip(image_ordinal.cpu(), num_image_tokens, sample_seeds):
        generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{sample_seed}:{stage}".encode()))
        draws = torch.rand(max(count, 1), generator=generator)
        rows.append(torch.where(row >= 0, draws[row.clamp(min=0)], 0.0))
    return torch.stack(rows).to(image_ordinal.device)


def rotated_keys(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    rotary: RotaryFunction = module_rotary,
) -> torch.Tensor:
    """The keys `layer` computes from its input `hidden_states` [B, L, d]: input norm, k_proj (and k_norm where the
    architecture has one), RoPE at the given positions; [B, kv_heads, L, head_dim] in the model's dtype."""
    attention = layer.self_attn
    batch, length, _ = hidden_states.shape
    key = attention.k_proj(layer.input_layernorm(hidden_states)).view(batch, length, -1, attention.head_dim)
    if getattr(attention, "k_norm", None) is not None:
        key = attention.k_norm(key)
    cos, sin = position_embeddings
    return rotary(attention, key.transpose(1, 2), cos, sin)
