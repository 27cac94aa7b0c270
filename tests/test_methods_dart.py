"""DART inside the LLM: its choice against a naive loop over the official formulas (Llama, and Qwen2 with grouped
keys), batch of four = four single runs, exact FLOPs against torch's FlopCounterMode, and one-line errors."""

import functools
import math

import pytest
import torch
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.dart import DART, ImageSpan, dart_choices
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import generate_from_embeds
from pdrop_eval.pyramid.flops import image_tokens_per_layer
from pdrop_eval.pyramid.vlm import generate
from tests.flop_counting import count_generation
from tests.numerics import ForcedChoice, assert_fp32_close, fp32_differs
from tests.random_lm import random_lm

pytestmark = pytest.mark.engine

IMAGE_TOKENS = 24


def _exact_lm_twin(arch, method, embeds, mask, images, fp32_run, max_new_tokens):
    """`fp32_run` (the method on these prompts) once more on the float64 model with DART's kept tokens forced
    (tests.numerics.ForcedChoice), the twin its tolerance comes from; asserts it kept and generated the same."""
    twin = generate_from_embeds(
        random_lm(arch, torch.float64),
        embeds.double(),
        mask,
        images,
        ForcedChoice.of(method, fp32_run.generations),
        max_new_tokens=max_new_tokens,
        return_logits=True,
    )
    for ours, exact in zip(fp32_run.generations, twin.generations, strict=True):
        assert exact.trace.kept_image_indices == ours.trace.kept_image_indices
        assert exact.token_ids == ours.token_ids
    return twin


def _batch(model, lengths, offsets, seed=1):
    """Left-padded prompts with an image span of IMAGE_TOKENS tokens at a per-sample offset."""
    generator = torch.Generator().manual_seed(seed)
    width, batch = max(lengths), len(lengths)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    images = torch.zeros(batch, width, dtype=torch.bool)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        start = width - length
        ids[row, start:] = torch.randint(3, 300, (length,), generator=generator)
        mask[row, start:] = 1
        images[row, start + offset : start + offset + IMAGE_TOKENS] = True
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return embeds, mask, images


