"""SparseVLM+ inside the LLM: raters, per-layer keep counts and kept tokens against a naive loop over the official
formulas driving the layers one by one (Llama, and Qwen2 with grouped keys), batch of four = four single runs on the
LM and tiny-llava, the overhead against torch's FlopCounterMode, and one-line errors."""

import functools
import math
from typing import ClassVar

import pytest
import torch
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods import METHODS
from pdrop_eval.methods.sparsevlm import KEEP_LISTS, SparseVLM, density_peak_merge
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import generate_from_embeds
from pdrop_eval.pyramid.flops import image_tokens_per_layer
from pdrop_eval.pyramid.vlm import generate
from tests.flop_counting import count_generation, flops_of
from tests.numerics import assert_fp32_close, fp32_differs
from tests.random_lm import random_lm

pytestmark = pytest.mark.engine

IMAGE_TOKENS = 24
SMALL = SparseVLM(keep_counts=(16, 10, 5), pruning_loc=(1, 2, 4), heads=2)


def _batch(model, lengths, offsets, seed=1, image_tokens=IMAGE_TOKENS):
    """Left-padded prompts with an image span of `image_tokens` tokens at a per-sample offset."""
    generator = torch.Generator().manual_seed(seed)
    width, batch = max(lengths), len(lengths)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    images = torch.zeros(batch, width, dtype=torch.bool)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        start = width - length
        ids[row, start:] = torch.randint(3, 300, (length,), generator=generator)
        mask[row, start:] = 1
        images[row, start + offset : start + offset + image_tokens] = True
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return embeds, mask, images


def _exact_twin(fp32_run, run_in_float64):
    """The float64 twin of an fp32 SparseVLM run, the reference its tolerance comes from. SparseVLM is run anew
    (tests.numerics.ForcedChoice cannot force its recycled tokens), so the twin must make the same choices: asserted,
    a near-tie float32 broke the other way fails here rather than loosening the comparison."""
    twin = run_in_float64()
    for ours, exact in zip(fp32_run.generations, twin.generations, strict=True):
        assert exact.trace.kept_image_indices == ours.trace.kept_image_indices
        assert exact.trace.method_counts == ours.trace.method_counts
        assert exact.token_ids == ours.token_ids
    return twin


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


def _naive_raters(embeds: torch.Tensor, start: int, count: int, margin: _Margin) -> list[int]:
    """`LlamaModel.forward`'s text raters, in float64 loops: softmax over the text tokens, mean over image tokens."""
    vectors = embeds[0].double()
    image, text = range(start, start + count), range(start + count, vectors.shape[0])
    affinity = [0.0] * len(text)
    for i in image:
        row = [float(vectors[i] @ vectors[t]) for t in text]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        for j, value in enumerate(exps):
            affinity[j] += value / sum(exps) / count
    mean = sum(affinity) / len(affinity)
    margin.value = min(margin.value, min(abs(a - mean) for a in affinity) / max(affinity))
    return [j for j, value in enumerate(affinity) if value > mean]


