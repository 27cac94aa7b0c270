"""Methods that act before the LLM (DivPrune, downsample): each selection against a naive computation written
here from the official formulas, batch invariance, keep-everything = unpruned, exact FLOPs against torch's
FlopCounterMode, the shortened image span against a prompt built with fewer placeholders, and one-line errors."""

import functools
import math

import pytest
import torch
from PIL import Image, ImageDraw

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.divprune import DivPrune, cosine_distances, max_min_diverse
from pdrop_eval.methods.downsample import Downsample, grid_for_budget
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.models.prompts import format_prompt, tokenize_with_images
from pdrop_eval.pyramid.engine import SampleTrace
from pdrop_eval.pyramid.flops import ModelShape, image_tokens_per_layer
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import encode_images, generate, resize_image_spans
from tests.flop_counting import count_generation, flops_of
from tests.numerics import ForcedChoice, assert_fp32_close

pytestmark = pytest.mark.engine

PROMPTS = [
    "What color is the circle?\nAnswer the question using a single word or phrase.",
    "How many squares are there?",
    "Is there a red triangle in the image? Answer yes or no.",
    "Describe the picture in a few words, please.",
]
METHODS = [DivPrune(ratio=1 / 9), Downsample(grid=8)]


@functools.cache
def _loaded(name: str = "tiny-llava", attn: str = "sdpa", dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm(name, attn=attn, dtype=dtype)


def _exact_twin(name: str, method, batch, fp32_run, **options):
    """`fp32_run` (the method on `batch`) once more in float64 with the same kept features and kept tokens forced
    (tests.numerics.ForcedChoice), the twin its tolerance comes from; asserts it generated the same tokens."""
    loaded = _loaded(name, dtype=torch.float64)
    twin = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        ForcedChoice.of(method, fp32_run.generations),
        pixel_values=batch.pixel_values.double(),
        image_sizes=batch.image_sizes,
        **options,
    )
    for ours, exact in zip(fp32_run.generations, twin.generations, strict=True):
        assert exact.trace.kept_feature_indices == ours.trace.kept_feature_indices
        assert exact.token_ids == ours.token_ids
    return twin


