"""Ranking in half precision rounds where the official PyramidDrop code rounds, so it keeps the tokens that code keeps.

The reference below transcribes `pdrop_rank_drop` (Cooperx521/PyramidDrop, llava/model/modeling_llama_pdrop.py) for
one sample: logits in the model's dtype divided by sqrt(head_dim), softmax in float32 cast back to the model's dtype,
mean over heads, then top-k over the image slice alone. The query is projected for the last token only, as the engine
does: projecting every token would give the same row in exact arithmetic, and we test the rounding after it.
"""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from pdrop_eval.pyramid.engine import DecoderParts, _select_image_tokens
from pdrop_eval.pyramid.ranking import last_query_attention

pytestmark = pytest.mark.engine

IMAGE_START, IMAGE_TOKENS, LENGTH = 5, 48, 70


def _layer_and_inputs(dtype: torch.dtype, seed: int):
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=256,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval().to(dtype)
    parts = DecoderParts.from_model(model)
    hidden = torch.randn(1, LENGTH, config.hidden_size, generator=torch.Generator().manual_seed(seed)).to(dtype)
    positions = torch.arange(LENGTH)[None]
    return parts, hidden, parts.rotary_emb(hidden, positions)


def _official_scores(layer, hidden, position_embeddings) -> torch.Tensor:
    attention = layer.self_attn
    head_dim = attention.head_dim
    normed = layer.input_layernorm(hidden)
    query = attention.q_proj(normed[:, -1:]).view(1, 1, -1, head_dim).transpose(1, 2)
    key = attention.k_proj(normed).view(1, LENGTH, -1, head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    query = apply_rotary_pos_emb(query, query, cos[:, -1:], sin[:, -1:])[0]
    key = apply_rotary_pos_emb(key, key, cos, sin)[0]
    weights = torch.matmul(query[0], key[0].transpose(1, 2)) / math.sqrt(head_dim)  # [heads, 1, L]
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(hidden.dtype)
    return weights.mean(dim=0).mean(dim=0)[IMAGE_START : IMAGE_START + IMAGE_TOKENS]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_ranking_keeps_what_the_official_code_keeps(dtype):
    keep = IMAGE_TOKENS // 4
    image_mask = torch.zeros(1, LENGTH, dtype=torch.bool)
    image_mask[0, IMAGE_START : IMAGE_START + IMAGE_TOKENS] = True
    tied_at_boundary = 0
    for seed in range(8):
        parts, hidden, position_embeddings = _layer_and_inputs(dtype, seed)
        with torch.no_grad():
            official = _official_scores(parts.layers[0], hidden, position_embeddings)
            ours = last_query_attention(parts.layers[0], hidden, position_embeddings, torch.ones(1, LENGTH).bool())
            selected = _select_image_tokens(ours, image_mask, torch.tensor([keep]), keep, IMAGE_TOKENS)
        assert ours.dtype == dtype
        assert torch.equal(ours[0, IMAGE_START : IMAGE_START + IMAGE_TOKENS], official)
        expected = (official.topk(keep).indices.sort().values + IMAGE_START).tolist()
        assert selected[0].nonzero().flatten().tolist() == expected
        ranked = official.sort(descending=True).values
        tied_at_boundary += bool(ranked[keep - 1] == ranked[keep])
    assert tied_at_boundary > 0, "no seed put a tie at the keep boundary: the test would not see tie-breaking"
