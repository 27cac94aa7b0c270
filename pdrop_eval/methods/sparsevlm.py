"""SparseVLM (Zhang et al., ICML'25) and SparseVLM+ (Zhang et al., 2025): text raters rank image tokens by their
attention inside the LLM, at three layers; v1.5 recycles deleted tokens into merged ones, 2.0 corrects the attention.

Official code: Gumpest/SparseVLMs@26a5f48, llava/model/language_model/modelling_sparse_llama.py `LlamaModel.forward`
(rater selection, the sparse layers, the version switch, the RoPE bias, the merge), llava/model/language_model/
score.py (`sparse_token_dict`, `attn_postprocess_topk`, `select_attn_head_by_sum`) and llava/model/language_model/
utils.py `cluster_and_merge`. The repository's README presents SparseVLM+ (`USE_VERSION=2_0`, "Version 2.0",
released 2025/12/11) as its newest release on the main branch, v1.5 having its own `v1.5` branch; the code's
environment default is still `1_0` (v1.5). `version="2.0"` (the default) is the one the repository calls current;
`version="1.5"` is the code's default switch.

Exact semantics, per prompt whose image span is [s, s + N) followed by T text tokens:
- raters, once, from the LLM's input embeddings E: M = E[image] @ E[text after image]ᵀ [N, T], softmax over the T
  text tokens, mean over the N image tokens → a [T] vector m; raters are the text tokens with m > mean(m) (strict);
- at `pruning_loc` 2, 6, 15 (0-based layer indices) the layer runs in full on every token (its KV cache keeps them
  all), then ITS OUTPUT is pruned. A = that layer's softmax attention (causal, at the current positions, per query
  head), rows at the raters, columns at the current image tokens. 2.0 divides A elementwise by the RoPE bias
  B[i, j] = (RoPE_i 1)·(RoPE_j 1)/√head_dim (the attention all-ones q and k would get, SparseVLM+ §4.2) and keeps
  the `heads` (14) query heads with the largest sum of A (§4.3); 1.5 keeps every head. The mean over those heads,
  then over the raters, scores each image token; the top min(k_s, n_s − 1) stay (n_s: image tokens present, k_s:
  the s-th entry of the keep list for RETAIN_TOKN; n_s = 0 keeps nothing and prunes nothing);
- 1.5 only: of the D deleted image tokens, the int(0.3·D) + 1 with the highest scores (the layer's OUTPUT states, in
  top-k order) are merged by density-peak clustering into C = int(that / 10) + 1 tokens, inserted right after the
  kept image tokens and counted as image tokens by later layers (so n_{s+1} = kept + C). Clustering: distances
  ‖x_i − x_j‖/√d; density ρ_i = exp(−mean of the squared distances to its C nearest, itself included); δ_i = the
  distance to the nearest denser token (the largest distance for the densest); centers = top-C of ρ·δ, in that
  order; each token joins its nearest center (first on ties), a center itself; a merged token is the sum of its
  cluster over (size + 1e-6), as the official `index_add_` computes it;
- positions: 2.0 keeps original positions (`batch_index_select(position_ids, …)`) and decodes at L + t in every
  layer; 1.5 re-indexes the survivors 0..n−1 (`position_ids[:, :n]`) and decodes each layer at its own cache
  length + t (`get_usable_length`). The engine's `positions="original"` / `"compact"` are exactly these;
- decoding: neither version prunes or recycles (the sparse branch needs `hidden_states.shape[1] != 1`); the new
  token attends to each layer's cache as prefill left it.

Keep lists (score.py): RETAIN_TOKN 192 → 2.0 (300, 200, 118), 1.5 (300, 200, 110); 128 → (238, 108, 60),
(303, 110, 36); 96 → (246, 54, 28), (238, 48, 26); 64 → (66, 34, 20), (66, 30, 17). A budget maps to
`retain_tokens`; `keep_counts` overrides the list (for other models or tests). With 576 image tokens and 32
layers, 2.0 at 192 runs 3·576 + 4·300 + 9·200 + 16·118 image-token layers.

Where we differ, and why: the official code is batch-1-only (batch 0's head sums and rater indices serve every row,
`mask[0][indices]`, `relation_vis_text[0]`); we choose per sample from its own span, so a batch of four equals four
single runs. It computes the full L×L attention and bias; we compute only the rater rows (q for the raters, k for
all tokens of that layer's input, counted in the overhead) and the bias only at rater × image entries — the same
numbers. Its softmax runs in the model's dtype; ours in float32 cast back to it, as every ranking here does. Its
clustering adds uniform noise of 1e-6 to the densities "to ensure no tokens have the same density", which makes a
run irreproducible and can reorder densities closer than 1e-6; we add none and break exact ties strictly by
position (of two equally dense tokens the earlier in top-k order counts as denser), so runs repeat. There is no
setting that keeps every token: even a keep list above n_s drops one image token per sparse layer (`min(k, n − 1)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.positions import RotaryFunction, module_rotary
from pdrop_eval.methods.base import Boundary, PositionMode, Prepared, PruningMethod
from pdrop_eval.pyramid.ranking import _scaled

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape

VERSIONS = ("2.0", "1.5")
OFFICIAL_IMAGE_TOKENS = 576  # LLaVA-1.5: the keep lists below are tuned for it
KEEP_LISTS: dict[str, dict[int, tuple[int, ...]]] = {
    "2.0": {192: (300, 200, 118), 128: (238, 108, 60), 96: (246, 54, 28), 64: (66, 34, 20)},
    "1.5": {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)},
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
    heads: int | None,
    rotary: RotaryFunction = module_rotary,
) -> torch.Tensor:
    """SparseVLM's score of each image token in one unpadded prompt: `layer`'s attention from the raters, averaged
    over heads and raters. With `heads` (2.0) the attention is first divided by the RoPE bias and only the `heads`
    heads paying the image most are averaged; None (1.5) averages every head of the plain attention.

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
    query = rotary(attention, query.transpose(1, 2), cos[:, rater_columns], sin[:, rater_columns])  # [1, H, R, hd]
    key = rotary(attention, key.transpose(1, 2), cos, sin)  # [1, Hkv, n, hd]
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # repeat_kv
    logits = _scaled(query @ key.transpose(-1, -2), attention)  # [1, H, R, n]
    future = torch.arange(length, device=logits.device)[None, :] > rater_columns[:, None]
    probs = logits.masked_fill(future, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(layer_input.dtype)
    relation = probs[0][..., image_columns]  # [H, R, V]
    if heads is not None:
        ones = rotary(attention, layer_input.new_ones(1, 1, length, head_dim), cos, sin)[0, 0]  # RoPE of ones
        relation = relation / (ones[rater_columns] @ ones[image_columns].T / head_dim**0.5)
        relation = relation[relation.sum(dim=(1, 2)).topk(heads).indices]
    return relation.mean(dim=0).mean(dim=0)


def density_peak_merge(tokens: torch.Tensor, clusters: int) -> torch.Tensor:
    """`cluster_and_merge` for one sample: [M, d] tokens → [clusters, d] merged ones, centers in top-score order.

    Exact density ties go to the earlier token (the official code adds 1e-6 noise instead)."""
    count, dim = tokens.shape
    distance = (tokens[:, None] - tokens[None]).norm(dim=-1) / dim**0.5
    nearest = distance.topk(clusters, dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    order = torch.arange(count, device=tokens.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (order[None, :] < order[:, None])
    )  # denser[i, j]: token j is denser than token i
    parent_distance = torch.where(denser, distance, distance.max()).amin(dim=-1)
    centers = (parent_distance * density).topk(clusters).indices
    assignment = distance[centers].argmin(dim=0)
    assignment[centers] = torch.arange(clusters, device=tokens.device)
    sizes = tokens.new_zeros(clusters).index_add_(0, assignment, tokens.new_ones(count)) + 1e-6
    return tokens.new_zeros(clusters, dim).index_add_(0, assignment, tokens / sizes[assignment, None])


@dataclass(frozen=True)
class SparseVLM(PruningMethod):
    """Settings named as the official code names them (`USE_VERSION`, `RETAIN_TOKN`, `pruning_loc`, the 14 priority
    heads of 2.0). `positions` defaults to the version's own (2.0 original, 1.5 compact)."""

    name = "sparsevlm"
    display_name = "SparseVLM"
    default_positions = "original"

    positions: PositionMode | None = None
    version: str = "2.0"
    retain_tokens: int = 192
    keep_counts: tuple[int, ...] | None = None
    pruning_loc: tuple[int, ...] = (2, 6, 15)
    heads: int = 14

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise PdropEvalError(
                f"SparseVLM version={self.version!r} is unknown: use '2.0' (SparseVLM+, current) or '1.5'"
            )
        if self.positions is None:
            object.__setattr__(self, "positions", self.version_positions)
        super().__post_init__()
        if self.version == "1.5" and self.positions != "compact":
            raise PdropEvalError(
                "SparseVLM 1.5 inserts merged tokens, which have no original position: use positions='compact'"
            )
        object.__setattr__(self, "pruning_loc", tuple(self.pruning_loc))
        if self.keep_counts is not None:
            object.__setattr__(self, "keep_counts", tuple(self.keep_counts))
        elif self.retain_tokens not in KEEP_LISTS[self.version]:
            raise PdropEvalError(
                f"SparseVLM retain_tokens={self.retain_tokens!r} has no official keep list: use one of "
                f"{', '.join(map(str, KEEP_LISTS[self.version]))}, or give keep_counts"
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

    @classmethod
    def check_model(cls, geometry: ModelGeometry) -> None:
        default_heads = cls.__dataclass_fields__["heads"].default
        if geometry.num_heads is not None and geometry.num_heads < default_heads:
            raise PdropEvalError(
                f"SparseVLM+ averages the {default_heads} attention heads that look at the image most, and this model "
                f"has {geometry.num_heads}: drop sparsevlm from --methods for this model, or run it with fewer heads "
                "from Python"
            )
        if geometry.anyres or (geometry.image_tokens is not None and geometry.image_tokens != OFFICIAL_IMAGE_TOKENS):
            raise PdropEvalError(
                f"SparseVLM's official keep lists are for LLaVA-1.5's {OFFICIAL_IMAGE_TOKENS} image tokens: drop "
                "sparsevlm from --methods for this model, or run it with keep_counts from Python"
            )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[SparseVLM, ...]:
        """The paper's "retain K" is its RETAIN_TOKN setting, which picks the official keep list (score.py)."""
        official = sorted(KEEP_LISTS["2.0"], reverse=True)
        if budget not in official:
            raise PdropEvalError(
                f"SparseVLM has official keep lists for budgets {', '.join(map(str, official))} only, not {budget:g}: "
                "give one of those with --budget"
            )
        return (cls(retain_tokens=int(budget)),)

    @property
    def version_positions(self) -> str:
        return "original" if self.version == "2.0" else "compact"

    @property
    def counts(self) -> tuple[int, ...]:
        """The keep list in force: `keep_counts`, or the official one for `retain_tokens` and the version."""
        return self.keep_counts if self.keep_counts is not None else KEEP_LISTS[self.version][self.retain_tokens]

    @property
    def label(self) -> str:
        budget = f"r{self.retain_tokens}" if self.keep_counts is None else "k" + "-".join(map(str, self.keep_counts))
        where = "" if self.pruning_loc == (2, 6, 15) else "_l" + "-".join(map(str, self.pruning_loc))
        heads = "" if self.heads == 14 or self.version == "1.5" else f"_h{self.heads}"
        suffix = "" if self.positions == self.version_positions else f"_{self.positions}"
        version = "v2" if self.version == "2.0" else "v1.5"
        return f"sparsevlm_{version}_{budget}{where}{heads}{suffix}"

    @property
    def stage_layers(self) -> tuple[int, ...]:
        """Pruning the output of 0-based layer l is a boundary after l + 1 layers."""
        return tuple(layer + 1 for layer in self.pruning_loc)

    def _stage_counts(self, num_image_tokens: int, stage: int) -> tuple[int, int]:
        """(kept by score, added by merging) at `stage`, following the image count from the N that entered."""
        present, kept, added = num_image_tokens, 0, 0
        for keep in self.counts[: stage + 1]:
            kept = min(keep, present - 1) if present > 0 else 0
            deleted = present - kept if present > 0 else 0
            added = (int(deleted * 0.3) + 1) // 10 + 1 if self.version == "1.5" and deleted > 0 else 0
            present = kept + added
        return kept, added

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """`min(k_s, n_s − 1)`, n_s counting the merged tokens of earlier stages (n_s = 0 prunes nothing)."""
        return self._stage_counts(num_image_tokens, stage)[0]

    def added_count(self, num_image_tokens: int, stage: int) -> int:
        """1.5's merged tokens: int(int(0.3·D + 1) / 10) + 1 for D deleted tokens; none in 2.0."""
        return self._stage_counts(num_image_tokens, stage)[1]

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
        if self.version == "2.0" and self.heads > heads:
            raise PdropEvalError(
                f"SparseVLM heads={self.heads} exceeds the model's {heads} attention heads: lower heads"
            )
        scores = torch.zeros(boundary.valid.shape, dtype=torch.float32, device=boundary.valid.device)
        cos, sin = boundary.position_embeddings
        for row, from_end in enumerate(boundary.prepared):
            offset = int((~boundary.valid[row]).sum())
            image = boundary.image_mask[row, offset:].nonzero().flatten()
            if image.numel() == 0:
                continue
            relation = rater_scores(
                layer,
                boundary.last_input[row : row + 1, offset:],
                (cos[row : row + 1, offset:], sin[row : row + 1, offset:]),
                boundary.valid.shape[1] - offset - from_end,
                image,
                self.heads if self.version == "2.0" else None,
                boundary.rotary,
            )
            scores[row, image + offset] = relation.float()
        return scores

    def recycle(self, boundary: Boundary, scores: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor] | None:
        """1.5: the best-scored 30% + 1 of each sample's deleted image tokens, merged from the layer's output."""
        if self.version != "1.5":
            return None
        merged = []
        for row in range(scores.shape[0]):
            deleted = (boundary.image_mask[row] & ~keep[row]).nonzero().flatten()
            if deleted.numel() == 0:
                merged.append(boundary.hidden.new_zeros(0, boundary.hidden.shape[-1]))
                continue
            picked = deleted[scores[row, deleted].topk(int(deleted.numel() * 0.3) + 1).indices]
            merged.append(density_peak_merge(boundary.hidden[row, picked], picked.numel() // 10 + 1))
        return merged

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Rater affinities once (N·T·d), then at each sparse layer: q for the raters, k for every token, their
        logits in every head, and (2.0) the RoPE bias at rater × image entries. 1.5's clustering is elementwise
        work (distances as norms of differences), which the exact convention leaves out as FlopCounterMode does."""
        text = shape.text
        raters, after = trace.method_counts["raters"], trace.method_counts["text_after_image"]
        total = 2 * trace.image_tokens_per_layer[0] * after * text.hidden
        for layer in self.stage_layers:
            tokens, images = trace.tokens_per_layer[layer - 1], trace.image_tokens_per_layer[layer - 1]
            total += 2 * raters * text.hidden * text.heads * text.head_dim
            total += 2 * tokens * text.hidden * text.kv_heads * text.head_dim
            total += 2 * text.heads * raters * tokens * text.head_dim
            if self.version == "2.0":
                total += 2 * raters * images * text.head_dim
        return total

    def record(self) -> dict:
        settings = {
            "version": self.version,
            "retain_tokens": self.retain_tokens if self.keep_counts is None else None,
            "keep_counts": list(self.counts),
            "pruning_loc": list(self.pruning_loc),
            "heads": self.heads if self.version == "2.0" else None,
        }
        return {**super().record(), **settings}
