"""SparseVLM+ inside the LLM: raters, per-layer keep counts and kept tokens against a naive loop over the official
formulas driving the layers one by one (Llama, and Qwen2 with grouped keys), batch of four = four single runs on the
LM and tiny-llava, the overhead against torch's FlopCounterMode, and one-line errors."""

import functools
import math
from typing import ClassVar

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods import METHODS
from pdrop_eval.methods.sparsevlm import SparseVLM
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import generate_from_embeds
from pdrop_eval.pyramid.flops import ModelShape, image_tokens_per_layer, sample_flops
from pdrop_eval.pyramid.vlm import generate

pytestmark = pytest.mark.engine

IMAGE_TOKENS = 24
SMALL = SparseVLM(keep_counts=(16, 10, 5), pruning_loc=(1, 2, 4), heads=2)


def _model(arch: str) -> torch.nn.Module:
    common = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "max_position_embeddings": 1024,
    }
    if arch == "llama":
        config, cls = LlamaConfig(num_key_value_heads=4, **common), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(num_key_value_heads=2, **common), Qwen2ForCausalLM
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model


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


class _Margin:
    """The smallest relative gap at any ranked decision, so a test can refuse data float32 could break either way."""

    def __init__(self):
        self.value = math.inf

    def top(self, values: dict, count: int) -> list:
        ranked = sorted(values, key=lambda key: -values[key])
        if count < len(ranked):
            scale = max(abs(v) for v in values.values())
            self.value = min(self.value, (values[ranked[count - 1]] - values[ranked[count]]) / scale)
        return ranked[:count]


def _naive_raters(embeds: torch.Tensor, start: int, margin: _Margin) -> list[int]:
    """`LlamaModel.forward`'s text raters, in float64 loops: softmax over the text tokens, mean over image tokens."""
    vectors = embeds[0].double()
    image, text = range(start, start + IMAGE_TOKENS), range(start + IMAGE_TOKENS, vectors.shape[0])
    affinity = [0.0] * len(text)
    for i in image:
        row = [float(vectors[i] @ vectors[t]) for t in text]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        for j, value in enumerate(exps):
            affinity[j] += value / sum(exps) / IMAGE_TOKENS
    mean = sum(affinity) / len(affinity)
    margin.value = min(margin.value, min(abs(a - mean) for a in affinity) / max(affinity))
    return [j for j, value in enumerate(affinity) if value > mean]


def _naive_sparsevlm(model, embeds, start, method):
    """The official 2.0 prefill of one unpadded prompt: layers driven one at a time with the layers' own eager
    attention weights (the official `attn_logits`); after each layer in `pruning_loc`, its output is pruned by the
    rater scores computed in float64 loops (RoPE bias, head sums, means, top-k). Returns the raters, the kept
    ordinals per sparse layer, the last-token logits and the smallest margin of any decision."""
    margin = _Margin()
    raters = _naive_raters(embeds, start, margin)
    text_after = embeds.shape[1] - start - IMAGE_TOKENS
    hidden, positions = embeds, torch.arange(embeds.shape[1])[None]
    ordinals = list(range(IMAGE_TOKENS))
    image_columns = list(range(start, start + IMAGE_TOKENS))
    kept, stage = [], 0
    for index, layer in enumerate(model.model.layers):
        length = hidden.shape[1]
        causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
        embeddings = model.model.rotary_emb(hidden, positions)
        with torch.no_grad():
            if index in method.pruning_loc:
                normed = layer.input_layernorm(hidden)
                weights = layer.self_attn(normed, position_embeddings=embeddings, attention_mask=causal)[1]
            output = layer(hidden, attention_mask=causal, position_ids=positions, position_embeddings=embeddings)
        hidden = output[0] if isinstance(output, tuple) else output
        if index not in method.pruning_loc:
            continue
        cos, sin = (t[0].double() for t in embeddings)
        head_dim, heads = cos.shape[-1], weights.shape[1]
        half = head_dim // 2

        def rotated_ones(i, cos=cos, sin=sin, half=half, head_dim=head_dim):
            return [float(cos[i, d] + (-sin[i, d] if d < half else sin[i, d])) for d in range(head_dim)]

        rater_columns = [length - text_after + r for r in raters]
        corrected = {}
        for i in rater_columns:
            a = rotated_ones(i)
            for j in image_columns:
                b = rotated_ones(j)
                bias = sum(x * y for x, y in zip(a, b)) / math.sqrt(head_dim)
                for h in range(heads):
                    corrected[h, i, j] = float(weights[0, h, i, j]) / bias
        sums = {h: sum(corrected[h, i, j] for i in rater_columns for j in image_columns) for h in range(heads)}
        chosen_heads = margin.top(sums, method.heads)
        scores = {
            j: sum(corrected[h, i, j] for h in chosen_heads for i in rater_columns)
            / (len(chosen_heads) * len(rater_columns))
            for j in image_columns
        }
        keep = margin.top(scores, min(method.counts[stage], len(image_columns) - 1))
        survivors = sorted(set(range(length)) - set(image_columns) | set(keep))
        ordinals = [o for o, column in zip(ordinals, image_columns) if column in keep]
        kept.append(ordinals)
        hidden, positions = hidden[:, survivors], positions[:, survivors]
        image_columns = [survivors.index(column) for column in sorted(keep)]
        stage += 1
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(hidden[:, -1]))[0]
    return raters, kept, logits, margin.value


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize(
    "method",
    [SMALL, SparseVLM(keep_counts=(20, 30, 3), pruning_loc=(0, 3, 4), heads=3)],
    ids=lambda m: m.label,
)
def test_choice_and_prefill_equal_naive_official_loop(arch, method):
    model = _model(arch)
    lengths, offsets = [44, 39], [3, 6]
    embeds, mask, images = _batch(model, lengths, offsets)
    result = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=1, return_logits=True)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        raters, expected, logits, margin = _naive_sparsevlm(model, embeds[row : row + 1, -length:], offset, method)
        assert margin > 1e-5, "test data has a near-tie that float32 could break either way"
        trace = result.generations[row].trace
        assert trace.method_counts == {"raters": len(raters), "text_after_image": length - offset - IMAGE_TOKENS}
        assert trace.kept_image_indices == expected
        assert [len(k) for k in expected] == [method.keep_count(IMAGE_TOKENS, s) for s in range(3)]
        torch.testing.assert_close(result.step_logits[row, 0], logits, atol=1e-5, rtol=1e-5)