def _images():
    images = []
    for index, size in enumerate([(64, 48), (40, 80), (96, 96), (120, 60)]):
        image = Image.new("RGB", size, (20 * index, 200 - 30 * index, 90))
        ImageDraw.Draw(image).ellipse((5, 5, size[0] // 2, size[1] // 2), fill=(255, 40 * index, 0))
        images.append(image)
    return images


def _naive_divprune(features: torch.Tensor, keep: int) -> tuple[list[int], float]:
    """DivPrune's greedy max–min selection with explicit loops in float64 (vbdi/divprune@799e2d9 `DivPrune`),
    and the smallest gap between a pick and the runner-up (the selection is only meaningful where that gap is far
    above float32 error)."""
    rows = features.double().tolist()
    n = len(rows)
    norms = [math.sqrt(sum(v * v for v in row)) for row in rows]
    distance = [
        [1.0 - sum(a * b for a, b in zip(rows[i], rows[j])) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)
    ]
    smallest_gap = math.inf

    def pick(scores: list[float], taken: list[int]) -> int:
        nonlocal smallest_gap
        best = max(range(n), key=lambda j: (scores[j], -j))
        others = [scores[j] for j in range(n) if j != best and j not in taken]
        if others:
            smallest_gap = min(smallest_gap, scores[best] - max(others))
        return best

    # first: the token whose second-smallest distance (its nearest other token) is largest
    first = pick([sorted(distance[i][j] for i in range(n))[1] for j in range(n)], [])
    picked = [first]
    while len(picked) < keep:
        scores = [min(distance[i][j] for i in picked) if j not in picked else -math.inf for j in range(n)]
        picked.append(pick(scores, picked))
    return sorted(picked), smallest_gap


def _naive_pool(features: torch.Tensor, grid: int, dtype: torch.dtype) -> torch.Tensor:
    """Adaptive average pooling of the row-major S×S grid with explicit loops in `dtype`: cell (i, j) is the mean
    over rows floor(i·S/G) .. ceil((i+1)·S/G)-1 and the same columns."""
    side = math.isqrt(features.shape[0])
    cells = []
    for i in range(grid):
        rows = range(math.floor(i * side / grid), math.ceil((i + 1) * side / grid))
        for j in range(grid):
            columns = range(math.floor(j * side / grid), math.ceil((j + 1) * side / grid))
            members = [features[r * side + c].to(dtype) for r in rows for c in columns]
            cells.append(sum(members) / len(members))
    return torch.stack(cells)


@pytest.mark.parametrize(("n", "d", "keep"), [(36, 16, 9), (49, 8, 20), (64, 32, 1)])
def test_divprune_selection_equals_naive_loops(n, d, keep):
    features = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
    expected, gap = _naive_divprune(features, keep)
    assert gap > 1e-4, "test data has a near-tie that float32 could break either way"
    assert max_min_diverse([features], [keep])[0].tolist() == expected


def _greedy_one_image(features: torch.Tensor, keep: int) -> list[int]:
    """The per-image loop the batched selection replaced, step for step: one image, one pick per step."""
    distance = cosine_distances(features)
    nearest = distance.kthvalue(2, dim=0).values if distance.shape[0] > 1 else distance[0]
    picked = [int(nearest.argmax())]
    closest = distance[picked[0]].clone()
    for _ in range(1, keep):
        closest[picked] = float("-inf")
        picked.append(int(closest.argmax()))
        closest = torch.minimum(closest, distance[picked[-1]])
    return sorted(picked)


def test_divprune_batch_picks_exactly_what_one_image_at_a_time_picks():
    """Images of different lengths and budgets in one batched selection, against the per-image loop; ties made on
    purpose (repeated tokens give equal distances, which argmax must break to the first index in both). Checked
    by mutation against padding columns filled with +inf and the previous pick not excluded before the argmax."""
    generator = torch.Generator().manual_seed(7)
    images, keeps = [], []
    for size, keep in [(40, 12), (17, 17), (64, 5), (1, 1), (33, 30)]:
        features = torch.randn(size, 8, generator=generator)
        if size > 20:
            features[size // 2 :: 3] = features[1]  # exact duplicates: distance ties
        images.append(features)
        keeps.append(keep)
    batched = max_min_diverse(images, keeps)
    assert [picks.tolist() for picks in batched] == [_greedy_one_image(f, k) for f, k in zip(images, keeps)]
    assert all(len(set(picks.tolist())) == k for picks, k in zip(batched, keeps))


def test_divprune_keeps_round_half_even_of_ratio_times_n():
    assert [DivPrune(ratio=r).kept_features(576) for r in (192 / 576, 128 / 576, 64 / 576, 0.098)] == [
        192,
        128,
        64,
        56,
    ]
    assert DivPrune(ratio=0.5).kept_features(5) == 2  # round(2.5) is 2, as the official int(round(...)) gives
    assert DivPrune(ratio=0.5).kept_features(7) == 4


@pytest.mark.parametrize(("side", "grid"), [(24, 8), (24, 14), (24, 11), (7, 3), (5, 5)])
def test_downsample_equals_naive_pooling(side, grid):
    """The naive loops run in fp32 (the reference) and float64 (its exact twin, for the tolerance). Checked by
    mutation against pooling the transposed (column-major) grid."""
    features = torch.randn(side * side, 6, generator=torch.Generator().manual_seed(side + grid))
    (pooled,) = Downsample(grid=grid).reduce_features([features]).features
    assert pooled.shape == (grid * grid, 6)
    assert_fp32_close(pooled, _naive_pool(features, grid, torch.float32), _naive_pool(features, grid, torch.float64))


def test_budgets_map_to_the_nearest_square_grid():
    assert [grid_for_budget(b) for b in (192, 128, 64, 1)] == [14, 11, 8, 1]


def test_resized_span_equals_a_prompt_built_with_that_many_placeholders():
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS, _images())
    counts = [7, 30, 577, 576]
    ids, mask = resize_image_spans(batch.input_ids, batch.attention_mask, loaded.image_token_id, counts)
    for row, (text, count) in enumerate(zip(PROMPTS, counts)):
        prompt = format_prompt(loaded.template, text)
        expected = tokenize_with_images(loaded.tokenizer, prompt, loaded.image_token_id, [count])
        assert ids[row][mask[row].bool()].tolist() == expected
        assert mask[row, : ids.shape[1] - len(expected)].sum() == 0
    assert ids.shape[1] == max(mask.sum(-1).tolist())


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
def test_generation_equals_vanilla_on_a_prompt_built_with_the_kept_features(method):
    """What the method feeds the LLM is exactly a prompt with K placeholders and the K reduced features.

    The plain run is the reference; the float64 model on the same features is its exact twin. Checked by mutation
    against the shortened image span placed one token later (after the first text token that follows it)."""
    loaded = _loaded()
    model64 = _loaded(dtype=torch.float64).model
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    features = encode_images(loaded.model, batch.pixel_values)
    pruned = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        image_features=features,
        max_new_tokens=4,
        return_logits=True,
    )
    reduced = method.reduce_features(features).features
    for row, text in enumerate(PROMPTS[:2]):
        ids = tokenize_with_images(
            loaded.tokenizer, format_prompt(loaded.template, text), loaded.image_token_id, [reduced[row].shape[0]]
        )
        ids = torch.tensor([ids])
        plain, exact = (
            generate(
                model,
                ids,
                torch.ones_like(ids),
                DropSchedule.none(),
                image_features=[reduced[row].to(model.dtype)],
                max_new_tokens=4,
                return_logits=True,
            )
            for model in (loaded.model, model64)
        )
        assert plain.generations[0].token_ids == pruned.generations[row].token_ids == exact.generations[0].token_ids
        assert_fp32_close(pruned.step_logits[row], plain.step_logits[0], exact.step_logits[0])
        trace = pruned.generations[row].trace
        assert trace.num_image_tokens == 576
        assert trace.image_tokens_per_layer == [reduced[row].shape[0]] * 32


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
def test_batch_of_four_equals_four_single_runs(method):
    """Each single run is the reference, its float64 twin (same kept features) gives the tolerance. Checked by
    mutation against the re-padded rows' padding marked as real tokens after the image span is shortened."""
    loaded = _loaded()
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    assert len(set(batch.attention_mask.sum(-1).tolist())) == 4
    batched = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        max_new_tokens=5,
        return_logits=True,
    )
    for row in range(len(PROMPTS)):
        single_batch = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model,
            single_batch.input_ids,
            single_batch.attention_mask,
            method,
            pixel_values=single_batch.pixel_values,
            max_new_tokens=5,
            return_logits=True,
        )
        exact = _exact_twin("tiny-llava", method, single_batch, single, max_new_tokens=5, return_logits=True)
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.trace.kept_feature_indices == theirs.trace.kept_feature_indices
        assert mine.trace.tokens_per_layer == theirs.trace.tokens_per_layer
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])
    kept = batched.generations[0].trace.kept_feature_indices
    assert (kept is not None) == isinstance(method, DivPrune)
    if kept is not None:
        assert len(kept) == 64 and kept == sorted(set(kept))