def _naive_merge(tokens: list[list[float]], clusters: int, margin: _Margin) -> list[list[float]]:
    """`cluster_and_merge` in float64 loops, exact density ties going to the earlier token."""
    count, dim = len(tokens), len(tokens[0])
    distance = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y))) / math.sqrt(dim) for y in tokens] for x in tokens]
    density = [math.exp(-sum(d**2 for d in sorted(row)[:clusters]) / clusters) for row in distance]
    gaps = [abs(a - b) for i, a in enumerate(density) for b in density[i + 1 :] if a != b]
    margin.value = min([margin.value] + [gap / max(density) for gap in gaps])
    largest = max(max(row) for row in distance)
    score = {}
    for i in range(count):
        denser = [j for j in range(count) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        score[i] = min((distance[i][j] for j in denser), default=largest) * density[i]
    centers = margin.top(score, clusters) if clusters > 1 else [0]  # one cluster takes every token, whichever center
    members = {c: [] for c in range(clusters)}
    for i in range(count):
        nearest = min(range(clusters), key=lambda c: (distance[centers[c]][i], c))
        members[centers.index(i) if i in centers else nearest].append(i)
    return [[sum(tokens[i][k] for i in members[c]) / (len(members[c]) + 1e-6) for k in range(dim)] for c in members]


def _naive_sparsevlm(model, embeds, start, method, image_tokens=IMAGE_TOKENS, decoded=None):
    """The official prefill of one unpadded prompt: layers driven one at a time with the layers' own eager attention
    weights (the official `attn_logits`); after each layer in `pruning_loc`, its output is pruned by the rater scores
    computed in float64 loops (2.0: RoPE bias and head sums; 1.5: every head, then the merge of the best 30% + 1
    deleted tokens inserted after the kept ones and positions re-indexed). Returns the raters, the kept original
    ordinals per sparse layer, the image tokens present after each, the last-token logits and the smallest margin of
    any decision.

    `decoded` [1, 1, d], the embedding of the first generated token, gives the official first decode step instead
    of the prefill's last logits: the sparse layers skip a one-token input (`hidden_states.shape[1] != 1`), so the
    token is pruned nowhere, recycles nothing and attends, in every layer, to that layer's cached prompt tokens; its
    position is the layer's cache length under 1.5 (`get_usable_length`) and L under 2.0 (`position_ids.max() + 1`
    carried on). Appended to the prompt here, it meets exactly those keys (attention is causal), and the positions
    follow by themselves: re-indexed survivors put it at the survivor count, kept positions at L."""
    margin = _Margin()
    raters = _naive_raters(embeds, start, image_tokens, margin)
    text_after = embeds.shape[1] - start - image_tokens
    if decoded is not None:
        embeds = torch.cat([embeds, decoded], dim=1)
    appended = 0 if decoded is None else 1
    hidden, positions = embeds, torch.arange(embeds.shape[1])[None]
    ordinals = list(range(image_tokens))  # None for a merged token
    image_columns = list(range(start, start + image_tokens))
    kept, present, stage = [], [], 0
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

        rater_columns = [length - appended - text_after + r for r in raters]
        corrected = {}
        for i in rater_columns:
            a = rotated_ones(i)
            for j in image_columns:
                bias = sum(x * y for x, y in zip(a, rotated_ones(j))) / math.sqrt(head_dim)
                for h in range(heads):
                    corrected[h, i, j] = float(weights[0, h, i, j]) / (bias if method.version == "2.0" else 1.0)
        if method.version == "2.0":
            sums = {h: sum(corrected[h, i, j] for i in rater_columns for j in image_columns) for h in range(heads)}
            chosen_heads = margin.top(sums, method.heads)
        else:
            chosen_heads = list(range(heads))
        scores = {
            j: sum(corrected[h, i, j] for h in chosen_heads for i in rater_columns)
            / (len(chosen_heads) * len(rater_columns))
            for j in image_columns
        }
        keep = margin.top(scores, min(method.counts[stage], len(image_columns) - 1))
        deleted = {j: scores[j] for j in image_columns if j not in keep}
        survivors = sorted(set(range(length)) - set(image_columns) | set(keep))
        ordinals = [o for o, column in zip(ordinals, image_columns) if column in keep]
        new_hidden = hidden[:, survivors]
        if method.version == "1.5" and deleted:
            picked = margin.top(deleted, int(len(deleted) * 0.3) + 1)
            tokens = [[float(v) for v in hidden[0, j].double()] for j in picked]
            merged = torch.tensor(_naive_merge(tokens, len(picked) // 10 + 1, margin), dtype=hidden.dtype)[None]
            cut = sum(1 for column in survivors if column <= max(image_columns))
            new_hidden = torch.cat([new_hidden[:, :cut], merged, new_hidden[:, cut:]], dim=1)
            image_columns = list(range(cut - len(keep), cut + merged.shape[1]))
            ordinals += [None] * merged.shape[1]
            positions = torch.arange(new_hidden.shape[1])[None]
        else:
            image_columns = [survivors.index(column) for column in sorted(keep)]
            positions = positions[:, survivors] if method.positions == "original" else positions[:, : len(survivors)]
        hidden = new_hidden
        kept.append([o for o in ordinals if o is not None])
        present.append(len(image_columns))
        stage += 1
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(hidden[:, -1]))[0]
    return raters, kept, present, logits, margin.value


V15 = SparseVLM(version="1.5", keep_counts=(20, 12, 6), pruning_loc=(1, 2, 4))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize(
    ("method", "image_tokens", "seed"),
    [
        (SMALL, IMAGE_TOKENS, 1),
        (SparseVLM(keep_counts=(20, 30, 3), pruning_loc=(0, 3, 4), heads=3), IMAGE_TOKENS, 1),
        (V15, 64, 5),  # 44 deleted at the first sparse layer: 14 merged into 2 clusters (seed 5: no near-ties)
        (SparseVLM(version="1.5", keep_counts=(16, 10, 5), pruning_loc=(0, 2, 3)), IMAGE_TOKENS, 6),
    ],
    ids=lambda m: getattr(m, "label", str(m)),
)
def test_choice_and_prefill_equal_naive_official_loop(arch, method, image_tokens, seed):
    """The naive loop's float64 twin gives the logits' tolerance. Checked by mutation against the 1.5 merged tokens
    appended after the text instead of right after the kept image tokens."""
    model = random_lm(arch)
    lengths, offsets = [image_tokens + 20, image_tokens + 15], [3, 6]
    embeds, mask, images = _batch(model, lengths, offsets, seed=seed, image_tokens=image_tokens)
    result = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=1, return_logits=True)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        one = embeds[row : row + 1, -length:]
        raters, expected, present, logits, margin = _naive_sparsevlm(model, one, offset, method, image_tokens)
        assert margin > 1e-5, "test data has a near-tie that float32 could break either way"
        trace = result.generations[row].trace
        assert trace.method_counts == {"raters": len(raters), "text_after_image": length - offset - image_tokens}
        assert trace.kept_image_indices == expected
        assert present == [method.keep_count(image_tokens, s) + method.added_count(image_tokens, s) for s in range(3)]
        assert trace.image_tokens_per_layer == image_tokens_per_layer(method, 6, image_tokens)
        exact = _naive_sparsevlm(random_lm(arch, torch.float64), one.double(), offset, method, image_tokens)
        assert exact[1] == expected
        assert_fp32_close(result.step_logits[row, 0], logits, exact[3])


@pytest.mark.parametrize(("method", "seed"), [(SMALL, 2), (V15, 5)], ids=["2.0", "1.5"])  # seeds without near-ties
def test_decode_step_equals_the_official_one(method, seed):
    """No pruning or recycling while decoding; 1.5 decodes each layer at its own cache length, 2.0 at L. Checked by
    mutation against 1.5 decoding at L (the 2.0 rule) and 2.0 decoding at the first layers' cache length."""
    model = random_lm("llama")
    lengths, offsets = [84, 79], [3, 6]
    embeds, mask, images = _batch(model, lengths, offsets, seed=seed, image_tokens=64)
    result = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=2, return_logits=True)
    for row, (length, offset) in enumerate(zip(lengths, offsets)):
        generation = result.generations[row]
        first = torch.tensor([[generation.token_ids[0]]])
        with torch.no_grad():
            decoded = model.get_input_embeddings()(first)
        one = embeds[row : row + 1, -length:]
        *_, logits, margin = _naive_sparsevlm(model, one, offset, method, 64, decoded=decoded)
        assert margin > 1e-5, "test data has a near-tie that float32 could break either way"
        assert generation.trace.tokens_per_layer[-1] < length  # the prompt was pruned before decoding
        exact = _naive_sparsevlm(
            random_lm("llama", torch.float64), one.double(), offset, method, 64, decoded=decoded.double()
        )
        assert_fp32_close(result.step_logits[row, 1], logits, exact[3])