def test_keep_counts_follow_min_of_the_list_and_one_fewer_than_present():
    """`min(k_s, n_s − 1)`: a list above the count still drops one token per sparse layer (no keep-everything)."""
    method = SparseVLM(keep_counts=(20, 30, 3), pruning_loc=(0, 3, 4))
    assert [method.keep_count(24, s) for s in range(3)] == [20, 19, 3]
    assert [method.keep_count(2, s) for s in range(3)] == [1, 0, 0]
    assert [SparseVLM(retain_tokens=r).keep_count(576, 2) for r in (192, 128, 96, 64)] == [118, 60, 28, 20]
    assert image_tokens_per_layer(SparseVLM(), 32, 576) == [576] * 3 + [300] * 4 + [200] * 9 + [118] * 16


def test_batch_of_four_equals_four_single_runs_on_the_lm():
    model = _model("qwen2")
    lengths, offsets = [44, 33, 38, 36], [3, 1, 6, 2]
    embeds, mask, images = _batch(model, lengths, offsets)
    batched = generate_from_embeds(model, embeds, mask, images, SMALL, max_new_tokens=5, return_logits=True)
    for row, length in enumerate(lengths):
        single = generate_from_embeds(
            model,
            embeds[row : row + 1, -length:],
            mask[row : row + 1, -length:],
            images[row : row + 1, -length:],
            SMALL,
            max_new_tokens=5,
            return_logits=True,
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices
        assert mine.trace.method_counts == theirs.trace.method_counts
        assert mine.token_ids == theirs.token_ids
        torch.testing.assert_close(single.step_logits[0], batched.step_logits[row], atol=1e-5, rtol=0)


def test_survivors_keep_positions_and_compact_positions_differ():
    model = _model("llama")
    embeds, mask, images = _batch(model, [40], [4])
    original = generate_from_embeds(model, embeds, mask, images, SMALL, max_new_tokens=4, return_logits=True)
    compact_method = SparseVLM(keep_counts=(16, 10, 5), pruning_loc=(1, 2, 4), heads=2, positions="compact")
    compact = generate_from_embeds(model, embeds, mask, images, compact_method, max_new_tokens=4, return_logits=True)
    assert SMALL.positions == "original" and compact_method.label.endswith("_compact")
    assert original.generations[0].trace.kept_image_indices[0] == compact.generations[0].trace.kept_image_indices[0]
    assert not torch.allclose(original.step_logits, compact.step_logits, atol=1e-4)


@functools.cache
def _tiny_llava(attn: str):
    return load_vlm("tiny-llava", attn=attn)


def _noise_image(seed: int, size=(64, 48)) -> Image.Image:
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.to(torch.uint8).numpy())