@pytest.mark.parametrize("method", [DivPrune(ratio=1.0), Downsample(grid=24)], ids=lambda m: m.label)
def test_keep_everything_equals_the_unpruned_model(method):
    """The unpruned run is the reference, the float64 model its exact twin. Checked by mutation against DivPrune's
    kept features gathered in pick order instead of ascending original order, and the downsample grid transposed."""
    loaded, loaded64 = _loaded(), _loaded(dtype=torch.float64)
    batch = build_batch(loaded, PROMPTS[:3], _images()[:3])
    common = {"max_new_tokens": 6, "return_logits": True}
    unpruned, exact = (
        generate(
            runner.model,
            batch.input_ids,
            batch.attention_mask,
            DropSchedule.none(),
            pixel_values=batch.pixel_values.to(runner.model.dtype),
            **common,
        )
        for runner in (loaded, loaded64)
    )
    kept_all = generate(
        loaded.model, batch.input_ids, batch.attention_mask, method, pixel_values=batch.pixel_values, **common
    )
    tokens = [g.token_ids for g in kept_all.generations]
    assert tokens == [g.token_ids for g in unpruned.generations] == [g.token_ids for g in exact.generations]
    assert_fp32_close(kept_all.step_logits, unpruned.step_logits, exact.step_logits)
    assert [g.trace.tokens_per_layer for g in kept_all.generations] == [
        g.trace.tokens_per_layer for g in unpruned.generations
    ]