def test_density_peak_merge_equals_naive_loop_and_breaks_exact_ties_by_position():
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(37, 16, generator=generator, dtype=torch.float64)
    tokens[20] = tokens[5]  # an exact density tie between two tokens
    margin = _Margin()
    expected = _naive_merge(tokens.tolist(), 4, margin)
    torch.testing.assert_close(density_peak_merge(tokens, 4), torch.tensor(expected, dtype=torch.float64))
    assert margin.value > 1e-9
    twins = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    merged = density_peak_merge(twins, 2)  # tokens 0 and 2 tie; 0, the earlier, is the denser and a center
    torch.testing.assert_close(merged, torch.tensor(_naive_merge(twins.tolist(), 2, _Margin()), dtype=torch.float64))


def test_keep_counts_follow_min_of_the_list_and_one_fewer_than_present():
    """`min(k_s, n_s − 1)`: a list above the count still drops one token per sparse layer (no keep-everything)."""
    method = SparseVLM(keep_counts=(20, 30, 3), pruning_loc=(0, 3, 4))
    assert [method.keep_count(24, s) for s in range(3)] == [20, 19, 3]
    assert [method.keep_count(2, s) for s in range(3)] == [1, 0, 0]
    assert [SparseVLM(retain_tokens=r).keep_count(576, 2) for r in (192, 128, 96, 64)] == [118, 60, 28, 20]
    assert image_tokens_per_layer(SparseVLM(), 32, 576) == [576] * 3 + [300] * 4 + [200] * 9 + [118] * 16
    v15 = SparseVLM(version="1.5")  # 276 deleted → 83 recycled → 9 merged; 109 → 33 → 4; 94 → 29 → 3
    assert [(v15.keep_count(576, s), v15.added_count(576, s)) for s in range(3)] == [(300, 9), (200, 4), (110, 3)]
    edge = SparseVLM(version="1.5", keep_counts=(10, 5, 2), pruning_loc=(0, 1, 2))  # 30 deleted → 10 → 2 merged
    assert [(edge.keep_count(40, s), edge.added_count(40, s)) for s in range(3)] == [(10, 2), (5, 1), (2, 1)]
    assert image_tokens_per_layer(v15, 32, 576) == [576] * 3 + [309] * 4 + [204] * 9 + [113] * 16


