"""How image tokens are ranked at a drop boundary.

PyramidDrop ranks by the attention that the last prompt token (the last instruction token) pays to each image
token in the NEXT layer; FastV by that of the layer that just ran. Only that one query row is needed, so we project
q for one token per sample instead of the whole sequence as the official code does.
"""

from __future__ import annotations

import math
import sys
import zlib

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama-style rotary embedding; x is [B, H, L, hd], cos/sin are [B, L, hd]."""
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def _model_rope(attention: nn.Module):
    """The architecture's own `apply_rotary_pos_emb` where its modeling module has one, so the ranking rotates
    q and k exactly as the layer itself will. That function rotates a (q, k) pair; the partner we hand it is a
    single head of the same tensor, so the unused half of its work stays small."""
    apply = getattr(sys.modules.get(type(attention).__module__), "apply_rotary_pos_emb", None)
    if apply is None:
        return _rope

    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply(x, x[:, :1], cos, sin)[0]

    return rope


def last_query_attention(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    key_valid: torch.Tensor,
) -> torch.Tensor:
    """Head-averaged softmax attention of the last token over all keys, as `layer` would compute it.

    hidden_states: [B, L, d], the layer's input (left padded, so the last column is every sample's last prompt
    token). key_valid: [B, L] bool, False for padding. Returns [B, L] in the model's dtype; padding gets 0.

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
    rope = _model_rope(attention)
    query = rope(query, cos[:, -1:], sin[:, -1:])
    key = rope(key, cos, sin)

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
    layer: nn.Module, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The keys `layer` computes from its input `hidden_states` [B, L, d]: input norm, k_proj (and k_norm where the
    architecture has one), RoPE at the given positions; [B, kv_heads, L, head_dim] in the model's dtype."""
    attention = layer.self_attn
    batch, length, _ = hidden_states.shape
    key = attention.k_proj(layer.input_layernorm(hidden_states)).view(batch, length, -1, attention.head_dim)
    if getattr(attention, "k_norm", None) is not None:
        key = attention.k_norm(key)
    cos, sin = position_embeddings
    return _model_rope(attention)(key.transpose(1, 2), cos, sin)
