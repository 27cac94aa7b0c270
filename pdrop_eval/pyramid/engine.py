"""The staged layer loop: batched prefill that drops image tokens between stages, then cached greedy decoding.

We drive the language model's own decoder layers (no forked modeling code). Sequences are LEFT padded, so the last
column is every sample's last prompt token, the PyramidDrop query. After each stage the survivors of every sample
are gathered and re-padded in one vectorised step; each layer's KV cache holds only its own stage's tokens, so decode
steps in late layers attend to few image tokens. Nothing about a call is stored on the model.

Entry points:
- `generate_from_embeds`: any HF decoder-only causal LM, from `inputs_embeds` + an image-token mask.
- `prefill`: one prefill pass (optionally with forced kept sets), returning last-position logits and the state that
  decoding continues from; used by `generate_from_embeds` and by recomputation checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.positions import LinearPositions
from pdrop_eval.methods.base import Boundary, PruningMethod
from pdrop_eval.methods.vanilla import Vanilla
from pdrop_eval.pyramid.timing import SpanTimer, Stopwatch

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass
class DecoderParts:
    """The pieces of a causal LM the staged loop calls, found once per model, and its family's position scheme."""

    embed_tokens: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    rotary_emb: nn.Module
    lm_head: nn.Module
    config: object
    attn_implementation: str
    cache_keyword: str
    positions: LinearPositions = field(default_factory=LinearPositions)

    @classmethod
    def from_model(cls, model: nn.Module, positions: LinearPositions | None = None) -> DecoderParts:
        """Accepts a VLM (`model.model.language_model`) or a causal LM (`model.model`); `positions` is the model
        family's position scheme (1-D positions when not given)."""
        inner = getattr(model, "model", None)
        decoder = getattr(inner, "language_model", None) or inner
        if decoder is None or not hasattr(decoder, "layers"):
            raise PdropEvalError(
                f"{type(model).__name__} has no decoder layers where a LLaVA-style or causal LM keeps them "
                "(model.model.language_model.layers or model.model.layers)"
            )
        layer = decoder.layers[0]
        for part in ("input_layernorm", "self_attn"):
            if not hasattr(layer, part):
                raise PdropEvalError(f"{type(layer).__name__} has no {part}: this architecture is not supported")
        for part in ("q_proj", "k_proj"):
            if not hasattr(layer.self_attn, part):
                raise PdropEvalError(
                    f"{type(layer.self_attn).__name__} has no {part}: ranking needs separate q/k projections"
                )
        config = decoder.config
        attn = getattr(config, "_attn_implementation", None) or "eager"
        if attn not in SUPPORTED_ATTENTION:
            raise PdropEvalError(f"attention {attn!r} is not supported by the engine: use one of {SUPPORTED_ATTENTION}")
        params = inspect.signature(layer.forward).parameters
        cache_keyword = "cache" if "cache" in params else "past_key_values"
        return cls(
            embed_tokens=decoder.embed_tokens,
            layers=decoder.layers,
            norm=decoder.norm,
            rotary_emb=decoder.rotary_emb,
            lm_head=model.get_output_embeddings(),
            config=config,
            attn_implementation=attn,
            cache_keyword=cache_keyword,
            positions=positions or LinearPositions(),
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)


@dataclass
class SampleTrace:
    """What happened to one sample: enough to count FLOPs and draw the kept patches.

    `num_image_tokens` is the image's token count from the tower; `kept_feature_indices` lists which of those
    entered the LLM when a method selected them before it (None when all did or they were merged), and
    `kept_image_indices[s]` the ordinals, among the tokens that entered the LLM, still present after stage s.
    """

    num_image_tokens: int
    prompt_tokens: int
    method: PruningMethod = field(default_factory=Vanilla)
    kept_feature_indices: list[int] | None = None
    kept_image_indices: list[list[int]] = field(default_factory=list)
    tokens_per_layer: list[int] = field(default_factory=list)
    image_tokens_per_layer: list[int] = field(default_factory=list)
    generated_tokens: int = 0
    vision_crops: int = 0
    vision_grid: tuple[int, int, int] | None = None  # (t, h, w) patches, where the tower's cost follows the grid
    method_counts: dict[str, int] = field(default_factory=dict)  # sizes the method's overhead depends on


@dataclass
class Timings:
    """Seconds spent per phase for a whole batch; rank is part of prefill."""

    vision_s: float = 0.0
    prefill_s: float = 0.0
    rank_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class Generation:
    token_ids: list[int]
    trace: SampleTrace


@dataclass
class BatchGeneration:
    generations: list[Generation]
    timings: Timings
    step_logits: torch.Tensor | None = None  # [B, steps, vocab] float32, when asked for