@pytest.mark.parametrize("method", [SMALL, V15], ids=lambda m: m.label)
def test_batch_of_four_equals_four_single_runs_on_the_lm(method):
    """Each single run is the reference, its float64 twin gives the tolerance. Checked by mutation against decode
    steps that attend to the padding of shorter prompts."""
    model = random_lm("qwen2")
    lengths, offsets = [84, 73, 78, 76], [3, 1, 6, 2]
    embeds, mask, images = _batch(model, lengths, offsets, image_tokens=64)
    batched = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=5, return_logits=True)
    for row, length in enumerate(lengths):
        one = (embeds[row : row + 1, -length:], mask[row : row + 1, -length:], images[row : row + 1, -length:])
        single = generate_from_embeds(model, *one, method, max_new_tokens=5, return_logits=True)
        exact = _exact_twin(
            single,
            lambda one=one: generate_from_embeds(
                random_lm("qwen2", torch.float64),
                one[0].double(),
                *one[1:],
                method,
                max_new_tokens=5,
                return_logits=True,
            ),
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices
        assert mine.trace.method_counts == theirs.trace.method_counts
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


def test_survivors_keep_positions_and_compact_positions_differ():
    """The same kept sets with compact positions give other logits, by more than fp32 rounding can explain (the
    float64 twin of the original-positions run gives the tolerance). Checked by mutation against positions
    re-numbered compactly whatever the method's position mode."""
    model = random_lm("llama")
    embeds, mask, images = _batch(model, [40], [4])
    original = generate_from_embeds(model, embeds, mask, images, SMALL, max_new_tokens=4, return_logits=True)
    compact_method = SparseVLM(keep_counts=(16, 10, 5), pruning_loc=(1, 2, 4), heads=2, positions="compact")
    compact = generate_from_embeds(model, embeds, mask, images, compact_method, max_new_tokens=4, return_logits=True)
    assert SMALL.positions == "original" and compact_method.label.endswith("_compact")
    assert original.generations[0].trace.kept_image_indices[0] == compact.generations[0].trace.kept_image_indices[0]
    exact = _exact_twin(
        original,
        lambda: generate_from_embeds(
            random_lm("llama", torch.float64),
            embeds.double(),
            mask,
            images,
            SMALL,
            max_new_tokens=4,
            return_logits=True,
        ),
    )
    assert fp32_differs(original.step_logits, compact.step_logits, exact.step_logits)


@functools.cache
def _tiny_llava(attn: str, dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm("tiny-llava", attn=attn, dtype=dtype)


def _noise_image(seed: int, size=(64, 48)) -> Image.Image:
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.to(torch.uint8).numpy())


@pytest.mark.parametrize("method", [SparseVLM(heads=2), SparseVLM(version="1.5")], ids=lambda m: m.label)
def test_batch_of_four_equals_four_single_runs_on_tiny_llava(method):
    """RETAIN_TOKN 192 on 576 image tokens: 2.0 keeps 300, 200, 118; 1.5 keeps 300, 200, 110 plus merged ones.
    Each single run is the reference, its float64 twin gives the tolerance. Checked by mutation against decode
    steps that attend to the padding of shorter prompts."""
    loaded = _tiny_llava("sdpa")
    prompts = ["What is it?", "How many squares are there?", "Is the circle red? Answer yes or no.", "Describe it."]
    images = [_noise_image(seed) for seed in range(4)]
    batch = build_batch(loaded, prompts, images)
    common = {"max_new_tokens": 4, "return_logits": True}
    batched = generate(
        loaded.model, batch.input_ids, batch.attention_mask, method, pixel_values=batch.pixel_values, **common
    )
    for row in range(4):
        one = build_batch(loaded, prompts[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model, one.input_ids, one.attention_mask, method, pixel_values=one.pixel_values, **common
        )
        exact = _exact_twin(
            single,
            lambda one=one: generate(
                _tiny_llava("sdpa", torch.float64).model,
                one.input_ids,
                one.attention_mask,
                method,
                pixel_values=one.pixel_values.double(),
                **common,
            ),
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert theirs.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


class _Counted(SparseVLM):
    """SparseVLM whose own work (prepare and score) is measured by FlopCounterMode as it runs."""

    measured: ClassVar[list[int]] = []

    def prepare(self, inputs_embeds, valid, image_mask):
        prepared, measured = flops_of(lambda: super(_Counted, self).prepare(inputs_embeds, valid, image_mask))
        self.measured.append(measured)
        return prepared

    def score(self, boundary):
        scores, measured = flops_of(lambda: super(_Counted, self).score(boundary))
        self.measured.append(measured)
        return scores


@pytest.mark.parametrize("settings", [{"retain_tokens": 64, "heads": 3}, {"version": "1.5", "retain_tokens": 128}])
def test_overhead_and_exact_flops_equal_flop_counter(settings):
    method = _Counted(**settings)
    _Counted.measured.clear()
    prompt = "What is in the picture? Answer in one word."
    run = count_generation(_tiny_llava("eager"), method, prompt, _noise_image(9))
    assert len(_Counted.measured) == 4 and run.ours.exact_rank == sum(_Counted.measured)
    assert run.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)


def test_registered_with_a_budget_setting():
    assert METHODS["sparsevlm"] is SparseVLM
    assert [SparseVLM(retain_tokens=r).label for r in (192, 64)] == ["sparsevlm_v2_r192", "sparsevlm_v2_r64"]
    record = SparseVLM(retain_tokens=128).record()
    assert record["keep_counts"] == [238, 108, 60] and record["layers"] == [3, 7, 16] and record["version"] == "2.0"
    v15 = SparseVLM(version="1.5", retain_tokens=128)
    assert v15.label == "sparsevlm_v1.5_r128" and v15.positions == "compact"
    assert v15.record()["keep_counts"] == [303, 110, 36] and v15.record()["positions"] == "compact"


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
        (lambda: SparseVLM(version="1.0"), "version='1.0' is unknown: use '2.0' (SparseVLM+, current) or '1.5'"),
        (lambda: SparseVLM(version="1.5", positions="original"), "use positions='compact'"),
        (lambda: SparseVLM(version="1.5", retain_tokens=100), "use one of 192, 128, 96, 64"),
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
    model = random_lm("llama")
    embeds, mask, images = _batch(model, lengths, offsets)
    with pytest.raises(PdropEvalError, match=message):
        generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=1)


def test_split_image_is_one_line():
    model = random_lm("llama")
    embeds, mask, images = _batch(model, [40], [4])
    images[0, 10] = False
    with pytest.raises(PdropEvalError, match="one contiguous span"):
        generate_from_embeds(model, embeds, mask, images, SMALL, max_new_tokens=1)


def test_budgets_map_to_the_official_keep_lists_and_other_budgets_are_one_line():
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings

    llava = ModelGeometry(num_layers=32, image_tokens=576)
    for budget in (192, 128, 64):
        (method,) = SparseVLM.for_budget(budget, llava, SweepSettings())
        assert method.retain_tokens == budget and method.counts == KEEP_LISTS["2.0"][budget]
    with pytest.raises(PdropEvalError, match="official keep lists for budgets 192, 128, 96, 64 only, not 100"):
        SparseVLM.for_budget(100, llava, SweepSettings())
    with pytest.raises(PdropEvalError, match="576 image tokens"):
        SparseVLM.check_model(ModelGeometry(num_layers=32, image_tokens=None, anyres=True))
    SparseVLM.check_model(ModelGeometry(num_layers=32, image_tokens=576, num_heads=32))
    with pytest.raises(PdropEvalError, match="the 14 attention heads .* this model has 4"):
        SparseVLM.check_model(ModelGeometry(num_layers=32, image_tokens=576, num_heads=4))
