"""Pruned generation for VLMs of a registered family: vision tower + projector once (the family's), the method's
before-the-LLM reduction, then the staged layer loop with the family's positions.

Image features are a separate step (`encode_images`) so a sweep can encode each image once and reuse the features
for every method that leaves the tower alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.registry import family_of
from pdrop_eval.methods.base import PruningMethod
from pdrop_eval.methods.vanilla import Vanilla
from pdrop_eval.pyramid.engine import BatchGeneration, DecoderParts, generate_from_embeds
from pdrop_eval.pyramid.timing import Stopwatch


def image_token_id(model: nn.Module) -> int:
    config = model.config
    token = getattr(config, "image_token_id", None)
    return int(token if token is not None else config.image_token_index)


@torch.no_grad()
def encode_images(
    model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Projected features per image ([N_i, d] each; N_i varies with LLaVA-NeXT's anyres tiles), by the model's
    family."""
    return family_of(model).encode_images(model, pixel_values, image_sizes)


def count_crops(model: nn.Module, image_sizes: torch.Tensor | None, batch: int) -> list[int]:
    """Vision-tower passes per image (one for LLaVA-1.5; the base view plus anyres tiles for LLaVA-NeXT)."""
    return family_of(model).count_crops(model, image_sizes, batch)


def embed_with_images(
    model: nn.Module, input_ids: torch.Tensor, image_features: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings with each image's features in place of its placeholder tokens, and the image mask."""
    return family_of(model).embed(model, input_ids, image_features)


def resize_image_spans(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token: int, counts: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gives each row's image placeholder span `counts[b]` tokens and re-pads on the left.

    This gives exactly the inputs of a prompt built with `counts[b]` placeholders: LLaVA splits the prompt at
    `<image>` and tokenises each text chunk on its own (REFERENCE §4), so the text ids do not depend on how many
    placeholders stand between them; embeddings are per token; and the engine derives every position from the
    attention mask, so each token gets the position it would have had in that prompt. It is also what DivPrune's
    and VisionZip's official code amount to (the first indexes the kept columns out of the embedded prompt, the
    second builds the prompt around the shorter features; both leave positions to be rebuilt 0..len-1).
    """
    rows = []
    for ids, mask, count in zip(input_ids.tolist(), attention_mask.tolist(), counts):
        real = [token for token, keep in zip(ids, mask) if keep]
        if image_token not in real:
            raise PdropEvalError("a prompt has no image placeholder: build inputs with pdrop_eval.models.build_batch")
        first, end = real.index(image_token), len(real) - real[::-1].index(image_token)
        rows.append(real[:first] + [image_token] * count + real[end:])
    width = max(len(row) for row in rows)
    resized = torch.zeros(len(rows), width, dtype=input_ids.dtype)
    mask = torch.zeros(len(rows), width, dtype=attention_mask.dtype)
    for index, row in enumerate(rows):
        resized[index, width - len(row) :] = torch.tensor(row, dtype=input_ids.dtype)
        mask[index, width - len(row) :] = 1
    return resized.to(input_ids.device), mask.to(attention_mask.device)


def stop_at_strings(tokenizer, strings: Sequence[str]) -> Callable[[int, list[int]], bool]:
    """A `stop` callback for generate: a sample ends once its decoded answer contains any of `strings`.

    Only the tail of the answer is decoded each step (enough tokens to hold the longest string), so the check
    stays cheap however long the answer grows.
    """
    wanted = [text for text in strings if text]
    window = max((len(text) for text in wanted), default=0) + 2

    def stop(row: int, token_ids: list[int]) -> bool:
        tail = tokenizer.decode(token_ids[-window:], skip_special_tokens=True)
        return any(text in tail for text in wanted)

    return stop


def prompt_seeds(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """A per-sample seed from the prompt's own tokens, so random drops do not depend on batch composition."""
    return [
        zlib.crc32(row[mask.bool()].cpu().numpy().tobytes()) for row, mask in zip(input_ids, attention_mask)
    ]


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    method: PruningMethod | None = None,
    *,
    pixel_values: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    image_features: Sequence[torch.Tensor] | None = None,
    max_new_tokens: int = 128,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    stop: Callable[[int, list[int]], bool] | None = None,
    sample_seeds: Sequence[int] | None = None,
    return_logits: bool = False,
    parts: DecoderParts | None = None,
    vision_crops: Sequence[int] | None = None,
) -> BatchGeneration:
    """Greedy generation for a LLaVA / LLaVA-NeXT batch (left padded, one image per prompt), pruned per `method`.

    Pass `pixel_values` (and `image_sizes` for NeXT), or `image_features` from `encode_images` to reuse them (a
    method that runs the tower itself, `method.runs_tower(model)`, needs the pixels). The method first reduces each
    image's features (before the LLM; most methods leave them alone), the prompt's image span is shortened to
    match (`resize_image_spans`), then the engine drops inside the LLM.
    Each trace records the vision-tower passes its image needs (`vision_crops`, derived from `image_sizes` unless
    given), so FLOPs count the tower even when its features were reused, and the image's token count.
    """
    method = method or Vanilla()
    device = input_ids.device
    placeholder = image_token_id(model)
    tower_counts = ((input_ids == placeholder) & attention_mask.bool()).sum(-1).tolist()
    seeds = sample_seeds if sample_seeds is not None else prompt_seeds(input_ids, attention_mask)
    vision_s = reduce_s = 0.0
    if method.runs_tower(model):
        if pixel_values is None:
            raise PdropEvalError(f"{method.label} runs the vision tower itself: pass pixel_values to generate")
        with Stopwatch(device) as watch:
            reduced = method.encode_images(model, pixel_values, image_sizes)
        vision_s = watch.seconds
    else:
        if image_features is None:
            if pixel_values is None:
                raise PdropEvalError("generate needs pixel_values or precomputed image_features")
            with Stopwatch(device) as watch:
                image_features = encode_images(model, pixel_values, image_sizes)
            vision_s = watch.seconds
        with Stopwatch(device) as watch:
            reduced = method.reduce_features(list(image_features))
        reduce_s = watch.seconds
    entering = [int(features.shape[0]) for features in reduced.features]
    if entering != tower_counts:
        input_ids, attention_mask = resize_image_spans(input_ids, attention_mask, placeholder, entering)
    family = family_of(model)
    embeds, image_mask = family.embed(model, input_ids, reduced.features)
    result = generate_from_embeds(
        parts or DecoderParts.from_model(model, family.positions),
        embeds,
        attention_mask,
        image_mask,
        method,
        max_new_tokens=max_new_tokens,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        stop=stop,
        sample_seeds=seeds,
        return_logits=return_logits,
        position_ids=family.prompt_positions(model, input_ids, attention_mask, image_sizes),
    )
    result.timings.vision_s = vision_s
    result.timings.prefill_s += reduce_s  # choosing tokens before the LLM is part of prefill and rank
    result.timings.rank_s += reduce_s
    crops = vision_crops if vision_crops is not None else count_crops(model, image_sizes, input_ids.shape[0])
    grids = family.vision_grids(image_sizes, input_ids.shape[0])
    for row, (generation, count) in enumerate(zip(result.generations, crops)):
        generation.trace.vision_crops = count
        generation.trace.vision_grid = grids[row]
        generation.trace.num_image_tokens = tower_counts[row]
        if reduced.kept_indices is not None:
            generation.trace.kept_feature_indices = reduced.kept_indices[row]
    return result