@dataclass
class _Stage:
    """One stage's decode-time state: its layers, which cached keys are real, and the next RoPE position."""

    start: int
    end: int
    key_valid: torch.Tensor  # [B, L_s] bool
    next_position: torch.Tensor  # [B] long
    padded: bool


@dataclass
class PrefillResult:
    logits: torch.Tensor  # [B, vocab] at the last prompt token
    cache: DynamicCache | None
    stages: list[_Stage]
    traces: list[SampleTrace]
    rank_s: float


def build_attention_mask(
    key_valid: torch.Tensor, query_length: int, attn_implementation: str, dtype: torch.dtype, padded: bool = True
):
    """The mask every layer of a stage gets, in the form its attention kernel expects.

    Queries are the last `query_length` keys. A query sees valid keys at or before it, and always itself, so padding
    rows are never fully masked (SDPA would turn those into NaN). SDPA takes bool (True = attend); eager an additive
    float mask (a bool mask there would be silently wrong); flash-attention the 2D padding mask. Without padding,
    SDPA and flash-attention get no mask at all: prefill is then square and causal, decode sees every key, and the
    kernels take their faster mask-free path.
    """
    if not padded and attn_implementation in ("sdpa", "flash_attention_2"):
        return None
    if attn_implementation == "flash_attention_2":
        return key_valid.long()
    key_length = key_valid.shape[1]
    key_index = torch.arange(key_length, device=key_valid.device)
    query_index = key_index[key_length - query_length :, None]
    allowed = (key_index[None, :] <= query_index) & key_valid[:, None, :]
    allowed |= key_index[None, :] == query_index
    allowed = allowed[:, None]  # [B, 1, q, k]
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=key_valid.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed


