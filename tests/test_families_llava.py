"""The model-family interface on LLaVA-1.5/NeXT: the registry picks the family, the engine takes positions and the
ranking's rotary rule from the family's scheme, and FLOPs/report facts come from the family."""

import functools
import json

import pytest
import torch
from PIL import Image, ImageDraw

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.llava import LlavaFamily
from pdrop_eval.families.positions import LinearPositions, module_rotary
from pdrop_eval.families.registry import FAMILIES, family_for_config, family_of
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import DecoderParts
from pdrop_eval.pyramid.flops import VisionShape, vision_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate

pytestmark = pytest.mark.engine  # also run on the oldest supported transformers (make test-compat)

PROMPTS = ["What color is the circle?", "How many squares are there?"]


@functools.cache
def _loaded(name: str):
    return load_vlm(name)


def _images():
    images = []
    for index, size in enumerate([(64, 48), (40, 80)]):
        image = Image.new("RGB", size, (30 * index, 180, 90))
        ImageDraw.Draw(image).ellipse((4, 4, size[0] // 2, size[1] // 2), fill=(250, 60 * index, 0))
        images.append(image)
    return images


def _kept_and_tokens(loaded, method, parts=None):
    batch = build_batch(loaded, PROMPTS, _images())
    result = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        max_new_tokens=4,
        parts=parts,
    )
    return [(g.trace.kept_image_indices, g.token_ids) for g in result.generations]


def test_registry_picks_the_llava_family_for_every_llava_checkpoint():
    for name in ("tiny-llava", "tiny-llava-next", "tiny-llava-qwen2"):
        loaded = _loaded(name)
        assert isinstance(loaded.family, LlavaFamily) and family_of(loaded.model) is loaded.family
    assert family_for_config({"model_type": "llava_llama", "mm_vision_tower": "x"}, "dir").name == "llava"


def test_unknown_model_type_is_one_line_naming_every_family(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(PdropEvalError) as error:
        load_vlm(str(tmp_path))
    message = str(error.value)
    assert "'bert'" in message and "\n" not in message
    assert all(family.description in message for family in FAMILIES.values())


def test_linear_positions_follow_a_drop_and_continue_in_decoding():
    scheme = LinearPositions()
    valid = torch.tensor([[False, True, True, True, True], [True, True, True, True, True]])
    positions = scheme.prompt(valid)
    assert positions.tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    # row 0 keeps prompt columns 1, 3, 4; row 1 keeps 0, 2, 4 (left repacked into 3 columns)
    source = torch.tensor([[1, 3, 4], [0, 2, 4]])
    kept_valid = torch.ones(2, 3, dtype=torch.bool)
    prompt_lengths = valid.sum(-1)
    assert scheme.after_drop(positions, source, kept_valid, "compact").tolist() == [[0, 1, 2], [0, 1, 2]]
    original = scheme.after_drop(positions, source, kept_valid, "original")
    assert original.tolist() == [[0, 2, 3], [0, 2, 4]]
    assert scheme.decode_start(original, kept_valid, prompt_lengths, "compact").tolist() == [3, 3]
    start = scheme.decode_start(original, kept_valid, prompt_lengths, "original")
    assert start.tolist() == [4, 5]
    assert scheme.decode(start, 2).tolist() == [[6], [7]]


class _AlwaysOriginal(LinearPositions):
    """A scheme that keeps prompt positions whatever the method asks: if the engine consults the scheme, a
    compact-position method then behaves exactly like its original-position twin."""

    def after_drop(self, positions, source, valid, mode):
        return super().after_drop(positions, source, valid, "original")

    def decode_start(self, positions, valid, prompt_lengths, mode):
        return super().decode_start(positions, valid, prompt_lengths, "original")


def test_engine_takes_positions_from_the_family_scheme():
    loaded = _loaded("tiny-llava")
    compact, original = DropSchedule.pyramid(0.5), DropSchedule.pyramid(0.5, positions="original")
    assert _kept_and_tokens(loaded, compact) != _kept_and_tokens(loaded, original)  # the modes differ here
    parts = DecoderParts.from_model(loaded.model, _AlwaysOriginal())
    assert _kept_and_tokens(loaded, compact, parts) == _kept_and_tokens(loaded, original)


class _CountingRotary(LinearPositions):
    def __init__(self):
        self.calls = 0

    def rotary(self, attention, x, cos, sin):
        self.calls += 1
        return module_rotary(attention, x, cos, sin)


@pytest.mark.parametrize("method", [DropSchedule.pyramid(0.5), DropSchedule.fastv(), DropSchedule.random()])
def test_ranking_rotates_with_the_family_rotary_rule(method):
    """PDrop and FastV rank with q/k rotated by the scheme's rule (two calls, q and k, per boundary); random never
    reads attention. Kept sets match the default scheme, whose rule is the same function."""
    loaded = _loaded("tiny-llava")
    scheme = _CountingRotary()
    kept = _kept_and_tokens(loaded, method, DecoderParts.from_model(loaded.model, scheme))
    assert scheme.calls == (0 if method.name == "random" else 2 * len(method.stage_layers))
    assert kept == _kept_and_tokens(loaded, method)


def test_family_grid_and_model_view():
    llava, nxt = _loaded("tiny-llava"), _loaded("tiny-llava-next")
    assert llava.family.image_grid(llava) == (24, 24)
    assert nxt.family.image_grid(nxt) is None
    view = llava.family.model_view(llava, _images()[0])
    assert view.size == (336, 336)
    assert view.getpixel((0, 0)) == llava.pad_color  # 64×48 padded top and bottom before the resize
    assert nxt.family.model_view(nxt, _images()[0]) is None


def test_family_model_shape_counts_the_clip_cls_token():
    loaded = _loaded("tiny-llava")
    vision = loaded.family.model_shape(loaded.model.config).vision
    assert vision.cls_token and vision.tokens == vision.patches + 1 == 577


def test_vision_flops_without_a_cls_token_count_patches_only():
    """A SigLIP-like tower (no CLS) runs every layer on the patches alone: FLOPs drop by exactly the CLS row's
    share of the projections, MLP and attention, and the projector is unchanged."""
    with_cls = VisionShape(hidden=8, ffn=16, layers=2, image_size=28, patch_size=14)
    without = VisionShape(hidden=8, ffn=16, layers=2, image_size=28, patch_size=14, cls_token=False)
    assert without.tokens == 4 and with_cls.tokens == 5
    d, m = 8, 16

    def layer(n):
        return 2 * n * d * d * 4 + 2 * 2 * n * n * d + 2 * 2 * n * d * m

    difference = vision_flops(with_cls, 8, 1) - vision_flops(without, 8, 1)
    assert difference == 2 * (layer(5) - layer(4))
