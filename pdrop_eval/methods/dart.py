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
  with the smallest cosine similarity to the pivot's state (torch's `cosine_similarity` formula, top-k of its
  negation) are taken; text pivots are never kept. Top-k's order among exactly equal values is unspecified (it differs between
  kernels); ours takes the earlier index (`first_largest`), so a choice never depends on the batch;
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

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import Boundary, PositionMode, PruningMethod
from pdrop_eval.pyramid.ranking import rotated_keys

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


@dataclass(frozen=True)
class ImageSpan:
    """Where one prompt sits in a left-padded batch row: `offset` padding columns, then the prompt, whose image
    tokens are [start, start + count) in prompt positions (the official code's absolute positions)."""

    offset: int
    start: int
    count: int


def first_largest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Per row, the indices of the `count` largest values, ties to the earlier index (a stable descending sort):
    top-k with its tie order made explicit, so a row's choice does not depend on the rows padded beside it."""
    return values.sort(dim=-1, descending=True, stable=True).indices[..., :count]


def _padded(values: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """Row b's columns [from, to) of `values` [B, L], left-aligned in a [B, longest] block padded with −inf."""
    width = max(end - begin for begin, end in ranges)
    block = values.new_full((values.shape[0], width), float("-inf"))
    for row, (begin, end) in enumerate(ranges):
        block[row, : end - begin] = values[row, begin:end]
    return block


def dart_choices(
    key_norms: torch.Tensor,
    states: torch.Tensor,
    spans: list[ImageSpan],
    image_pivots: int,
    text_pivots: int,
    per_pivot: list[int],
) -> list[list[int]]:
    """Per row, the prompt positions (ascending) of the image tokens DART keeps, for a whole batch at once.

    key_norms: [B, L] L1 norms of the keys; states: [B, L, d] final-normed hidden states; per_pivot[b]: T of row b.
    The official loop runs per prompt in Python sets; here each pivot step serves every row at once (every row has
    image_pivots + text_pivots distinct pivots): row b's j-th pivot in its `list(set(...))` order against its own
    candidates in their `list(set)` order, padded with −inf to the longest row. The sets stay per row and hold the
    official absolute positions, so the visiting order is the official one; a batch costs one similarity and one
    sort per pivot instead of one per pivot and prompt.
    """
    rows = len(spans)
    image = _padded(key_norms, [(s.offset + s.start, s.offset + s.start + s.count) for s in spans])
    text = _padded(key_norms, [(s.offset + s.start + s.count, key_norms.shape[1]) for s in spans])
    image_top, text_top = first_largest(image, image_pivots).tolist(), first_largest(text, text_pivots).tolist()
    chosen, candidates, visits, text_positions = [], [], [], []
    for span, image_picks, text_picks in zip(spans, image_top, text_top):
        image_positions = [span.start + i for i in image_picks]
        text_positions.append([span.start + span.count + i for i in text_picks])
        chosen.append(set(image_positions + text_positions[-1]))
        candidates.append(set(range(span.start, span.start + span.count)) - set(image_positions))
        visits.append(list(chosen[-1]))  # the official visiting order: a set of Python ints, iterated once
    device = states.device
    length = states.shape[1]
    flat = states.reshape(rows * length, states.shape[2])  # token t of row b is row b·length + t
    # torch.cosine_similarity's own formula (ATen: each side divided by its norm clamped at 1e-8, then the product
    # summed), with every state normalised once instead of once per pivot and candidate
    unit = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    offsets = torch.tensor([row * length + span.offset for row, span in enumerate(spans)], device=device)
    for step in range(image_pivots + text_pivots):
        orders = [list(row_candidates) for row_candidates in candidates]
        width = max(len(order) for order in orders)
        columns = torch.zeros(rows, width, dtype=torch.long)
        valid = torch.zeros(rows, width, dtype=torch.bool)
        for row, order in enumerate(orders):
            columns[row, : len(order)] = torch.tensor(order, dtype=torch.long)
            valid[row, : len(order)] = True
        columns = columns.to(device) + offsets[:, None]
        valid = valid.to(device)
        pivots = torch.tensor([visit[step] for visit in visits], device=device) + offsets
        # index_select on the flattened rows: advanced indexing gathers the same values far slower on CPU
        candidate_units = unit.index_select(0, columns.flatten()).view(rows, width, -1)
        similarity = (candidate_units * unit.index_select(0, pivots)[:, None, :]).sum(dim=-1)
        picks = first_largest((-similarity).masked_fill(~valid, float("-inf")), max(per_pivot)).tolist()
        for row, order in enumerate(orders):
            taken = [order[i] for i in picks[row][: per_pivot[row]]]
            chosen[row].update(taken)
            candidates[row].difference_update(taken)
    return [sorted(row_chosen - set(text)) for row_chosen, text in zip(chosen, text_positions)]


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
        spans = []
        for row in range(key_norms.shape[0]):
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
            spans.append(ImageSpan(offset, start, count))
        kept = dart_choices(
            key_norms,
            states,
            spans,
            self.pivot_image_tokens,
            self.pivot_text_tokens,
            [self.sample_per_pivot(span.count) for span in spans],
        )
        scores = torch.zeros(boundary.valid.shape, dtype=torch.float32, device=boundary.valid.device)
        for row, (span, positions) in enumerate(zip(spans, kept)):
            scores[row, torch.as_tensor(positions, device=scores.device) + span.offset] = 1.0
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