def _run_layers(
    parts: DecoderParts,
    hidden: torch.Tensor,
    start: int,
    end: int,
    mask,
    positions: torch.Tensor,
    position_embeddings,
    cache: DynamicCache | None,
    keep_input_of: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Runs layers [start, end); also returns the input of layer `keep_input_of` (a method may score with it, as
    FastV does with the layer that just ran; keeping the reference costs no copy)."""
    kept_input = None
    cache_kwargs = {parts.cache_keyword: cache, "use_cache": cache is not None}
    for index in range(start, end):
        if index == keep_input_of:
            kept_input = hidden
        output = parts.layers[index](
            hidden,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=position_embeddings,
            **cache_kwargs,
        )
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden, kept_input


def _select_image_tokens(
    scores: torch.Tensor, image_mask: torch.Tensor, keep_counts: torch.Tensor, max_keep: int, max_images: int
) -> torch.Tensor:
    """Top-`keep_counts[b]` image tokens per sample by score, as a [B, L] bool mask (order is kept by the mask).

    Top-k runs on each sample's image scores alone, in sequence order, as the official code slices them out before
    its `topk`: with ties (common in half precision) top-k over the padded row could pick other tokens.
    """
    batch, length = image_mask.shape
    slot = image_mask.long().cumsum(-1) - 1  # the token's place among its sample's current image tokens
    slot = torch.where(image_mask, slot, length)  # everything else lands in a spare slot
    image_scores = scores.new_full((batch, length + 1), float("-inf")).scatter_(1, slot, scores)
    image_columns = torch.full((batch, length + 1), length, dtype=torch.long, device=scores.device)
    image_columns.scatter_(1, slot, torch.arange(length, device=scores.device).expand(batch, length))
    top = image_scores[:, :max_images].topk(max_keep, dim=-1).indices
    within = torch.arange(max_keep, device=scores.device)[None, :] < keep_counts[:, None]
    keep = torch.zeros(batch, length + 1, dtype=torch.bool, device=scores.device)
    return keep.scatter_(1, image_columns.gather(1, top), within)[:, :length]


def _to_device(values: list[int], device: torch.device) -> torch.Tensor:
    """A small host list on `device` without waiting for the GPU: a copy from pageable memory first drains the
    stream (the host stalls until every queued layer ran), a copy from pinned memory is queued like a kernel."""
    host = torch.tensor(values)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _forced_selection(
    forced: Sequence[Sequence[Sequence[int]]], stage: int, image_ordinal: torch.Tensor, image_mask: torch.Tensor
) -> torch.Tensor:
    """The [B, L] mask of image tokens whose ordinals a caller fixed for this stage."""
    table = torch.zeros(image_ordinal.shape[0], int(image_ordinal.max()) + 2, dtype=torch.bool)
    for row, per_stage in enumerate(forced):
        table[row, torch.as_tensor(list(per_stage[stage]), dtype=torch.long)] = True
    table = table.to(image_ordinal.device)
    return table.gather(1, image_ordinal.clamp(min=0)) & image_mask


def _left_repack(keep: torch.Tensor, new_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source column of each slot after moving each row's kept tokens to the right end, and the new valid mask.

    `new_length` is the longest row's kept count, known on the host, so the repack never waits for the GPU."""
    batch, length = keep.shape
    counts = keep.sum(-1)
    destination = new_length - counts[:, None] + keep.long().cumsum(-1) - 1
    destination = torch.where(keep, destination, new_length)  # dropped tokens land in a spare column
    source = torch.zeros(batch, new_length + 1, dtype=torch.long, device=keep.device)
    source.scatter_(1, destination, torch.arange(length, device=keep.device).expand(batch, length))
    valid = torch.arange(new_length, device=keep.device)[None, :] >= (new_length - counts)[:, None]
    return source[:, :new_length], valid


def _insert_after_images(
    hidden: torch.Tensor,
    keep: torch.Tensor,
    image_mask: torch.Tensor,
    image_ordinal: torch.Tensor,
    added: list[torch.Tensor],
    new_length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_left_repack` for a boundary where a method adds tokens: row b's `added[b]` go right after its last image
    token (before the text that follows it) and count as image tokens with ordinal -1 (they entered no earlier
    layer). Returns the repacked hidden states, valid mask, image mask and ordinals."""
    batch, length, dim = hidden.shape
    device = hidden.device
    extra = max(1, max(t.shape[0] for t in added))
    additions = hidden.new_zeros(batch, extra, dim)
    for row, tokens in enumerate(added):
        additions[row, : tokens.shape[0]] = tokens
    added_valid = torch.arange(extra, device=device)[None, :] < _to_device([t.shape[0] for t in added], device)[:, None]
    columns = torch.arange(length, device=device)
    last_image = torch.where(image_mask, columns, -1).amax(-1)
    stride = extra + 1  # original column c sorts at c·stride; additions at last_image·stride + 1 + j
    keys = torch.cat(
        [columns.expand(batch, length) * stride, last_image[:, None] * stride + 1 + torch.arange(extra, device=device)],
        dim=1,
    )
    present = torch.cat([keep, added_valid], dim=1)
    order = keys.masked_fill(~present, (length + 1) * stride).argsort(dim=-1)
    padding = new_length - present.sum(-1)
    slot = torch.arange(new_length, device=device)[None, :]
    source = order.gather(1, (slot - padding[:, None]).clamp(min=0))
    valid = slot >= padding[:, None]
    hidden = torch.cat([hidden, additions], dim=1).gather(1, source[..., None].expand(-1, -1, dim))
    image_mask = torch.cat([image_mask, added_valid], dim=1).gather(1, source) & valid
    ordinal = torch.cat([image_ordinal, image_ordinal.new_full((batch, extra), -1)], dim=1).gather(1, source)
    return hidden, valid, image_mask, torch.where(image_mask, ordinal, -1)


def _kept_ordinals(image_ordinal: torch.Tensor, image_mask: torch.Tensor) -> list[list[int]]:
    """Per row, the original ordinals of the image tokens still present, in sequence order (tokens a method added
    at a boundary have none and are left out)."""
    return [row[mask & (row >= 0)].tolist() for row, mask in zip(image_ordinal.cpu(), image_mask.cpu())]


@torch.no_grad()
def prefill(
    parts: DecoderParts,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    image_token_mask: torch.Tensor,
    method: PruningMethod,
    *,
    sample_seeds: Sequence[int] | None = None,
    forced_keep: Sequence[Sequence[Sequence[int]]] | None = None,
    use_cache: bool = True,
    position_ids: torch.Tensor | None = None,
) -> PrefillResult:
    """Runs the prompt through all layers, dropping image tokens at the method's stage boundaries.

    inputs_embeds: [B, L, d] LEFT padded; attention_mask: [B, L] (1 = real token); image_token_mask: [B, L].
    forced_keep[b][s] fixes the image-token ordinals sample b keeps after stage s instead of ranking.
    position_ids: the prompt's positions where the family computes them from more than the mask (Qwen2.5-VL's
    M-RoPE rows from the image grids); else the family scheme's `prompt(valid)`.

    Row lengths and image counts are tracked on the host (a drop's new counts follow from the keep counts), so the
    loop waits for the GPU only once, at the start; kept indices are copied to the host after the last stage.
    """
    method.validate_for_depth(parts.num_layers)
    valid = attention_mask.bool()
    image_mask = image_token_mask.bool() & valid
    counts = torch.stack([valid.sum(-1), image_mask.sum(-1), valid[:, -1].long()]).tolist()
    lengths, image_counts = counts[0], counts[1]
    if not all(counts[2]):
        raise PdropEvalError("the engine needs LEFT-padded inputs: the last column must be a real token in every row")
    device = inputs_embeds.device
    batch = valid.shape[0]
    image_ordinal = torch.where(image_mask, image_mask.long().cumsum(-1) - 1, -1)
    positions = position_ids if position_ids is not None else parts.positions.prompt(valid)
    num_images_list = list(image_counts)
    prompt_lengths = valid.sum(-1)
    traces = [SampleTrace(num_image_tokens=n, prompt_tokens=p, method=method) for n, p in zip(num_images_list, lengths)]
    if sample_seeds is None:
        sample_seeds = list(range(batch))

    cache = DynamicCache(config=parts.config) if use_cache else None
    hidden = inputs_embeds
    stages: list[_Stage] = []
    kept_per_stage: list[tuple[torch.Tensor, torch.Tensor]] = []
    rank_timer = SpanTimer(device)
    ranges = method.stage_ranges(parts.num_layers)
    prepared = None
    if len(ranges) > 1 and forced_keep is None:
        with rank_timer.span():
            prepared = method.prepare(inputs_embeds, valid, image_mask)
        if prepared is not None:
            for trace, sample_counts in zip(traces, prepared.sample_counts):
                trace.method_counts = dict(sample_counts)
    for stage, (start, end) in enumerate(ranges):
        last_stage = stage == len(ranges) - 1
        padded = min(lengths) < valid.shape[1]
        mask = build_attention_mask(valid, valid.shape[1], parts.attn_implementation, hidden.dtype, padded)
        position_embeddings = parts.rotary_emb(hidden, positions)
        hidden, last_input = _run_layers(
            parts,
            hidden,
            start,
            end,
            mask,
            positions,
            position_embeddings,
            cache,
            keep_input_of=None if last_stage else end - 1,
        )
        for trace, length, count in zip(traces, lengths, image_counts):
            trace.tokens_per_layer.extend([length] * (end - start))
            trace.image_tokens_per_layer.extend([count] * (end - start))
        next_position = parts.positions.decode_start(positions, valid, prompt_lengths, method.positions)
        stages.append(_Stage(start, end, valid, next_position, padded))
        if last_stage:
            break

        with rank_timer.span():
            added = None
            if forced_keep is not None:
                keep_images = _forced_selection(forced_keep, stage, image_ordinal, image_mask)
                keep_list = keep_images.sum(-1).tolist()
            else:
                keep_list = [method.keep_count(n, stage) for n in num_images_list]
                keep_counts = _to_device(keep_list, device)
                boundary = Boundary(
                    stage=stage,
                    layer=end,
                    layers=parts.layers,
                    final_norm=parts.norm,
                    hidden=hidden,
                    last_input=last_input,
                    position_embeddings=position_embeddings,
                    rotary=parts.positions.rotary,
                    valid=valid,
                    image_mask=image_mask,
                    image_ordinal=image_ordinal,
                    original_image_counts=num_images_list,
                    sample_seeds=list(sample_seeds),
                    prepared=None if prepared is None else prepared.state,
                )
                scores = method.score(boundary)
                keep_images = _select_image_tokens(scores, image_mask, keep_counts, max(keep_list), max(image_counts))
                added = method.recycle(boundary, scores, keep_images)
            added_list = [0] * batch if added is None else [int(tokens.shape[0]) for tokens in added]
            if added is not None and added_list != [method.added_count(n, stage) for n in num_images_list]:
                raise PdropEvalError(f"{method.label} added {added_list} tokens at stage {stage}, not its added_count")
            if any(added_list) and method.positions != "compact":
                raise PdropEvalError(
                    f"{method.label} adds tokens at a layer boundary, which have no original position: use "
                    "positions='compact'"
                )
            lengths = [
                length - count + kept + extra
                for length, count, kept, extra in zip(lengths, image_counts, keep_list, added_list)
            ]
            image_counts = [kept + extra for kept, extra in zip(keep_list, added_list)]
            keep = valid & (~image_mask | keep_images)
            if any(added_list):
                # Recycled tokens are new: only `compact` positions (enforced above) give them a place.
                hidden, valid, image_mask, image_ordinal = _insert_after_images(
                    hidden, keep, image_mask, image_ordinal, added, max(lengths)
                )
                positions = parts.positions.after_drop(positions, None, valid, "compact")
            else:
                source, valid = _left_repack(keep, max(lengths))
                hidden = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
                image_mask = image_mask.gather(1, source) & valid
                image_ordinal = torch.where(image_mask, image_ordinal.gather(1, source), -1)
                positions = parts.positions.after_drop(positions, source, valid, method.positions)
            kept_per_stage.append((image_ordinal, image_mask))

    logits = parts.lm_head(parts.norm(hidden[:, -1:]))[:, 0]
    for ordinal, present in kept_per_stage:
        for trace, kept in zip(traces, _kept_ordinals(ordinal, present)):
            trace.kept_image_indices.append(kept)
    return PrefillResult(logits=logits, cache=cache, stages=stages, traces=traces, rank_s=rank_timer.seconds())


@torch.no_grad()
def _decode_step(parts: DecoderParts, tokens: torch.Tensor, state: PrefillResult, step: int) -> torch.Tensor:
    """One greedy step for the whole batch: each stage's layers attend to that stage's (shorter) cache."""
    hidden = parts.embed_tokens(tokens[:, None])
    for stage in state.stages:
        stage.key_valid = torch.cat([stage.key_valid, stage.key_valid.new_ones(stage.key_valid.shape[0], 1)], dim=1)
        positions = parts.positions.decode(stage.next_position, step)
        mask = build_attention_mask(stage.key_valid, 1, parts.attn_implementation, hidden.dtype, stage.padded)
        position_embeddings = parts.rotary_emb(hidden, positions)
        hidden, _ = _run_layers(
            parts, hidden, stage.start, stage.end, mask, positions, position_embeddings, state.cache
        )
    return parts.lm_head(parts.norm(hidden))[:, 0]


def _greedy_decode(
    parts: DecoderParts,
    state: PrefillResult,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    stop: Callable[[int, list[int]], bool] | None,
    return_logits: bool,
) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Tokens per step ([B] each), tokens generated per row (EOS included), and per-step logits if asked for."""
    logits = state.logits
    batch, device = logits.shape[0], logits.device
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    generated = torch.zeros(batch, dtype=torch.long, device=device)
    steps: list[torch.Tensor] = []
    step_logits: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1).masked_fill(done, pad_token_id)
        steps.append(tokens)
        if return_logits:
            step_logits.append(logits.float())
        generated += ~done
        done |= torch.isin(tokens, eos)
        if stop is not None:
            history = torch.stack(steps, dim=1).tolist()
            for row in range(batch):
                if not done[row] and stop(row, history[row]):
                    done[row] = True
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        logits = _decode_step(parts, tokens, state, step)
    return steps, generated, step_logits


@torch.no_grad()
def generate_from_embeds(
    model: nn.Module | DecoderParts,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    image_token_mask: torch.Tensor,
    method: PruningMethod | None = None,
    *,
    max_new_tokens: int = 128,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    stop: Callable[[int, list[int]], bool] | None = None,
    sample_seeds: Sequence[int] | None = None,
    return_logits: bool = False,
    position_ids: torch.Tensor | None = None,
) -> BatchGeneration:
    """Greedy generation with image tokens dropped inside the LLM per `method`, for any HF decoder-only causal LM.

    `stop(row, token_ids)` may end a sample early (stop strings); EOS and `max_new_tokens` always do. Finished rows
    keep stepping with `pad_token_id` until the whole batch is done, as HF `generate` does.
    """
    parts = model if isinstance(model, DecoderParts) else DecoderParts.from_model(model)
    method = method or Vanilla()
    if max_new_tokens < 1:
        raise PdropEvalError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    device = inputs_embeds.device
    timings = Timings()

    with Stopwatch(device) as prefill_watch:
        state = prefill(
            parts,
            inputs_embeds,
            attention_mask,
            image_token_mask,
            method,
            sample_seeds=sample_seeds,
            position_ids=position_ids,
        )
    timings.prefill_s = prefill_watch.seconds
    timings.rank_s = state.rank_s

    with Stopwatch(device) as decode_watch:
        steps, generated, step_logits = _greedy_decode(
            parts, state, max_new_tokens, eos_token_ids, pad_token_id, stop, return_logits
        )
    timings.decode_s = decode_watch.seconds

    token_rows = torch.stack(steps, dim=1).tolist()
    counts = generated.tolist()
    generations = []
    for trace, row, count in zip(state.traces, token_rows, counts):
        trace.generated_tokens = count
        generations.append(Generation(token_ids=row[:count], trace=trace))
    logits_out = torch.stack(step_logits, dim=1) if return_logits else None
    return BatchGeneration(generations=generations, timings=timings, step_logits=logits_out)