@pytest.mark.parametrize("method", [DivPrune(ratio=0.25), Downsample(grid=11)], ids=lambda m: m.label)
def test_exact_flops_equal_flop_counter(method):
    run = count_generation(_loaded(attn="eager"), method, PROMPTS[0], _images()[0])
    assert run.trace.image_tokens_per_layer == image_tokens_per_layer(method, 32, 576)
    overhead = 2 * 576 * 576 * 64 if isinstance(method, DivPrune) else 0
    assert run.ours.exact_rank == overhead


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DivPrune(ratio=0), "DivPrune ratio 0 is outside (0, 1]"),
        (lambda: DivPrune(ratio=1.5), "DivPrune ratio 1.5 is outside (0, 1]"),
        (lambda: DivPrune(ratio=float("nan")), "is not a number"),
        (lambda: DivPrune(ratio="0.5"), "is not a number"),
        (lambda: Downsample(grid=0), "downsample grid 0 is not a positive whole number"),
        (lambda: Downsample(grid=2.5), "downsample grid 2.5 is not a positive whole number"),
        (lambda: Downsample(grid=True), "is not a positive whole number"),
        (lambda: Downsample(grid=25).kept_features(576), "larger than the image's 24×24 feature grid"),
        (lambda: Downsample(grid=4).kept_features(2880), "not a square"),
        (lambda: DivPrune(ratio=0.5, positions="shifted"), "unknown position mode"),
    ],
)
def test_invalid_settings_give_one_clear_line(make, message):
    with pytest.raises(PdropEvalError) as error:
        make()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_divprune_overhead_equals_flop_counter_exactly():
    """The selection alone, where its cost is not lost in the LLM's total: the N×N similarity product."""
    features = torch.randn(576, 64, generator=torch.Generator().manual_seed(3))
    method = DivPrune(ratio=1 / 9)
    _, measured = flops_of(lambda: method.reduce_features([features]))
    shape = ModelShape.from_config(_loaded().model.config)
    trace = SampleTrace(num_image_tokens=576, prompt_tokens=0, method=method)
    assert measured == method.overhead_flops(shape, trace) == 2 * 576 * 576 * 64


def test_divprune_on_llava_next_selects_per_image_from_its_own_token_count():
    """Anyres images give each sample its own N (newline tokens included, as the official code prunes them too);
    each keeps round(ratio · N_i) of its own, the same in a batch of four as alone (each single run is the
    reference, its float64 twin with the same kept features gives the tolerance). Checked by mutation against the
    re-padded rows' padding marked as real tokens after the image span is shortened."""
    loaded = _loaded("tiny-llava-next")
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    counts = batch.image_token_counts
    assert len(set(counts)) > 1
    method = DivPrune(ratio=0.3)
    common = {"max_new_tokens": 4, "return_logits": True}
    batched = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        **common,
    )
    for row, count in enumerate(counts):
        one = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single = generate(
            loaded.model,
            one.input_ids,
            one.attention_mask,
            method,
            pixel_values=one.pixel_values,
            image_sizes=one.image_sizes,
            **common,
        )
        exact = _exact_twin("tiny-llava-next", method, one, single, **common)
        mine, theirs = single.generations[0], batched.generations[row]
        assert theirs.trace.num_image_tokens == count
        assert len(theirs.trace.kept_feature_indices) == round(0.3 * count)
        assert mine.trace.kept_feature_indices == theirs.trace.kept_feature_indices
        assert mine.token_ids == theirs.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])
