"""Qwen2.5-VL as a model family: the tiny random checkpoint loads through `load_vlm` like a real one, dynamic
resolution gives (H/28)·(W/28) tokens, and the engine with no drop (M-RoPE prompt positions from the model's own
`get_rope_index`, decode positions continuing from the largest + 1) equals HF `generate`."""

import dataclasses
import functools
import json

import pytest
import torch
from PIL import Image, ImageDraw

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.qwen2_5_vl import Qwen25VLFamily, chat_prompt
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate
from tests.numerics import ForcedChoice, assert_fp32_close, fp32_differs

pytestmark = pytest.mark.engine  # also run on the oldest supported transformers (make test-compat)

PROMPTS = ["What color is the circle?", "How many shapes are there?", "Describe the picture.", "Is it red?"]
SIZES = [(64, 36), (40, 100), (120, 90), (56, 56)]  # (width, height): four different token grids


@functools.cache
def _loaded(dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm("tiny-qwen2.5-vl", dtype=dtype)


def _images():
    images = []
    for index, size in enumerate(SIZES):
        image = Image.new("RGB", size, (40 * index, 200 - 30 * index, 90))
        ImageDraw.Draw(image).ellipse((3, 3, size[0] // 2, size[1] // 2), fill=(255, 50 * index, 0))
        images.append(image)
    return images


def test_tiny_qwen_is_a_real_model_directory_loaded_like_a_checkpoint():
    loaded = _loaded()
    assert isinstance(loaded.family, Qwen25VLFamily) and loaded.kind == "qwen2_5_vl"
    files = {path.name for path in loaded.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    assert json.loads((loaded.path / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert loaded.image_token_id == loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.eos_token_ids


def test_dynamic_resolution_token_counts_follow_the_evaluation_pixel_bounds():
    """lmms-eval's bounds (256·28² to 1605632 px) on top of the checkpoint's own: 120×90 px is below the minimum,
    scaled by sqrt(200704 / 10800) and rounded up to 532×392 px, 19×14 = 266 tokens; 56×56 px becomes 448×448,
    exactly the 256-token floor; 3000×2000 px is above the maximum, scaled down and rounded down to 1540×1008,
    55×36 = 1980 tokens. Every count matches the batch's placeholder run and the tower's features."""
    loaded = _loaded()
    images = _images()
    assert image_token_count(loaded, images[2]) == 266
    assert image_token_count(loaded, images[3]) == 256
    assert image_token_count(loaded, Image.new("RGB", (3000, 2000))) == 1980
    batch = build_batch(loaded, PROMPTS, images)
    placeholders = ((batch.input_ids == loaded.image_token_id) & batch.attention_mask.bool()).sum(-1).tolist()
    assert placeholders == batch.image_token_counts == [image_token_count(loaded, image) for image in images]
    features = loaded.family.encode_images(loaded.model, batch.pixel_values, batch.image_sizes)
    assert [len(f) for f in features] == batch.image_token_counts


def test_token_count_from_the_size_alone_equals_the_processors_grid():
    """The length buckets count every sample's tokens from its size (no JPEG round trip, no processor run): that
    count must be the grid the processor gives the JPEG-round-tripped, resized image, across aspect ratios and both
    pixel bounds."""
    loaded = _loaded()
    generator = torch.Generator().manual_seed(4)
    sizes = [(int(w), int(h)) for w, h in torch.randint(8, 1200, (24, 2), generator=generator)]
    sizes += [(3000, 2000), (28, 28), (29, 1000), (1999, 57)]
    images = [Image.new("RGB", size, (90, 120, 30)) for size in sizes if max(size) / min(size) < 200]
    batch = build_batch(loaded, ["?"] * len(images), images)
    assert [image_token_count(loaded, image) for image in images] == batch.image_token_counts


def test_schedule_none_equals_hf_generate_on_a_mixed_size_batch():
    """Rows have different rope deltas (max M-RoPE position + 1 − length), so a decode position rule of 'cache
    length' or positions taken from the mask instead of the image grids changes the logits (checked by mutation:
    decoding at the cache length). HF's float64 run gives the tolerance."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS, _images())
    options = {"max_new_tokens": 8, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    reference = loaded.model.generate(**batch.model_inputs(), **options)
    inputs = batch.model_inputs()
    exact = _loaded(torch.float64).model.generate(
        **inputs | {"pixel_values": inputs["pixel_values"].double()}, **options
    )
    assert exact.sequences.tolist() == reference.sequences.tolist()
    result = generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        DropSchedule.none(),
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        max_new_tokens=8,
        eos_token_ids=loaded.eos_token_ids,
        pad_token_id=loaded.pad_token_id,
        return_logits=True,
    )
    prompt_length = batch.input_ids.shape[1]
    for row, generation in enumerate(result.generations):
        expected = reference.sequences[row, prompt_length:].tolist()
        assert generation.token_ids == expected[: len(generation.token_ids)]
    steps = result.step_logits.shape[1]
    hf_logits, exact_logits = (torch.stack(run.scores, dim=1)[:, :steps] for run in (reference, exact))
    assert_fp32_close(result.step_logits, hf_logits, exact_logits)


def test_mrope_positions_follow_a_drop():
    """original: survivors keep their three rows, decoding continues at the prompt's largest position + 1;
    compact: 0..n-1 on all three rows, decoding continues at n."""
    scheme = Qwen25VLFamily.positions
    positions = torch.tensor([[[0, 1, 2, 2, 2, 2, 5]], [[0, 1, 2, 2, 3, 3, 5]], [[0, 1, 2, 3, 2, 3, 5]]])  # [3, 1, 7]
    source = torch.tensor([[0, 1, 3, 4, 6]])  # image tokens at columns 2 and 5 dropped
    valid = torch.ones(1, 5, dtype=torch.bool)
    original = scheme.after_drop(positions, source, valid, "original")
    assert original[:, 0].tolist() == [[0, 1, 2, 2, 5], [0, 1, 2, 3, 5], [0, 1, 3, 2, 5]]
    assert scheme.decode_start(original, valid, torch.tensor([7]), "original").tolist() == [6]
    compact = scheme.after_drop(positions, source, valid, "compact")
    assert compact[:, 0].tolist() == [[0, 1, 2, 3, 4]] * 3
    assert scheme.decode_start(compact, valid, torch.tensor([7]), "compact").tolist() == [5]
    assert scheme.decode(torch.tensor([5]), 2).tolist() == [[[7]], [[7]], [[7]]]
    with pytest.raises(PdropEvalError, match="image grids"):
        scheme.prompt(valid)


ORIGINAL_PDROP = DropSchedule.pyramid(0.5, positions="original")


def _generate(loaded, batch, method, **options):
    return generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values,
        image_sizes=batch.image_sizes,
        eos_token_ids=loaded.eos_token_ids,
        pad_token_id=loaded.pad_token_id,
        **options,
    )


def test_batch_of_four_sizes_equals_four_single_runs_with_drops():
    """Each single run is the reference, its float64 twin (same kept sets) gives the tolerance. Checked by mutation
    against decode steps that attend to the padding of shorter prompts."""
    loaded = _loaded()
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    assert len(set(batch.image_token_counts)) > 1
    batched = _generate(loaded, batch, ORIGINAL_PDROP, max_new_tokens=5, return_logits=True)
    for row in range(len(PROMPTS)):
        one = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single = _generate(loaded, one, ORIGINAL_PDROP, max_new_tokens=5, return_logits=True)
        exact = _generate(
            _loaded(torch.float64),
            dataclasses.replace(one, pixel_values=one.pixel_values.double()),
            ForcedChoice.of(ORIGINAL_PDROP, single.generations),
            max_new_tokens=5,
            return_logits=True,
        )
        mine, theirs, twin = single.generations[0], batched.generations[row], exact.generations[0]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices == twin.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids == twin.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_cached_decoding_equals_recomputation_with_drops(positions):
    """Each step recomputed from scratch (prompt + tokens so far, M-RoPE rows from `get_rope_index` on that longer
    sequence, the same kept sets forced) gives the logits the cached decode gave: survivors keep their three rows
    and decoding continues from the prompt's largest position + 1. The float64 recomputation gives the tolerance.
    Checked by mutation against decode positions continuing from the cache length."""
    from pdrop_eval.pyramid.engine import DecoderParts, prefill

    loaded = _loaded()
    family = loaded.family
    method = DropSchedule.pyramid(0.5, positions=positions)
    batch = build_batch(loaded, PROMPTS[2:3], _images()[2:3])
    result = _generate(loaded, batch, method, max_new_tokens=4, return_logits=True)
    generation = result.generations[0]
    assert generation.trace.kept_image_indices[0] != list(range(len(generation.trace.kept_image_indices[0])))
    recomputed = {}
    for model in (loaded.model, _loaded(torch.float64).model):
        features = family.encode_images(model, batch.pixel_values.to(model.dtype), batch.image_sizes)
        per_step = []
        for step in range(len(generation.token_ids)):
            ids = torch.cat([batch.input_ids, torch.tensor([generation.token_ids[:step]], dtype=torch.long)], dim=1)
            mask = torch.ones_like(ids)
            embeds, image_mask = family.embed(model, ids, features)
            state = prefill(
                DecoderParts.from_model(model, family.positions),
                embeds,
                mask,
                image_mask,
                method,
                forced_keep=[generation.trace.kept_image_indices],
                use_cache=False,
                position_ids=family.prompt_positions(model, ids, mask, batch.image_sizes),
            )
            per_step.append(state.logits[0])
        recomputed[model.dtype] = torch.stack(per_step)
    assert_fp32_close(result.step_logits[0], recomputed[torch.float32], recomputed[torch.float64])


def test_ranking_equals_naive_eager_attention_under_mrope():
    """The kept sets at the first boundary are the top image tokens of the last prompt token's head-averaged
    attention in HF's own eager forward (M-RoPE applied by the model): PDrop reads layer 8 (the next layer), FastV
    layer 2 (the one that just ran)."""
    loaded = load_vlm("tiny-qwen2.5-vl", attn="eager")
    batch = build_batch(loaded, PROMPTS, _images())
    with torch.no_grad():
        attentions = loaded.model(**batch.model_inputs(), output_attentions=True).attentions
    image_tokens = (batch.input_ids == loaded.image_token_id) & batch.attention_mask.bool()
    cases = [(ORIGINAL_PDROP, 8), (DropSchedule.fastv(k=3, r=0.5), 2)]
    for method, layer in cases:
        result = _generate(loaded, batch, method, max_new_tokens=1)
        for row, generation in enumerate(result.generations):
            weights = attentions[layer][row, :, -1, :].mean(0)[image_tokens[row]]
            keep = method.keep_count(batch.image_token_counts[row], 0)
            assert generation.trace.kept_image_indices[0] == sorted(weights.topk(keep).indices.tolist())


def test_before_the_llm_methods_are_refused_in_one_line():
    """Shortening the image span before the LLM would give `get_rope_index` a grid the span no longer fills."""
    from pdrop_eval.methods.divprune import DivPrune

    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS[2:3], _images()[2:3])
    with pytest.raises(PdropEvalError, match="shorten the image before the LLM") as error:
        _generate(loaded, batch, DivPrune(ratio=0.5), max_new_tokens=1)
    assert "\n" not in str(error.value)


def test_prompt_is_the_lmms_eval_chat_prompt():
    """lmms-eval 0.7.3 (models/simple/qwen2_5_vl.py) sends [system "You are a helpful assistant.", user [image,
    text]] through Qwen2.5-VL's chat template with the generation prompt; the template renders an image as
    <|vision_start|><|image_pad|><|vision_end|> and the processor expands the pad to the image's token count."""
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat_prompt("What is it?", 2) == expected
    loaded = _loaded()
    batch = build_batch(loaded, ["What is it?"], _images()[3:])
    text = loaded.tokenizer.decode(batch.input_ids[0])
    assert text == chat_prompt("What is it?", batch.image_token_counts[0])


def test_compact_and_original_agree_until_the_first_drop_then_differ():
    """Both modes start from the prompt's M-RoPE rows, so the first ranking (layer 8, before any renumbering) keeps
    the same tokens; after it, compact renumbers the survivors 0..n-1 on all three rows and original keeps their
    rows, so the logits part by more than fp32 rounding explains (the tolerance comes from the float64 twin of the
    original run, its kept sets forced). Checked by mutation against compact ignored on M-RoPE (both modes then
    keep the rows and the logits agree to rounding)."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS[:2], _images()[:2])
    methods = {mode: DropSchedule.pyramid(0.5, positions=mode) for mode in ("compact", "original")}
    runs = {
        mode: _generate(loaded, batch, method, max_new_tokens=2, return_logits=True) for mode, method in methods.items()
    }
    for row in range(2):
        first = [runs[mode].generations[row].trace.kept_image_indices[0] for mode in runs]
        assert first[0] == first[1]
    exact = _generate(
        _loaded(torch.float64),
        dataclasses.replace(batch, pixel_values=batch.pixel_values.double()),
        ForcedChoice.of(methods["original"], runs["original"].generations),
        max_new_tokens=2,
        return_logits=True,
    )
    assert fp32_differs(runs["original"].step_logits, runs["compact"].step_logits, exact.step_logits)
