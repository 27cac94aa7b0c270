"""VisionZip on the tiny LLaVA: its choice against a naive computation of the official formulas, batch invariance,
the keep-everything settings, exact FLOPs against torch's FlopCounterMode, and one-line errors."""

import copy
import functools
import math

import pytest
import torch
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.visionzip import (
    TowerLayerView,
    VisionZip,
    encoder_layers,
    feature_layer_index,
    read_tower_layer,
    zip_tokens,
)
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.models.prompts import format_prompt, tokenize_with_images
from pdrop_eval.pyramid.engine import SampleTrace
from pdrop_eval.pyramid.flops import ModelShape, image_tokens_per_layer, vision_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate
from tests.flop_counting import count_generation, flops_of
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine

PROMPTS = [
    "What color is the circle?\nAnswer the question using a single word or phrase.",
    "How many squares are there?",
    "Is there a red triangle in the image? Answer yes or no.",
    "Describe the picture in a few words, please.",
]


@functools.cache
def _loaded(name: str = "tiny-llava", attn: str = "sdpa", dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm(name, attn=attn, dtype=dtype)


def _images():
    """Noise images: every patch differs, so no two VisionZip targets are near-twins (flat backgrounds give
    patches that differ only by their position embedding, and near-ties between them)."""
    generator = torch.Generator().manual_seed(0)
    images = []
    for size in [(64, 48), (40, 80), (96, 96), (120, 60)]:
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
        images.append(Image.fromarray(pixels.numpy()))
    return images


def _naive_visionzip(model, pixel_values, row: int, dominant: int, contextual: int):
    """The official selection (dvlab-research/VisionZip@3151f6d clip_encoder.py) with explicit loops, from HF's eager
    attention weights and the tower layer's own norm and key projection: the decisions in float64, the merged tokens
    in float32 (the reference) and float64 (its exact twin, for the tolerance); also the smallest margin of any top-k
    or argmax decision relative to the size of what it compares (the choice is only meaningful where that is far
    above what float32 reordering can change: ~n·eps for sums of n terms)."""
    tower = model.model.vision_tower
    with torch.no_grad():
        out = tower(pixel_values, output_hidden_states=True, output_attentions=True)
    layer_index = len(encoder_layers(tower)) - 2  # LLaVA's feature layer -2
    attention = out.attentions[layer_index][row].double()  # [H, L, L], the official `attentions[-2]`
    features = out.hidden_states[layer_index + 1][row]  # the official `hidden_states[-2]`
    layer = encoder_layers(tower)[layer_index]
    with torch.no_grad():
        keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[layer_index]))[row].double()
    heads, length = attention.shape[0], attention.shape[1]
    head_dim = keys.shape[1] // heads
    metric = [
        [sum(keys[t, h * head_dim + c] for h in range(heads)) / heads for c in range(head_dim)] for t in range(length)
    ]
    margin = math.inf

    cls_score = [sum(attention[h, 0, 1 + p] for h in range(heads)).item() for p in range(length - 1)]
    ranked = sorted(range(length - 1), key=lambda p: -cls_score[p])
    if dominant - 1 < length - 1:
        gap = cls_score[ranked[dominant - 2]] - cls_score[ranked[dominant - 1]]
        margin = min(margin, gap / cls_score[ranked[0]])
    dominant_positions = sorted([0] + [p + 1 for p in ranked[: dominant - 1]])
    remaining = [t for t in range(length) if t not in dominant_positions]
    count = len(remaining)
    groups = {}
    if contextual and count:

        def unit(t):
            norm = math.sqrt(sum(float(v) ** 2 for v in metric[t]))
            return [float(v) / norm for v in metric[t]]

        step = max(1, count // contextual)
        targets = list(range(0, count, step))[:contextual]
        groups = {target: [] for target in targets}
        for place in range(count):
            if place in groups:
                continue
            mine = unit(remaining[place])
            similarity = [sum(a * b for a, b in zip(mine, unit(remaining[t]))) for t in targets]
            best = max(range(len(targets)), key=lambda i: (similarity[i], -i))
            others = [s for i, s in enumerate(similarity) if i != best]
            if others:
                margin = min(margin, similarity[best] - max(others))
            groups[targets[best]].append(remaining[place])

    def merged_tokens(dtype: torch.dtype) -> torch.Tensor:
        values = features.to(dtype)
        tokens = [values[t] for t in dominant_positions]
        for target, members in groups.items():
            merged = values[remaining[target]]
            if members:
                merged = merged + sum(values[t] for t in members) / len(members)
            tokens.append(merged)
        return torch.stack(tokens)

    return merged_tokens(torch.float32), merged_tokens(torch.float64), [p - 1 for p in dominant_positions[1:]], margin


# On a random tiny tower, settings with hundreds of merge decisions always hold a near-tie somewhere; these are the
# settings (and images) whose every decision is separated by more than 1e-4 relative, above the worst-case float32
# reordering bound of a 577-term sum (577 · 1.2e-7 ≈ 7e-5), so the float64 reference is unambiguous.
@pytest.mark.parametrize(
    ("dominant", "contextual", "rows"), [(20, 1, (0, 1, 2, 3)), (54, 3, (0, 1, 2, 3)), (54, 10, (2,))]
)
def test_selection_equals_naive_official_formulas(dominant, contextual, rows):
    """Checked by mutation against each contextual token's mean divided by its group size + 1 (the target counted
    in its own mean)."""
    loaded = _loaded(attn="eager")
    batch = build_batch(loaded, PROMPTS, _images())
    tower = loaded.model.model.vision_tower
    view = read_tower_layer(tower, batch.pixel_values, loaded.model.config.vision_feature_layer)
    for row in rows:
        expected, exact, expected_dominant, margin = _naive_visionzip(
            loaded.model, batch.pixel_values, row, dominant, contextual
        )
        assert margin > 1e-4, "test image has a near-tie that float32 could break either way"
        tokens, positions = zip_tokens(view, row, dominant, contextual)
        assert [p - 1 for p in positions[1:]] == expected_dominant
        assert tokens.shape == (dominant + contextual, expected.shape[1])
        assert_fp32_close(tokens, expected, exact)


def _exact_cls_row(layer, layer_input: torch.Tensor) -> torch.Tensor:
    """Layer f's CLS attention row over the patches, summed over heads, in float64 from the layer's own fp32 input:
    softmax(q·kᵀ·scale) written out, since HF's eager CLIP attention runs its softmax in float32 even in float64."""
    layer = copy.deepcopy(layer).double()
    attention = layer.self_attn
    normed = layer.layer_norm1(layer_input.double())
    batch, length, _ = normed.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    query = attention.q_proj(normed).view(batch, length, heads, head_dim).transpose(1, 2)
    key = attention.k_proj(normed).view(batch, length, heads, head_dim).transpose(1, 2)
    weights = (query @ key.transpose(2, 3) * attention.scale).softmax(dim=-1)
    return weights[:, :, 0, 1:].sum(dim=1)


def test_cls_row_equals_the_layers_own_eager_attention():
    """HF's eager attention weights are the reference, the same row in float64 its exact twin. Checked by mutation
    against the row read one column off (the CLS column in, the last patch out)."""
    loaded = _loaded(attn="eager")
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    tower = loaded.model.model.vision_tower
    with torch.no_grad():
        out = tower(batch.pixel_values, output_attentions=True, output_hidden_states=True)
    feature_layer = loaded.model.config.vision_feature_layer
    view = read_tower_layer(tower, batch.pixel_values, feature_layer)
    index = feature_layer_index(len(encoder_layers(tower)), feature_layer)
    expected = out.attentions[index][:, :, 0, 1:].sum(dim=1)
    exact = _exact_cls_row(encoder_layers(tower)[index], out.hidden_states[index])
    assert_fp32_close(view.cls_attention, expected, exact)


def _exact_twin(method: VisionZip, batch, fp32_run, **options):
    """`fp32_run` (VisionZip on `batch`, fp32) once more on the float64 model with its choices forced: the dominant
    top-k and each merge's argmax read the fp32 run's own CLS scores and key metric (the same fp32 computation on the
    same inputs, so the same choices), while the features, merges, projector and LLM run in float64. Asserts the
    twin kept the same patches and generated the same tokens."""
    model, model64 = _loaded().model, _loaded(dtype=torch.float64).model
    feature_layer = model.config.vision_feature_layer
    choices = read_tower_layer(model.model.vision_tower, batch.pixel_values, feature_layer)
    values = read_tower_layer(model64.model.vision_tower, batch.pixel_values.double(), feature_layer)
    forced = TowerLayerView(features=values.features, cls_attention=choices.cls_attention, metric=choices.metric)
    features = []
    for row, generation in enumerate(fp32_run.generations):
        tokens, positions = zip_tokens(forced, row, method.dominant, method.contextual)
        assert [p - 1 for p in positions[1:]] == generation.trace.kept_feature_indices
        features.append(model64.model.multi_modal_projector(tokens))
    twin = generate(
        model64, batch.input_ids, batch.attention_mask, DropSchedule.none(), image_features=features, **options
    )
    assert [g.token_ids for g in twin.generations] == [g.token_ids for g in fp32_run.generations]
    return twin


def test_batch_of_four_equals_four_single_runs():
    """Each single run is the reference, its float64 twin (same choices) gives the tolerance. Checked by mutation
    against every image's contextual tokens merged by the first image's key metric."""
    loaded = _loaded()
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    assert len(set(batch.attention_mask.sum(-1).tolist())) == 4
    method = VisionZip(dominant=54, contextual=10)
    common = {"max_new_tokens": 5, "return_logits": True}
    batched = generate(
        loaded.model, batch.input_ids, batch.attention_mask, method, pixel_values=batch.pixel_values, **common
    )
    for row in range(len(PROMPTS)):
        one = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model, one.input_ids, one.attention_mask, method, pixel_values=one.pixel_values, **common
        )
        exact = _exact_twin(method, one, single, **common)
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.trace.kept_feature_indices == theirs.trace.kept_feature_indices
        assert len(theirs.trace.kept_feature_indices) == 53
        assert theirs.trace.image_tokens_per_layer == [64] * 32 and theirs.trace.num_image_tokens == 576
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


