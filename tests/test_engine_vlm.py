"""The engine on the tiny LLaVA, LLaVA-NeXT and LLaVA-Qwen2 models, loaded through `load_vlm` as users load theirs."""

import functools

import pytest
import torch
from PIL import Image, ImageDraw

from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.pyramid.engine import DecoderParts, prefill
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import embed_with_images, encode_images, generate, stop_at_strings
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine

TINY = ["tiny-llava", "tiny-llava-next", "tiny-llava-qwen2"]
PROMPTS = [
    "What color is the circle?\nAnswer the question using a single word or phrase.",
    "How many squares are there?",
    "Is there a red triangle in the image? Answer yes or no.",
    "Describe the picture.",
]
SIZES = [(64, 48), (40, 80), (96, 96), (120, 60)]  # different aspect ratios: NeXT gives different token counts


@functools.cache
def _loaded(name: str, attn: str = "sdpa", dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm(name, attn=attn, dtype=dtype)


def _images():
    images = []
    for index, size in enumerate(SIZES):
        image = Image.new("RGB", size, (20 * index, 200 - 30 * index, 90))
        ImageDraw.Draw(image).ellipse((5, 5, size[0] // 2, size[1] // 2), fill=(255, 40 * index, 0))
        images.append(image)
    return images


SCHEDULE = DropSchedule.pyramid(0.5, layers=(8, 16, 24))


def _generate(loaded, batch, schedule: DropSchedule, **options):
    """The engine on a `build_batch` output, in the model's dtype."""
    return generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        schedule,
        pixel_values=batch.pixel_values.to(loaded.model.dtype),
        image_sizes=batch.image_sizes,
        **options,
    )


@pytest.mark.parametrize("name", TINY)
def test_no_drop_equals_hf_generate(name):
    """Catches (checked by mutation) decode positions that do not advance and masks that let tokens see padding."""
    loaded = _loaded(name)
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    reference, exact = (
        runner.model.generate(
            **batch.model_inputs() | {"pixel_values": batch.pixel_values.to(runner.model.dtype)},
            max_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=loaded.pad_token_id,
            eos_token_id=None,
        )
        for runner in (loaded, _loaded(name, dtype=torch.float64))
    )
    ours = _generate(
        loaded,
        batch,
        DropSchedule.none(),
        max_new_tokens=6,
        return_logits=True,
        pad_token_id=loaded.pad_token_id,
    )
    prompt_length = batch.input_ids.shape[1]
    assert [g.token_ids for g in ours.generations] == reference.sequences[:, prompt_length:].tolist()
    assert torch.equal(exact.sequences, reference.sequences)
    assert_fp32_close(ours.step_logits, torch.stack(reference.logits, dim=1), torch.stack(exact.logits, dim=1))
    assert len(set(ours.generations[0].token_ids)) > 1, "tiny model output is degenerate"


@pytest.mark.parametrize("name", TINY)
def test_batch_of_four_equals_four_single_runs(name):
    """Catches (checked by mutation) masks that let tokens see padding, survivors re-packed to the left after a drop,
    and one image token too many dropped per stage."""
    loaded = _loaded(name)
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    if name == "tiny-llava-next":
        assert len(set(batch.image_token_counts)) > 1
    schedule = SCHEDULE
    batched = _generate(
        loaded,
        batch,
        schedule,
        max_new_tokens=5,
        return_logits=True,
    )
    for row in range(len(PROMPTS)):
        single_batch = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single, exact = (
            _generate(runner, single_batch, schedule, max_new_tokens=5, return_logits=True)
            for runner in (loaded, _loaded(name, dtype=torch.float64))
        )
        mine, theirs, twin = single.generations[0], batched.generations[row], exact.generations[0]
        assert mine.trace.num_image_tokens == batch.image_token_counts[row]
        assert [len(k) for k in theirs.trace.kept_image_indices] == [
            int(batch.image_token_counts[row] * r) for r in schedule.ratios
        ]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices == twin.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids == twin.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


@pytest.mark.parametrize("name", TINY)
def test_cached_decoding_equals_recomputation(name):
    """Catches (checked by mutation) a RoPE position one off after a drop, a stage decoding at the previous stage's
    positions, and decode positions that do not advance."""
    loaded = _loaded(name)
    batch = build_batch(loaded, PROMPTS[:1], _images()[:1])
    schedule = SCHEDULE
    result = _generate(
        loaded,
        batch,
        schedule,
        max_new_tokens=4,
        return_logits=True,
    )
    generation = result.generations[0]
    recomputed = {}
    for runner in (loaded, _loaded(name, dtype=torch.float64)):
        model = runner.model
        features = encode_images(model, batch.pixel_values.to(model.dtype), batch.image_sizes)
        per_step = []
        for step in range(len(generation.token_ids)):
            ids = torch.cat([batch.input_ids, torch.tensor([generation.token_ids[:step]], dtype=torch.long)], dim=1)
            embeds, image_mask = embed_with_images(model, ids, features)
            state = prefill(
                DecoderParts.from_model(model),
                embeds,
                torch.ones_like(ids),
                image_mask,
                schedule,
                forced_keep=[generation.trace.kept_image_indices],
                use_cache=False,
            )
            per_step.append(state.logits[0])
        recomputed[model.dtype] = torch.stack(per_step)
    assert_fp32_close(result.step_logits[0], recomputed[torch.float32], recomputed[torch.float64])


def test_eager_attention_equals_sdpa():
    """The eager path (additive float mask) against SDPA (bool mask); the float64 SDPA run is the exact twin.
    Catches (checked by mutation) an eager mask that lets a token see the next one."""
    runners = [_loaded("tiny-llava"), _loaded("tiny-llava", "eager"), _loaded("tiny-llava", "sdpa", torch.float64)]
    batch = build_batch(runners[0], PROMPTS[:3], _images()[:3])
    sdpa, eager, exact = (_generate(r, batch, SCHEDULE, max_new_tokens=4, return_logits=True) for r in runners)
    for row in range(3):
        kept = [out.generations[row].trace.kept_image_indices for out in (sdpa, eager, exact)]
        tokens = [out.generations[row].token_ids for out in (sdpa, eager, exact)]
        assert kept[0] == kept[1] == kept[2] and tokens[0] == tokens[1] == tokens[2]
    assert_fp32_close(eager.step_logits, sdpa.step_logits, exact.step_logits)


def test_reused_image_features_give_the_same_result():
    loaded = _loaded("tiny-llava")
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    features = encode_images(loaded.model, batch.pixel_values)
    common = {"max_new_tokens": 4, "return_logits": True}
    fresh = _generate(loaded, batch, DropSchedule.fastv(), **common)
    reused = generate(
        loaded.model, batch.input_ids, batch.attention_mask, DropSchedule.fastv(), image_features=features, **common
    )
    assert fresh.timings.vision_s > 0 and reused.timings.vision_s == 0
    torch.testing.assert_close(fresh.step_logits, reused.step_logits, atol=0, rtol=0)
    assert [g.trace.vision_crops for g in reused.generations] == [1, 1]


def test_stop_strings_end_a_sample_at_the_string():
    loaded = _loaded("tiny-llava")
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    free = _generate(loaded, batch, SCHEDULE, max_new_tokens=8)
    tokens = free.generations[0].token_ids
    target = loaded.tokenizer.decode(tokens[2:4], skip_special_tokens=True).strip()
    assert target, "the tiny model should produce decodable text"
    stopped = _generate(loaded, batch, SCHEDULE, max_new_tokens=8, stop=stop_at_strings(loaded.tokenizer, [target]))
    ids = stopped.generations[0].token_ids
    assert tokens[: len(ids)] == ids and len(ids) <= 4
    assert target in loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert target not in loaded.tokenizer.decode(ids[:-1], skip_special_tokens=True)