def _official_token_topk(method: DART, image_tokens: int) -> int:
    """TOKEN_TOPK as `get_retained_image_token` (VTC-Bench@983e443 external/DART, modeling_llama_self.py) sets it:
    the LLaVA-1.5 branch `ceil(MAX_NUM_TRUNCTION // pivots)`, replaced when `config.text_length` is set (LLaVA-NeXT)
    by `int(min(retain_token_num_for_llava_next, N − pivot_image_token) // pivots)`; the first branch is the second
    wherever it runs (below N − pivot_image_token; above, its topk fails)."""
    pivots = method.pivot_image_tokens + method.pivot_text_tokens
    if method.max_num_trunction <= image_tokens - method.pivot_image_tokens:
        return math.ceil(method.max_num_trunction // pivots)
    return int(min(method.max_num_trunction, image_tokens - method.pivot_image_tokens) // pivots)


def _naive_dart(model, embeds, start, method):
    """The official `get_retained_image_token` for one unpadded prompt, loop by loop: the keys after RoPE and
    repeat_kv (explicit float64 loops), their L1 norms, the top `pivot_image_token` image and `pivot_text_token`
    text pivots, `indices_set = set(image_indices + query_indices)`, `valid_indices` = the image span minus the
    image pivots, then `for item in list(indices_set)`: the TOKEN_TOPK valid tokens of largest negative cosine
    similarity of the final-normed states, added to the set and removed from `valid_indices` (whose `list()` order
    the official top-k indexes into), and finally the text pivots dropped. Returns the kept ordinals among the image
    tokens and the smallest margin of any top-k decision."""
    k = method.layer
    with torch.no_grad():
        out = model(inputs_embeds=embeds, output_hidden_states=True)
        layer = model.model.layers[k - 1]
        keys = layer.self_attn.k_proj(layer.input_layernorm(out.hidden_states[k - 1]))[0].double()
        positions = torch.arange(embeds.shape[1])[None]
        cos, sin = (t[0].double() for t in model.model.rotary_emb(out.hidden_states[k - 1], positions))
        states = model.model.norm(out.hidden_states[k])[0].double()
    length, head_dim = keys.shape[0], layer.self_attn.head_dim
    kv_heads = keys.shape[1] // head_dim
    groups = model.config.num_attention_heads // kv_heads
    half = head_dim // 2
    norms = []
    for t in range(length):
        total = 0.0
        for h in range(kv_heads):
            x = keys[t, h * head_dim : (h + 1) * head_dim]
            for i in range(head_dim):
                rotated = -x[i + half] if i < half else x[i - half]
                total += groups * abs(float(x[i] * cos[t, i] + rotated * sin[t, i]))
        norms.append(total)
    margin = math.inf

    def top(values: dict, count: int) -> list:
        nonlocal margin
        ranked = sorted(values, key=lambda key: -values[key])
        if count < len(ranked):
            margin = min(
                margin, (values[ranked[count - 1]] - values[ranked[count]]) / max(abs(v) for v in values.values())
            )
        return ranked[:count]

    end = start + IMAGE_TOKENS
    image_pivots = top({t: norms[t] for t in range(start, end)}, method.pivot_image_tokens)
    text_pivots = top({t: norms[t] for t in range(end, length)}, method.pivot_text_tokens)
    chosen = set(image_pivots + text_pivots)
    candidates = set(range(start, end)) - set(image_pivots)
    for pivot in list(chosen):

        def cosine(a, b):
            return float(states[a] @ states[b]) / (float(states[a].norm()) * float(states[b].norm()))

        dissimilarity = {t: -cosine(pivot, t) for t in list(candidates)}
        taken = top(dissimilarity, _official_token_topk(method, IMAGE_TOKENS))
        chosen.update(taken)
        candidates.difference_update(taken)
    chosen.difference_update(text_pivots)
    return sorted(t - start for t in chosen), margin


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize(
    "method",
    [
        DART(layer=2, max_num_trunction=8),
        DART(layer=3, max_num_trunction=12, pivot_image_tokens=2, pivot_text_tokens=2),
        DART(layer=2, max_num_trunction=40),  # above N − 4 = 20: the NeXT branch's cap, T = 20 // 8 = 2
    ],
    ids=lambda m: m.label,
)
def test_choice_equals_naive_official_loop(arch, method):
    model = random_lm(arch)
    lengths, offsets = [44, 37], [3, 6]
    embeds, mask, images = _batch(model, lengths, offsets)
    result = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=1)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        expected, margin = _naive_dart(model, embeds[row : row + 1, -length:], offset, method)
        assert margin > 1e-5, "test data has a near-tie that float32 could break either way"
        kept = result.generations[row].trace.kept_image_indices
        assert kept == [expected]
        assert len(expected) == method.keep_count(IMAGE_TOKENS, 0)


def test_survivors_keep_positions_and_decode_at_prompt_length():
    """DART keeps its survivors' original positions (FastV's: gaps kept, decode at L + t in every layer), so the
    same kept set with compact positions gives other logits, by more than fp32 rounding can explain (the tolerance
    comes from the float64 twin of the DART run, its kept set forced). Checked by mutation against positions
    re-numbered compactly whatever the method's position mode."""
    model = random_lm("llama")
    embeds, mask, images = _batch(model, [40], [4])
    method = DART(layer=2, max_num_trunction=8)
    assert method.positions == "original" and method.label == "dart_k2_t8"
    dart = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=4, return_logits=True)
    compact = generate_from_embeds(
        model,
        embeds,
        mask,
        images,
        DART(layer=2, max_num_trunction=8, positions="compact"),
        max_new_tokens=4,
        return_logits=True,
    )
    assert dart.generations[0].trace.kept_image_indices == compact.generations[0].trace.kept_image_indices
    exact = _exact_lm_twin("llama", method, embeds, mask, images, dart, max_new_tokens=4)
    assert fp32_differs(dart.step_logits, compact.step_logits, exact.step_logits)


