"""SparseVLM+ (Zhang et al., "SparseVLM+: Visual Token Sparsification with Improved Text-Visual Attention Pattern",
2025): text raters rank image tokens by their attention inside the LLM, at three layers.

Official code: Gumpest/SparseVLMs@26a5f48, llava/model/language_model/modelling_sparse_llama.py `LlamaModel.forward`
(rater selection, the sparse layers, the RoPE bias) and llava/model/language_model/score.py (`sparse_token_dict`,
`attn_postprocess_topk`, `select_attn_head_by_sum`). The repository's README presents SparseVLM+ (`USE_VERSION=2_0`,
"Version 2.0", released 2025/12/11) as its newest release on the main branch, v1.5 living on its own `v1.5` branch;
the code's environment default is still `1_0` (v1.5). We implement 2.0, the version the repository calls current.

Exact semantics, per prompt whose image span is [s, s + N) followed by T text tokens:
- raters, once, from the LLM's input embeddings E: M = E[image] @ E[text after image]ᵀ [N, T], softmax over the T
  text tokens, mean over the N image tokens → a [T] vector m; raters are the text tokens with m > mean(m) (strict);
- at `pruning_loc` 2, 6, 15 (0-based layer indices) the layer runs in full on every token (its KV cache keeps them
  all), then ITS OUTPUT is pruned: A = that layer's softmax attention (causal, at the current positions, per query
  head), divided elementwise by the RoPE bias B[i, j] = (RoPE_i 1)·(RoPE_j 1)/√head_dim (the attention all-ones q
  and k would get, SparseVLM+ §4.2); of A's rows at the raters and columns at the current image tokens, the `heads`
  (14) query heads with the largest sum are kept (§4.3), averaged over those heads, then over the raters → one
  score per image token; the top min(k_s, n_s − 1) image tokens by score stay (n_s: image tokens present, k_s: the
  s-th entry of the keep list for RETAIN_TOKN; n_s = 0 keeps nothing and prunes nothing). No deleted token is
  merged back in 2.0;
- survivors keep their original positions (`positions="original"`, `batch_index_select(position_ids, …)`); every
  decode step is at position L + t in every layer.

Keep lists (score.py, 2.0 column): RETAIN_TOKN 192 → (300, 200, 118), 128 → (238, 108, 60), 96 → (246, 54, 28),
64 → (66, 34, 20). A budget maps to `retain_tokens`; `keep_counts` overrides the list (for other models or tests).
With 576 image tokens and 32 layers, 192 gives 3·576 + 4·300 + 9·200 + 16·118 layer-tokens.

Where we differ, and why: the official code is batch-1-only (it takes batch 0's head sums and rater indices for
every row, and `mask[0][indices]`); we choose per sample from its own span, so a batch of four equals four single
runs. It computes the full L×L attention and bias matrices; we recompute only the rater rows (q for the raters, k
for all tokens of that layer's input, counted in the overhead) and the bias only at rater × image entries — the
same numbers. Its softmax runs in the model's dtype; ours in float32 cast back to it, as every ranking here does.
There is no setting that keeps every token: even a keep list above n_s drops one image token per sparse layer
(`min(k, n − 1)`). SparseVLM v1.5 (`USE_VERSION=1_0`: recycling deleted tokens by density-peak clustering, compact
positions) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, Prepared, PruningMethod
from pdrop_eval.pyramid.ranking import _model_rope, _scaled

if TYPE_CHECKING:
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape

KEEP_LISTS: dict[int, tuple[int, ...]] = {
    192: (300, 200, 118),
    128: (238, 108, 60),
    96: (246, 54, 28),
    64: (66, 34, 20),
}


def text_raters(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> list[int]:
    """Indices, among the T text tokens after the image, of the raters (`LlamaModel.forward`, "Select Text Raters").

    image_embeds: [N, d]; text_embeds: [T, d], both the LLM's input embeddings."""
    affinity = (image_embeds @ text_embeds.T).softmax(dim=1).mean(dim=0)
    return (affinity > affinity.mean()).nonzero().flatten().tolist()


def image_span(image_mask: torch.Tensor, valid: torch.Tensor) -> tuple[int, int, int]:
    """(image start, image count, text tokens after it) in one left-padded row, columns counted from the first real
    token; SparseVLM's spans assume one contiguous image."""
    offset = int((~valid).sum())
    columns = image_mask.nonzero().flatten()
    if columns.numel() == 0:
        raise PdropEvalError("SparseVLM needs image tokens in every prompt: a sample has none")
    start, count = int(columns[0]) - offset, int(columns.numel())
    if int(columns[-1]) - int(columns[0]) + 1 != count:
        raise PdropEvalError("SparseVLM needs each prompt's image tokens in one contiguous span")
    return start, count, valid.shape[0] - offset - start - count


