"""DART (Wen et al., 2025, "Stop looking for important tokens... duplication matters more"): inside the LLM, keep
the image tokens least similar to a few pivots, once, before layer K.

Official code: ZichenWen1/DART (REFERENCE §7 cites @5a19452; neither `fetch` nor the search index holds more of
that repository than its README, so this follows the copy VTC-Bench vendors — by DART's first author —,
Chenfei-Liao/VTC-Bench@983e443 external/DART/llava/model/language_model/modeling_llama_self.py) — `LlamaModel.forward`
(the drop just before layer K, `position_ids = keep_indexs`), `LlamaSdpaAttention.forward` (returns the keys after
RoPE and `repeat_kv`, which the decoder layer passes on as `layer_outputs[-2]`) and `get_retained_image_token` (the
choice); llava/eval/model_vqa_loader.py `configure_DART` and scripts/v1_{5,6}/eval/*.sh (the settings). The
README's LLaVA-NeXT news (2025.03.19) points at those same v1_6 scripts. Compare with @5a19452 when it can be read.

Exact semantics, per prompt of length L whose image span is [s, s + N), at the boundary after K layers:
- keys = layer K−1's keys (input norm, k_proj, RoPE at the prompt's positions, repeated over query-head groups);
  pivots = the `pivot_image_tokens` image tokens and the `pivot_text_tokens` tokens after the image with the
  largest L1 key norms (top-k over each part);
- per pivot T = `max_num_trunction // (pivot_image_tokens + pivot_text_tokens)` tokens are taken, so a prompt keeps
  `pivot_image_tokens + (pivot_image_tokens + pivot_text_tokens) · T` image tokens (128 → 4 + 8·16 = 132);
- states = layer K−1's output through the model's FINAL norm; the pivots are visited in the order of Python's
  `list(set(image_pivots + text_pivots))` over absolute positions (the order changes the result, so we build that
  same set); for each, among the image tokens not yet taken (non-pivot image tokens, in `list(set)` order), the T
  with the smallest cosine similarity to the pivot's state (torch's `cosine_similarity`, top-k of its negation) are
  taken; text pivots are never kept;
- survivors keep their original positions (with gaps); every decode step is at position L + t in every layer;
  layers below K cache all L tokens, later layers only the survivors (what the staged engine does with
  `positions="original"`).

LLaVA-NeXT (`get_retained_image_token` when `config.text_length` is set, which llava/eval/model_vqa_loader.py does
for '1.6' models, with scripts/v1_6/eval/*.sh): the image span is every image token of the packed features (base
grid, unpadded tiles, newline tokens), N = prompt length − text length, and T = int(min(R, N − pivot_image_tokens)
// pivots) with R = `retain_token_num_for_llava_next` (default 320; budgets 640/320/160 set it). We apply that cap
on every model, with R = `max_num_trunction`: on LLaVA-1.5 it changes nothing below N − 4 (the budgets), and above
it the official LLaVA-1.5 path has no cap and fails in `topk` (there we keep 4 + 8·⌊(N − 4)/8⌋ instead).

Where we differ, and why: the official code asserts batch 1, fixes the image at position 35 with 576 tokens, and
keeps the keys its attention already computed; we choose per sample from its own span (any batch, any padding) and
recompute layer K−1's keys (counted in the overhead). Cosine similarities and norms are elementwise work,
which the exact FLOPs convention leaves out as torch's FlopCounterMode does; the key projection is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.nn import functional

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, PruningMethod
from pdrop_eval.pyramid.ranking import rotated_keys

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


def dart_choice(
    key_norms: torch.Tensor,
    states: torch.Tensor,
    start: int,
    count: int,
    image_pivots: int,
    text_pivots: int,
    per_pivot: int,
) -> list[int]:
    """Absolute positions of the image tokens DART keeps in one unpadded prompt, in ascending order.

    key_norms: [L] L1 norms of the keys; states: [L, d] final-normed hidden states; the image is [start, start+count).
    """
    end = start + count
    image_pivot_positions = (key_norms[start:end].topk(image_pivots).indices + start).tolist()
    text_pivot_positions = (key_norms[end:].topk(text_pivots).indices + end).tolist()
    chosen = set(image_pivot_positions + text_pivot_positions)
    candidates = set(range(start, end)) - set(image_pivot_positions)
    for pivot in list(chosen):  # the official visiting order: a set of Python ints, iterated once
        order = list(candidates)
        similarity = functional.cosine_similarity(states[pivot], states[order], dim=-1)
        taken = [order[i] for i in (-similarity).topk(per_pivot).indices.tolist()]
        chosen.update(taken)
        candidates.difference_update(taken)
    chosen.difference_update(text_pivot_positions)
    return sorted(chosen)


@dataclass(frozen=True)
class DART(PruningMethod):
    """Settings named as the official scripts name them (`--K`, `--max_num_trunction`, `--pivot_*_token`)."""

    name = "dart"
    display_name = "DART"
    default_positions = "original"
    marker: ClassVar[str] = "h"

    positions: PositionMode = "original"
    layer: int = 2
    max_num_trunction: int = 128
    pivot_image_tokens: int = 4
    pivot_text_tokens: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        for setting in ("layer", "max_num_trunction", "pivot_image_tokens", "pivot_text_tokens"):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PdropEvalError(f"DART {setting}={value!r} must be a whole number >= 1 (defaults: 2, 128, 4, 4)")
        if self.per_pivot < 1:
            raise PdropEvalError(
                f"DART max_num_trunction={self.max_num_trunction} is below one token per pivot "
                f"({self.pivot_image_tokens + self.pivot_text_tokens} pivots): raise it"
            )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[DART, ...]:
        """`max_num_trunction` = K, as DART's scripts set it for "retain K tokens" (on LLaVA-NeXT, where the
        scripts set `retain_token_num_for_llava_next` = K instead, the same rule): after layer 2 a prompt keeps
        4 + 8 · (K // 8) image tokens (192 → 196, 128 → 132, 64 → 68); the first 2 layers see all N, so the
        average per layer is above K (the paper counts tokens after the drop)."""
        return (cls(max_num_trunction=round(budget)),)

    @property
    def per_pivot(self) -> int:
        return self.max_num_trunction // (self.pivot_image_tokens + self.pivot_text_tokens)

    @property
    def label(self) -> str:
        pivots = (self.pivot_image_tokens, self.pivot_text_tokens)
        pivot_text = "" if pivots == (4, 4) else f"_p{pivots[0]}-{pivots[1]}"
        suffix = "" if self.positions == self.default_positions else f"_{self.positions}"
        return f"dart_k{self.layer}_t{self.max_num_trunction}{pivot_text}{suffix}"

    @property
    def stage_layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def sample_per_pivot(self, num_image_tokens: int) -> int:
        """T for a sample of N image tokens: min(max_num_trunction, N − pivot_image_tokens) // pivots (the official
        LLaVA-NeXT rule; the same as the LLaVA-1.5 rule wherever that one runs)."""
        room = min(self.max_num_trunction, num_image_tokens - self.pivot_image_tokens)
        return room // (self.pivot_image_tokens + self.pivot_text_tokens)

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        if self.sample_per_pivot(num_image_tokens) < 1:
            raise PdropEvalError(
                f"DART keeps {self.pivot_image_tokens} image pivots plus at least one token per pivot, but a sample "
                f"has only {num_image_tokens} image tokens: lower pivot_image_tokens"
            )
        pivots = self.pivot_image_tokens + self.pivot_text_tokens
        return self.pivot_image_tokens + pivots * self.sample_per_pivot(num_image_tokens)

    def score(self, boundary: Boundary) -> torch.Tensor:
        """1 for the tokens DART keeps, 0 elsewhere: the engine's top-`keep_count` then keeps exactly them."""
        layer = boundary.layers[boundary.layer - 1]
        keys = rotated_keys(layer, boundary.last_input, boundary.position_embeddings, boundary.rotary)
        groups = getattr(layer.self_attn, "num_key_value_groups", 1)
        keys = keys.repeat_interleave(groups, dim=1)  # repeat_kv: each key head once per query head it serves
        key_norms = torch.norm(keys.permute(0, 2, 1, 3).flatten(2), p=1, dim=-1)  # [B, L]
        states = boundary.final_norm(boundary.hidden)
        scores = torch.zeros(boundary.valid.shape, dtype=torch.float32, device=boundary.valid.device)
        for row in range(scores.shape[0]):
            offset = int((~boundary.valid[row]).sum())
            columns = boundary.image_mask[row].nonzero().flatten()
            start, count = int(columns[0]) - offset, int(columns.numel())
            if int(columns[-1]) - int(columns[0]) + 1 != count:
                raise PdropEvalError("DART needs each prompt's image tokens in one contiguous span")
            if key_norms.shape[1] - offset - (start + count) < self.pivot_text_tokens:
                raise PdropEvalError(
                    f"DART takes {self.pivot_text_tokens} text pivots after the image, but a prompt has fewer tokens "
                    "there: lower pivot_text_tokens"
                )
            kept = dart_choice(
                key_norms[row, offset:],
                states[row, offset:],
                start,
                count,
                self.pivot_image_tokens,
                self.pivot_text_tokens,
                self.sample_per_pivot(count),
            )
            scores[row, torch.as_tensor(kept, device=scores.device) + offset] = 1.0
        return scores

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Layer K−1's keys recomputed for every token of the prompt."""
        text = shape.text
        return 2 * trace.tokens_per_layer[self.layer - 1] * text.hidden * text.kv_heads * text.head_dim

    def record(self) -> dict:
        settings = {
            "max_num_trunction": self.max_num_trunction,
            "pivots": [self.pivot_image_tokens, self.pivot_text_tokens],
        }
        return {**super().record(), **settings}