def test_batch_of_four_equals_four_single_runs_on_the_lm():
    """Each single run is the reference, its float64 twin (same kept set) gives the tolerance. Checked by mutation
    against decode positions counted from the padded width instead of each prompt's own length."""
    model = random_lm("qwen2")
    lengths, offsets = [44, 31, 38, 35], [3, 1, 6, 2]
    embeds, mask, images = _batch(model, lengths, offsets)
    method = DART(layer=2, max_num_trunction=8)
    batched = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=5, return_logits=True)
    for row, length in enumerate(lengths):
        single = generate_from_embeds(
            model,
            embeds[row : row + 1, -length:],
            mask[row : row + 1, -length:],
            images[row : row + 1, -length:],
            method,
            max_new_tokens=5,
            return_logits=True,
        )
        exact = _exact_lm_twin(
            "qwen2",
            method,
            embeds[row : row + 1, -length:],
            mask[row : row + 1, -length:],
            images[row : row + 1, -length:],
            single,
            max_new_tokens=5,
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


def _one_prompt_at_a_time(key_norms, states, spans, per_pivot, pivots=(4, 4)):
    """Each row's choice alone: its unpadded prompt as a batch of one (what the per-prompt loop computed)."""
    chosen = []
    for row, span in enumerate(spans):
        alone = ImageSpan(0, span.start, span.count)
        norms, own = key_norms[row : row + 1, span.offset :], states[row : row + 1, span.offset :]
        chosen += dart_choices(norms, own, [alone], *pivots, [per_pivot[row]])
    return chosen


def test_batched_choice_equals_one_prompt_at_a_time_with_ties():
    """Rows of different lengths, offsets and image spans, left padded, in one call against each row alone; ties
    made on purpose (repeated states give equal similarities, repeated key norms equal pivot scores), which must
    go to the same token in both. Checked by mutation against padding filled with +inf instead of −inf and each
    row's T taken from the longest row."""
    generator = torch.Generator().manual_seed(11)
    layout = [(50, 4, 30, 3), (41, 2, 24, 2), (36, 7, 20, 1)]  # (prompt length, image start, image tokens, T)
    width = max(length for length, *_ in layout)
    key_norms = torch.rand(len(layout), width, generator=generator)
    states = torch.randn(len(layout), width, 16, generator=generator)
    spans = []
    for row, (length, start, count, _) in enumerate(layout):
        offset = width - length
        spans.append(ImageSpan(offset, start, count))
        first = offset + start
        states[row, first + 10 : first + count : 4] = states[row, first + 1]  # equal similarity to every pivot
        key_norms[row, first + 3] = key_norms[row, first + 5] = key_norms[row, first : first + count].max()
        key_norms[row, :offset] = 1e9  # padding must never become a pivot
    per_pivot = [t for *_, t in layout]
    batched = dart_choices(key_norms, states, spans, 4, 4, per_pivot)
    assert batched == _one_prompt_at_a_time(key_norms, states, spans, per_pivot)
    assert [len(kept) for kept in batched] == [4 + 8 * t for t in per_pivot]
    assert all(span.start <= min(kept) and max(kept) < span.start + span.count for span, kept in zip(spans, batched))


@functools.cache
def _tiny_llava(attn: str, dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm("tiny-llava", attn=attn, dtype=dtype)


def _noise_image(seed: int, size=(64, 48)) -> Image.Image:
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.to(torch.uint8).numpy())


def test_batch_of_four_equals_four_single_runs_on_tiny_llava():
    """Each single run is the reference, its float64 twin (same kept set) gives the tolerance. Checked by mutation
    against decode steps that attend to the padding of shorter prompts."""
    loaded = _tiny_llava("sdpa")
    prompts = ["What is it?", "How many squares are there?", "Is the circle red? Answer yes or no.", "Describe it."]
    images = [_noise_image(seed) for seed in range(4)]
    batch = build_batch(loaded, prompts, images)
    method = DART()  # K=2, 128 → 132 of 576
    common = {"max_new_tokens": 4, "return_logits": True}
    batched = generate(
        loaded.model, batch.input_ids, batch.attention_mask, method, pixel_values=batch.pixel_values, **common
    )
    for row in range(4):
        one = build_batch(loaded, prompts[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model, one.input_ids, one.attention_mask, method, pixel_values=one.pixel_values, **common
        )
        exact = generate(
            _tiny_llava("sdpa", torch.float64).model,
            one.input_ids,
            one.attention_mask,
            ForcedChoice.of(method, single.generations),
            pixel_values=one.pixel_values.double(),
            **common,
        )
        mine, theirs, twin = single.generations[0], batched.generations[row], exact.generations[0]
        assert [len(k) for k in theirs.trace.kept_image_indices] == [132]
        assert theirs.trace.image_tokens_per_layer == [576, 576] + [132] * 30
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices == twin.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids == twin.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


def test_exact_flops_equal_flop_counter():
    method = DART(max_num_trunction=64)
    run = count_generation(_tiny_llava("eager"), method, "What is in the picture?", _noise_image(9))
    text = run.shape.text
    assert run.ours.exact_rank == 2 * run.trace.prompt_tokens * 64 * text.kv_heads * text.head_dim
    assert run.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DART(layer=0), "DART layer=0 must be a whole number >= 1"),
        (lambda: DART(max_num_trunction=2.5), "DART max_num_trunction=2.5 must be a whole number >= 1"),
        (lambda: DART(pivot_text_tokens=True), "must be a whole number"),
        (lambda: DART(max_num_trunction=7), "below one token per pivot"),
        (lambda: DART(max_num_trunction=64).keep_count(11, 0), "has only 11 image tokens: lower pivot_image_tokens"),
        (lambda: DART(positions="shifted"), "unknown position mode"),
    ],
)
def test_invalid_settings_give_one_clear_line(make, message):
    with pytest.raises(PdropEvalError) as error:
        make()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_too_few_text_tokens_after_the_image_is_one_line():
    model = random_lm("llama")
    embeds, mask, images = _batch(model, [30], [4])  # 2 tokens after the image, 4 text pivots wanted
    with pytest.raises(PdropEvalError, match="text pivots after the image"):
        generate_from_embeds(model, embeds, mask, images, DART(layer=2, max_num_trunction=8), max_new_tokens=1)