def rater_scores(
    layer: torch.nn.Module,
    layer_input: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    rater_columns: torch.Tensor,
    image_columns: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    """SparseVLM+'s score of each image token in one unpadded prompt: `layer`'s attention from the raters, divided by
    the RoPE bias, over the `heads` heads paying the image most, averaged over those heads and the raters.

    layer_input: [1, n, d] the layer's input; position_embeddings: (cos, sin) [1, n, hd]; columns index the n tokens.
    """
    attention = layer.self_attn
    head_dim = attention.head_dim
    normed = layer.input_layernorm(layer_input)
    length = normed.shape[1]
    query = attention.q_proj(normed[:, rater_columns]).view(1, rater_columns.numel(), -1, head_dim)
    key = attention.k_proj(normed).view(1, length, -1, head_dim)
    if getattr(attention, "q_norm", None) is not None:
        query = attention.q_norm(query)
    if getattr(attention, "k_norm", None) is not None:
        key = attention.k_norm(key)
    cos, sin = position_embeddings
    rope = _model_rope(attention)
    query = rope(query.transpose(1, 2), cos[:, rater_columns], sin[:, rater_columns])  # [1, H, R, hd]
    key = rope(key.transpose(1, 2), cos, sin)  # [1, Hkv, n, hd]
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # repeat_kv
    logits = _scaled(query @ key.transpose(-1, -2), attention)  # [1, H, R, n]
    future = torch.arange(length, device=logits.device)[None, :] > rater_columns[:, None]
    probs = logits.masked_fill(future, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(layer_input.dtype)
    probs = probs[..., image_columns]  # [1, H, R, V]
    ones = rope(layer_input.new_ones(1, 1, length, head_dim), cos, sin)[0, 0]  # RoPE applied to an all-ones vector
    bias = ones[rater_columns] @ ones[image_columns].T / head_dim**0.5  # [R, V]
    corrected = probs[0] / bias
    chosen = corrected.sum(dim=(1, 2)).topk(heads).indices
    return corrected[chosen].mean(dim=0).mean(dim=0)


@dataclass(frozen=True)
class SparseVLM(PruningMethod):
    """Settings named as the official code names them (`RETAIN_TOKN`, `pruning_loc`, the 14 priority heads)."""

    name = "sparsevlm"
    display_name = "SparseVLM+"
    default_positions = "original"

    positions: PositionMode = "original"
    retain_tokens: int = 192
    keep_counts: tuple[int, ...] | None = None
    pruning_loc: tuple[int, ...] = (2, 6, 15)
    heads: int = 14

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "pruning_loc", tuple(self.pruning_loc))
        if self.keep_counts is not None:
            object.__setattr__(self, "keep_counts", tuple(self.keep_counts))
        elif self.retain_tokens not in KEEP_LISTS:
            raise PdropEvalError(
                f"SparseVLM retain_tokens={self.retain_tokens!r} has no official keep list: use one of "
                f"{', '.join(map(str, KEEP_LISTS))}, or give keep_counts"
            )
        for setting, values, least in (("pruning_loc", self.pruning_loc, 0), ("keep_counts", self.counts, 1)):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < least for v in values):
                raise PdropEvalError(f"SparseVLM {setting}={list(values)} must be whole numbers >= {least}")
        if any(b <= a for a, b in zip(self.pruning_loc, self.pruning_loc[1:])):
            raise PdropEvalError(f"SparseVLM pruning_loc={list(self.pruning_loc)} must be strictly increasing")
        if len(self.counts) != len(self.pruning_loc):
            raise PdropEvalError(
                f"SparseVLM has {len(self.pruning_loc)} sparse layers but {len(self.counts)} keep counts: give one "
                "keep count per layer"
            )
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise PdropEvalError(f"SparseVLM heads={self.heads!r} must be a whole number >= 1 (official: 14)")

    @property
    def counts(self) -> tuple[int, ...]:
        """The keep list in force: `keep_counts`, or the official one for `retain_tokens`."""
        return self.keep_counts if self.keep_counts is not None else KEEP_LISTS[self.retain_tokens]

    @property
    def label(self) -> str:
        budget = f"r{self.retain_tokens}" if self.keep_counts is None else "k" + "-".join(map(str, self.keep_counts))
        where = "" if self.pruning_loc == (2, 6, 15) else "_l" + "-".join(map(str, self.pruning_loc))
        heads = "" if self.heads == 14 else f"_h{self.heads}"
        suffix = "" if self.positions == self.default_positions else f"_{self.positions}"
        return f"sparsevlm_v2_{budget}{where}{heads}{suffix}"

    @property
    def stage_layers(self) -> tuple[int, ...]:
        """Pruning the output of 0-based layer l is a boundary after l + 1 layers."""
        return tuple(layer + 1 for layer in self.pruning_loc)

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """`min(k_s, n_s − 1)` applied stage by stage from the N that entered the LLM (n_s = 0 prunes nothing)."""
        present = num_image_tokens
        for keep in self.counts[: stage + 1]:
            present = min(keep, present - 1) if present > 0 else 0
        return present

    def prepare(self, inputs_embeds: torch.Tensor, valid: torch.Tensor, image_mask: torch.Tensor) -> Prepared:
        """Per sample, the raters as distances from the prompt's end: text after the image is never dropped, so the
        same distance finds the same rater at every sparse layer."""
        from_end, counts = [], []
        for row in range(inputs_embeds.shape[0]):
            start, count, text = image_span(image_mask[row], valid[row])
            embeds = inputs_embeds[row, valid[row]]
            raters = text_raters(embeds[start : start + count], embeds[start + count :])
            if not raters:
                raise PdropEvalError(
                    f"SparseVLM found no text raters for a prompt with {text} text tokens after the image (all tie "
                    "at the mean): put the question after the image"
                )
            from_end.append(torch.tensor([text - r for r in raters], device=inputs_embeds.device))
            counts.append({"raters": len(raters), "text_after_image": text})
        return Prepared(state=from_end, sample_counts=counts)

    def validate_for_depth(self, num_layers: int) -> None:
        if self.pruning_loc[-1] >= num_layers - 1:
            raise PdropEvalError(
                f"SparseVLM pruning_loc {list(self.pruning_loc)} needs a layer after the last one: the model has "
                f"{num_layers} decoder layers, so pruning_loc must be below {num_layers - 1}"
            )

    def score(self, boundary: Boundary) -> torch.Tensor:
        layer = boundary.layers[boundary.layer - 1]
        heads = layer.self_attn.q_proj.out_features // layer.self_attn.head_dim
        if self.heads > heads:
            raise PdropEvalError(
                f"SparseVLM heads={self.heads} exceeds the model's {heads} attention heads: lower heads"
            )
        scores = torch.zeros(boundary.valid.shape, dtype=torch.float32, device=boundary.valid.device)
        cos, sin = boundary.position_embeddings
        for row, from_end in enumerate(boundary.prepared):
            valid = boundary.valid[row]
            offset = int((~valid).sum())
            image = boundary.image_mask[row, offset:].nonzero().flatten()
            if image.numel() == 0:
                continue
            length = valid.shape[0] - offset
            relation = rater_scores(
                layer,
                boundary.last_input[row : row + 1, offset:],
                (cos[row : row + 1, offset:], sin[row : row + 1, offset:]),
                length - from_end,
                image,
                self.heads,
            )
            scores[row, image + offset] = relation.float()
        return scores

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Rater affinities once (N·T·d), then at each sparse layer: q for the raters, k for every token, their
        logits in every head, and the RoPE bias at rater × image entries."""
        text = shape.text
        raters, after = trace.method_counts["raters"], trace.method_counts["text_after_image"]
        total = 2 * trace.image_tokens_per_layer[0] * after * text.hidden
        for layer in self.stage_layers:
            tokens, images = trace.tokens_per_layer[layer - 1], trace.image_tokens_per_layer[layer - 1]
            total += 2 * raters * text.hidden * text.heads * text.head_dim
            total += 2 * tokens * text.hidden * text.kv_heads * text.head_dim
            total += 2 * text.heads * raters * tokens * text.head_dim
            total += 2 * raters * images * text.head_dim
        return total

    def record(self) -> dict:
        settings = {
            "version": "2.0",
            "retain_tokens": self.retain_tokens if self.keep_counts is None else None,
            "keep_counts": list(self.counts),
            "pruning_loc": list(self.pruning_loc),
            "heads": self.heads,
        }
        return {**super().record(), **settings}