def test_batch_of_four_equals_four_single_runs_on_tiny_llava():
    loaded = _tiny_llava("sdpa")
    prompts = ["What is it?", "How many squares are there?", "Is the circle red? Answer yes or no.", "Describe it."]
    images = [_noise_image(seed) for seed in range(4)]
    batch = build_batch(loaded, prompts, images)
    method = SparseVLM(heads=2)  # RETAIN_TOKN 192: 300, 200, 118 of 576
    common = {"max_new_tokens": 4, "return_logits": True}
    batched = generate(
        loaded.model, batch.input_ids, batch.attention_mask, method, pixel_values=batch.pixel_values, **common
    )
    for row in range(4):
        one = build_batch(loaded, prompts[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model, one.input_ids, one.attention_mask, method, pixel_values=one.pixel_values, **common
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert theirs.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids
        torch.testing.assert_close(single.step_logits[0], batched.step_logits[row], atol=1e-4, rtol=1e-4)


class _Counted(SparseVLM):
    """SparseVLM whose own work (prepare and score) is measured by FlopCounterMode as it runs."""

    measured: ClassVar[list[int]] = []

    def prepare(self, inputs_embeds, valid, image_mask):
        with FlopCounterMode(display=False) as counter:
            prepared = super().prepare(inputs_embeds, valid, image_mask)
        self.measured.append(counter.get_total_flops())
        return prepared

    def score(self, boundary):
        with FlopCounterMode(display=False) as counter:
            scores = super().score(boundary)
        self.measured.append(counter.get_total_flops())
        return scores


def test_overhead_and_exact_flops_equal_flop_counter():
    loaded = _tiny_llava("eager")  # FlopCounterMode does not see CPU SDPA kernels; eager is plain matmuls
    shape = ModelShape.from_config(loaded.model.config)
    batch = build_batch(loaded, ["What is in the picture? Answer in one word."], [_noise_image(9)])
    method = _Counted(retain_tokens=64, heads=3)
    _Counted.measured.clear()
    counter = FlopCounterMode(display=False)
    with counter:
        result = generate(
            loaded.model,
            batch.input_ids,
            batch.attention_mask,
            method,
            pixel_values=batch.pixel_values,
            max_new_tokens=3,
        )
    trace = result.generations[0].trace
    counted = sample_flops(shape, trace)
    assert len(_Counted.measured) == 4 and counted.exact_rank == sum(_Counted.measured)
    assert counted.exact == pytest.approx(counter.get_total_flops(), rel=0.02)
    assert trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)


def test_registered_with_a_budget_setting():
    assert METHODS["sparsevlm"] is SparseVLM
    assert [SparseVLM(retain_tokens=r).label for r in (192, 64)] == ["sparsevlm_v2_r192", "sparsevlm_v2_r64"]
    record = SparseVLM(retain_tokens=128).record()
    assert record["keep_counts"] == [238, 108, 60] and record["layers"] == [3, 7, 16] and record["version"] == "2.0"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SparseVLM(retain_tokens=100), "retain_tokens=100 has no official keep list"),
        (lambda: SparseVLM(keep_counts=(10, 5)), "3 sparse layers but 2 keep counts"),
        (lambda: SparseVLM(keep_counts=(10, 0, 5)), "keep_counts=[10, 0, 5] must be whole numbers >= 1"),
        (lambda: SparseVLM(pruning_loc=(2, 2, 15)), "must be strictly increasing"),
        (lambda: SparseVLM(pruning_loc=(2, 6.5, 15)), "pruning_loc=[2, 6.5, 15] must be whole numbers"),
        (lambda: SparseVLM(heads=0), "heads=0 must be a whole number >= 1"),
        (lambda: SparseVLM().validate_for_depth(16), "pruning_loc must be below 15"),
        (lambda: SparseVLM(positions="shifted"), "unknown position mode"),
    ],
)
def test_invalid_settings_give_one_clear_line(make, message):
    with pytest.raises(PdropEvalError) as error:
        make()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("method", "lengths", "offsets", "message"),
    [
        (SparseVLM(keep_counts=(16, 10, 5), pruning_loc=(1, 2, 4)), [40], [4], "heads=14 exceeds the model's 4"),
        (SMALL, [29], [4], "no text raters for a prompt with 1 text tokens after the image"),
    ],
)
def test_inputs_it_cannot_handle_are_one_line(method, lengths, offsets, message):
    model = _model("llama")
    embeds, mask, images = _batch(model, lengths, offsets)
    with pytest.raises(PdropEvalError, match=message):
        generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=1)


def test_split_image_is_one_line():
    model = _model("llama")
    embeds, mask, images = _batch(model, [40], [4])
    images[0, 10] = False
    with pytest.raises(PdropEvalError, match="one contiguous span"):
        generate_from_embeds(model, embeds, mask, images, SMALL, max_new_tokens=1)