@pytest.mark.parametrize("method", [VisionZip(dominant=577, contextual=0), VisionZip(dominant=1, contextual=576)])
def test_keeping_every_token_is_the_unpruned_prompt_plus_cls(method):
    """No VisionZip setting drops nothing (CLS always enters the LLM); keeping every token must equal the unpruned
    model given the projected CLS + all patches of the feature layer, token for token (the plain run is the
    reference, the float64 model on the same pixels its exact twin). Checked by mutation against the dominant patches
    taken one position off (patch p read at position p, not p + 1 after CLS; caught by dominant=577) and contextual
    tokens missing their target's own feature (caught by contextual=576)."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    model = loaded.model
    pruned = generate(
        model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        max_new_tokens=5,
        return_logits=True,
    )
    with_cls = {}
    for runner in (model, _loaded(dtype=torch.float64).model):
        with torch.no_grad():
            pixels = batch.pixel_values.to(runner.dtype)
            hidden = runner.model.vision_tower(pixels, output_hidden_states=True).hidden_states
            with_cls[runner] = runner.model.multi_modal_projector(hidden[runner.config.vision_feature_layer])
    for row, text in enumerate(PROMPTS[:2]):
        prompt = format_prompt(loaded.template, text)
        ids = torch.tensor([tokenize_with_images(loaded.tokenizer, prompt, loaded.image_token_id, [577])])
        plain, exact = (
            generate(
                runner,
                ids,
                torch.ones_like(ids),
                DropSchedule.none(),
                image_features=[features[row]],  # [577, d]: CLS + every patch, projected
                max_new_tokens=5,
                return_logits=True,
            )
            for runner, features in with_cls.items()
        )
        assert plain.generations[0].token_ids == pruned.generations[row].token_ids == exact.generations[0].token_ids
        assert_fp32_close(pruned.step_logits[row], plain.step_logits[0], exact.step_logits[0])


@pytest.mark.parametrize("method", [VisionZip(dominant=54, contextual=10), VisionZip(dominant=100, contextual=0)])
def test_exact_flops_equal_flop_counter(method):
    run = count_generation(_loaded(attn="eager"), method, PROMPTS[0], _images()[0])
    assert run.ours.exact_rank > 0
    assert run.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: VisionZip(dominant=0), "VisionZip dominant=0 must be a whole number >= 1"),
        (lambda: VisionZip(dominant=2.5), "VisionZip dominant=2.5 must be a whole number >= 1"),
        (lambda: VisionZip(contextual=-1), "VisionZip contextual=-1 must be a whole number >= 0"),
        (lambda: VisionZip(contextual=True), "must be a whole number"),
        (lambda: VisionZip(dominant=600).kept_features(576), "choose dominant of at most 577"),
    ],
)
def test_invalid_settings_give_one_clear_line(make, message):
    with pytest.raises(PdropEvalError) as error:
        make()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_inputs_it_cannot_handle_are_one_line():
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS[:1], _images()[:1])
    features = [torch.zeros(576, 64)]
    with pytest.raises(PdropEvalError, match="runs the vision tower itself: pass pixel_values"):
        generate(loaded.model, batch.input_ids, batch.attention_mask, VisionZip(), image_features=features)


@pytest.mark.parametrize("method", [VisionZip(dominant=54, contextual=10), VisionZip(dominant=20, contextual=600)])
def test_tower_pass_and_overhead_equal_flop_counter_exactly(method):
    """The vision side alone, where the method's overhead is not lost in the LLM's total: tower, re-read of the
    feature layer, merge products and the projector over the kept tokens, FLOP for FLOP."""
    loaded = _loaded(attn="eager")
    shape = ModelShape.from_config(loaded.model.config)
    batch = build_batch(loaded, PROMPTS[:1], _images()[:1])
    reduced, measured = flops_of(lambda: method.encode_images(loaded.model, batch.pixel_values, None))
    kept = reduced.features[0].shape[0]
    assert kept == method.kept_features(576)
    trace = SampleTrace(576, 0, method=method, image_tokens_per_layer=[kept], vision_crops=1)
    expected = vision_flops(shape.vision, shape.text.hidden, 1, kept) + method.overhead_flops(shape, trace)
    assert measured == expected
