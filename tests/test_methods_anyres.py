"""Downsample, VisionZip and DART on LLaVA-NeXT's anyres crops (issue 11): each against a naive transcription of
its rule (the official one where there is one), a batch of images of different sizes against single runs, and
keeping everything against the unpruned model."""

import functools
import math

import pytest
import torch
from PIL import Image

from pdrop_eval.methods.dart import DART
from pdrop_eval.methods.downsample import Downsample
from pdrop_eval.methods.visionzip import VisionZip, read_tower_layer, zip_tokens
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import SampleTrace
from pdrop_eval.pyramid.flops import ModelShape, vision_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import encode_images, generate
from tests.flop_counting import flops_of
from tests.numerics import ForcedChoice, assert_fp32_close
from tests.test_methods_before_llm import _naive_pool

pytestmark = pytest.mark.engine

PROMPTS = [
    "What color is the circle?\nAnswer the question using a single word or phrase.",
    "How many squares are there?",
    "Is there a red triangle in the image? Answer yes or no.",
    "Describe the picture in a few words, please.",
]
SIZES = [(64, 48), (40, 80), (96, 96), (120, 60), (30, 100)]  # (width, height): wide, tall, square, 2:1, 3:10


@functools.cache
def _loaded(dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm("tiny-llava-next", attn="sdpa", dtype=dtype)


def _images(sizes=SIZES[:4]):
    """Noise images, so no two patches (and no two VisionZip scores) are near-twins."""
    generator = torch.Generator().manual_seed(0)
    images = []
    for width, height in sizes:
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
        images.append(Image.fromarray(pixels.numpy()))
    return images


def _crops(model, batch, row: int) -> tuple[torch.Tensor, int, int]:
    """One image's crops (base first), and its tile grid (rows, columns) from the best pinpoint, written out."""
    height, width = batch.image_sizes[row].tolist()
    tile = model.config.vision_config.image_size
    best = None
    for pin_height, pin_width in model.config.image_grid_pinpoints:  # LLaVA's select_best_resolution
        scale = min(pin_width / width, pin_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pin_width * pin_height - effective
        if best is None or effective > best[0] or (effective == best[0] and wasted < best[1]):
            best = (effective, wasted, pin_height, pin_width)
    rows, columns = best[2] // tile, best[3] // tile
    return batch.pixel_values[row, : 1 + rows * columns], rows, columns


def _projected(model, crops: torch.Tensor) -> torch.Tensor:
    """[n, S·S, d]: the tower's feature layer without CLS, projected (HF LlavaNextModel.get_image_features)."""
    with torch.no_grad():
        hidden = model.model.vision_tower(crops, output_hidden_states=True).hidden_states
        return model.model.multi_modal_projector(hidden[model.config.vision_feature_layer][:, 1:])


def _naive_pack(model, crops: list[torch.Tensor], rows: int, columns: int, size: tuple[int, int]) -> torch.Tensor:
    """LLaVA-NeXT's packing with explicit loops over the cells of G×G crop grids: the base grid; the stitched tile
    grid row by row, keeping the rows (or columns) transformers' `unpad_image` keeps; a newline token per row."""
    side = math.isqrt(crops[0].shape[0])
    height, width = rows * side, columns * side
    original_height, original_width = size
    kept_rows, kept_columns = range(height), range(width)
    if original_width / original_height > width / height:
        new_height = int(round(original_height * (width / original_width), 7))
        pad = (height - new_height) // 2
        kept_rows = range(pad, height - pad)
    else:
        new_width = int(round(original_width * (height / original_height), 7))
        pad = (width - new_width) // 2
        kept_columns = range(pad, width - pad)
    newline = model.model.image_newline.to(crops[0].dtype)
    tokens = list(crops[0])
    for r in kept_rows:
        for c in kept_columns:
            tile = 1 + (r // side) * columns + c // side
            tokens.append(crops[tile][(r % side) * side + c % side])
        tokens.append(newline)
    return torch.stack(tokens)


@pytest.mark.parametrize("grid", [3, 5])
def test_downsample_pools_each_crop_and_packs_as_next_does(grid):
    """Pooling each crop's grid (naive loops) and packing at G (naive loops) against the method. Checked by mutation
    against the stitched tiles transposed (columns of tiles before rows) and the unpadding done at the tower's S."""
    loaded = _loaded()
    model = loaded.model
    images = _images(SIZES)
    batch = build_batch(loaded, PROMPTS[:1] * len(images), images)
    method = Downsample(grid=grid)
    ours = method.encode_images(model, batch.pixel_values, batch.image_sizes).features
    for row in range(len(images)):
        crops, rows, columns = _crops(model, batch, row)
        projected = _projected(model, crops)
        size = tuple(batch.image_sizes[row].tolist())
        expected, exact = (
            _naive_pack(model, [_naive_pool(crop, grid, dtype) for crop in projected], rows, columns, size)
            for dtype in (torch.float32, torch.float64)
        )
        assert ours[row].shape == expected.shape
        assert_fp32_close(ours[row], expected, exact)


def test_downsample_at_the_tower_grid_is_the_unpruned_model():
    """G = S pools nothing: the features are the model's own, bit for bit, and so is every generated token. Checked
    by mutation against newline tokens left out of the packing."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS, _images())
    side = loaded.model.config.vision_config.image_size // loaded.model.config.vision_config.patch_size
    features = encode_images(loaded.model, batch.pixel_values, batch.image_sizes)
    pooled = Downsample(grid=side).encode_images(loaded.model, batch.pixel_values, batch.image_sizes).features
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(pooled, features, strict=True))
    common = {"pixel_values": batch.pixel_values, "image_sizes": batch.image_sizes, "max_new_tokens": 5}
    unpruned = generate(loaded.model, batch.input_ids, batch.attention_mask, DropSchedule.none(), **common)
    kept_all = generate(loaded.model, batch.input_ids, batch.attention_mask, Downsample(grid=side), **common)
    assert [g.token_ids for g in kept_all.generations] == [g.token_ids for g in unpruned.generations]
    assert [g.trace.tokens_per_layer for g in kept_all.generations] == [
        g.trace.tokens_per_layer for g in unpruned.generations
    ]


@pytest.mark.parametrize("method", [Downsample(grid=4), DART(max_num_trunction=160)], ids=lambda m: m.label)
def test_batch_of_different_sizes_equals_single_runs(method):
    """Each single run is the reference, the float64 model with the same choices (ForcedChoice) its exact twin.
    Checked by mutation against every image packed with the first image's tile grid, and (DART) against the
    per-pivot count taken from max_num_trunction without the NeXT cap."""
    loaded, loaded64 = _loaded(), _loaded(torch.float64)
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    counts = batch.image_token_counts
    assert len(set(counts)) == 4
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
    for row in range(len(PROMPTS)):
        one = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        inputs = {"pixel_values": one.pixel_values, "image_sizes": one.image_sizes}
        single = generate(loaded.model, one.input_ids, one.attention_mask, method, **inputs, **common)
        forced = ForcedChoice.of(method, single.generations)
        inputs64 = {"pixel_values": one.pixel_values.double(), "image_sizes": one.image_sizes}
        exact = generate(loaded64.model, one.input_ids, one.attention_mask, forced, **inputs64, **common)
        mine, theirs, twin = single.generations[0], batched.generations[row], exact.generations[0]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices == twin.trace.kept_image_indices
        assert mine.trace.image_tokens_per_layer == theirs.trace.image_tokens_per_layer
        assert mine.token_ids == theirs.token_ids == twin.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])
        if isinstance(method, DART):  # the official NeXT rule: T = min(R, N − 4) // 8, kept = 4 + 8·T
            assert [len(k) for k in theirs.trace.kept_image_indices] == [4 + 8 * (min(160, counts[row] - 4) // 8)]


def _official_restore(tiles: torch.Tensor, keep: torch.Tensor, side: int, rows: int, columns: int) -> torch.Tensor:
    """VisionZip@3151f6d llava_arch.py `restore_image_features_sorted`, its tensor steps transcribed: `tiles`
    [n, dominant + contextual, d] zipped and projected, `keep` [n, dominant] their kept positions (CLS = 0); the kept
    patches scattered into zeroed S×S grids, the grids stitched (height, width, S, S) → (height·S, width·S), the
    kept cells read row-major, then every tile's CLS, then every tile's contextual tokens."""
    count, total, width = tiles.shape
    num_keep = keep.shape[1]
    restore = keep.sort(dim=1).values[:, 1:] - 1
    restored = torch.zeros(count, side * side, width, dtype=tiles.dtype)
    mask = torch.zeros(count, side * side, dtype=torch.bool)
    mask.scatter_(1, restore, True)
    restored[mask] = tiles[:, 1:num_keep, :].reshape(-1, width)
    restored = restored.view(rows, columns, side, side, width).permute(0, 2, 1, 3, 4).reshape(rows * side, -1, width)
    mask = mask.view(rows, columns, side, side).permute(0, 2, 1, 3).reshape(rows * side, columns * side)
    extra = total - num_keep
    return torch.cat([restored[mask], tiles[:, 0], tiles[:, -extra:].reshape(-1, width)])


def test_visionzip_zips_every_crop_and_orders_them_as_the_official_next_path():
    """Per crop the official zip (its own naive test is in test_methods_visionzip.py); per image the official
    arrangement, transcribed above, bit for bit, and the kept patches listed crop by crop. Checked by mutation
    against the tiles' dominant patches kept in tile order instead of stitched row-major order, and the base crop
    given the tiles' order (CLS after its patches)."""
    loaded = _loaded()
    model = loaded.model
    images = _images(SIZES)
    batch = build_batch(loaded, PROMPTS[:1] * len(images), images)
    method = VisionZip(dominant=10, contextual=3)
    ours = method.encode_images(model, batch.pixel_values, batch.image_sizes)
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    for row in range(len(images)):
        crops, rows, columns = _crops(model, batch, row)
        with torch.no_grad():
            view = read_tower_layer(model.model.vision_tower, crops, model.config.vision_feature_layer)
            zipped = [zip_tokens(view, crop, 10, 3) for crop in range(crops.shape[0])]
            projected = torch.stack([model.model.multi_modal_projector(tokens) for tokens, _ in zipped])
        keep = torch.tensor([positions for _, positions in zipped])
        expected = torch.cat([projected[0], _official_restore(projected[1:], keep[1:], side, rows, columns)])
        assert ours.features[row].shape == (crops.shape[0] * 13, projected.shape[-1])
        assert torch.equal(ours.features[row], expected)
        assert ours.kept_indices[row] == [
            crop * side * side + position - 1 for crop, (_, kept) in enumerate(zipped) for position in kept[1:]
        ]


def test_visionzip_batch_of_different_sizes_equals_single_runs():
    """Each image's kept patches and features in a batch of four equal its single run's; the features within fp32
    rounding of the single run, the float64 model making the same choices being the exact twin. Checked by mutation against every image's crops zipped with the first image's CLS
    scores."""
    loaded, loaded64 = _loaded(), _loaded(torch.float64)
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    method = VisionZip(dominant=10, contextual=3)
    batched = method.encode_images(loaded.model, batch.pixel_values, batch.image_sizes)
    result = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        max_new_tokens=4,
    )
    for row in range(len(images)):
        one = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single = method.encode_images(loaded.model, one.pixel_values, one.image_sizes)
        assert single.kept_indices == [batched.kept_indices[row]]
        crops = _crops(loaded.model, one, 0)[0]
        with torch.no_grad():
            twin = method.encode_images(loaded64.model, one.pixel_values.double(), one.image_sizes)
        assert twin.kept_indices == single.kept_indices, "float64 broke a near-tie: pick another image"
        assert_fp32_close(batched.features[row], single.features[0], twin.features[0])
        alone = generate(
            loaded.model,
            one.input_ids,
            one.attention_mask,
            method,
            pixel_values=one.pixel_values,
            image_sizes=one.image_sizes,
            max_new_tokens=4,
        )
        assert alone.generations[0].token_ids == result.generations[row].token_ids
        assert result.generations[row].trace.image_tokens_per_layer == [13 * crops.shape[0]] * 32


@pytest.mark.parametrize("method", [VisionZip(dominant=10, contextual=3), Downsample(grid=3)], ids=lambda m: m.label)
def test_tower_side_flops_on_next_equal_flop_counter_exactly(method):
    """Every crop through the tower, the method's per-crop overhead, and the projector over what it projects."""
    loaded = load_vlm("tiny-llava-next", attn="eager")  # FlopCounterMode does not see CPU SDPA kernels
    shape = ModelShape.from_config(loaded.model.config)
    batch = build_batch(loaded, PROMPTS[:1], _images()[3:4])
    crops = _crops(loaded.model, batch, 0)[0].shape[0]
    reduced, measured = flops_of(lambda: method.encode_images(loaded.model, batch.pixel_values, batch.image_sizes))
    kept = reduced.features[0].shape[0]
    trace = SampleTrace(0, 0, method=method, image_tokens_per_layer=[kept], vision_crops=crops)
    projected = method.projected_tokens(trace)
    expected = vision_flops(shape.vision, shape.text.hidden, crops, projected) + method.overhead_flops(shape, trace)
    assert measured == expected
