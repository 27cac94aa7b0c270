"""The engine on plain decoder-only causal LMs (Llama; Qwen2 with GQA and q/k/v biases), driven from embeddings.

These pin the method itself: equivalence with HF generate when nothing drops, cached decoding against
recomputation, batch invariance, and the ranking against a naive eager-attention computation.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.pyramid.engine import DecoderParts, generate_from_embeds, prefill
from pdrop_eval.pyramid.schedule import DropSchedule
from tests.numerics import assert_fp32_close, fp32_differs

pytestmark = pytest.mark.engine

VOCAB = 300
IMAGE_TOKENS = 24


def _model(arch: str, attn: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random model; float64 gives the same weights (drawn in fp32, cast exactly) as the exact reference."""
    common = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "max_position_embeddings": 1024,
    }
    if arch == "llama":
        config, cls = LlamaConfig(num_key_value_heads=4, **common), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(num_key_value_heads=2, **common), Qwen2ForCausalLM
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.to(dtype)


def _batch(model, lengths, image_offsets=None, seed=1):
    """Left-padded prompts with an image span of IMAGE_TOKENS tokens at a per-sample offset."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    batch = len(lengths)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    images = torch.zeros(batch, width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        start = width - length
        offset = 3 if image_offsets is None else image_offsets[row]
        ids[row, start:] = torch.randint(3, VOCAB, (length,), generator=generator)
        mask[row, start:] = 1
        images[row, start + offset : start + offset + IMAGE_TOKENS] = True
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return embeds, mask, images


PDROP = DropSchedule.pyramid(0.5, layers=(2, 4, 6))
SCHEDULES = {
    "pdrop": PDROP,
    "pdrop_original": DropSchedule.pyramid(0.5, layers=(2, 4, 6), positions="original"),
    "fastv": DropSchedule.fastv(k=2, r=0.5),
    "random": DropSchedule.random(layers=(3, 5), ratios=(0.6, 0.3), seed=7),
}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_drop_equals_hf_generate(arch, attn):
    """Catches (checked by mutation) decode positions that do not advance, a decode or prefill mask that lets
    tokens see padding, an eager mask that lets a token see the next one."""
    model = _model(arch, attn)
    embeds, mask, images = _batch(model, [40, 33, 29])
    reference = model.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        eos_token_id=None,
    )
    # The exact twin always runs SDPA (the same function): HF's float64 eager path turns padded rows into NaN.
    exact = _model(arch, "sdpa", torch.float64).generate(
        inputs_embeds=embeds.double(),
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        eos_token_id=None,
    )
    ours = generate_from_embeds(model, embeds, mask, images, DropSchedule.none(), max_new_tokens=8, return_logits=True)
    assert [g.token_ids for g in ours.generations] == reference.sequences.tolist() == exact.sequences.tolist()
    assert_fp32_close(ours.step_logits, torch.stack(reference.logits, dim=1), torch.stack(exact.logits, dim=1))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_cached_decoding_equals_recomputation(arch, name):
    """Each cached decode step's logits equal a no-cache prefill of prompt + tokens so far with the same kept sets.

    The recomputation runs in fp32 (the reference) and in float64 (its exact twin, for the tolerance). Catches
    (checked by mutation) a RoPE position one off after a drop, a stage decoding at the previous stage's positions,
    decode positions that do not advance, masks that let tokens see padding, survivors re-packed to the left."""
    model = _model(arch, "sdpa")
    all_parts = {
        dtype: DecoderParts.from_model(_model(arch, "sdpa", dtype)) for dtype in (torch.float32, torch.float64)
    }
    embeds, mask, images = _batch(model, [38, 30])
    result = generate_from_embeds(model, embeds, mask, images, SCHEDULES[name], max_new_tokens=5, return_logits=True)
    for row, generation in enumerate(result.generations):
        keep = mask[row].bool()
        forced = [generation.trace.kept_image_indices]
        recomputed = {}
        for dtype, parts in all_parts.items():
            prompt, prompt_images = embeds[row : row + 1, keep].to(dtype), images[row : row + 1, keep]
            per_step = []
            for token in [None, *generation.token_ids[:-1]]:
                if token is not None:
                    prompt = torch.cat([prompt, parts.embed_tokens(torch.tensor([[token]]))], dim=1)
                    prompt_images = torch.cat([prompt_images, torch.zeros(1, 1, dtype=torch.bool)], dim=1)
                ones = torch.ones(prompt.shape[:2], dtype=torch.long)
                step = prefill(parts, prompt, ones, prompt_images, SCHEDULES[name], forced_keep=forced, use_cache=False)
                per_step.append(step.logits[0])
            recomputed[dtype] = torch.stack(per_step)
        assert_fp32_close(result.step_logits[row], recomputed[torch.float32], recomputed[torch.float64])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_batch_equals_single_runs(arch, name):
    """Catches (checked by mutation) a prefill or decode mask that lets tokens see padding and survivors re-packed to
    the left (right padding) after a drop."""
    model = _model(arch, "sdpa")
    lengths = [44, 31, 38, 27]
    embeds, mask, images = _batch(model, lengths, image_offsets=[3, 1, 6, 2])
    schedule = SCHEDULES[name]
    batched = generate_from_embeds(
        model, embeds, mask, images, schedule, max_new_tokens=6, return_logits=True, sample_seeds=[11, 12, 13, 14]
    )
    model64 = _model(arch, "sdpa", torch.float64)
    for row, length in enumerate(lengths):
        single, exact = (
            generate_from_embeds(
                runner,
                embeds[row : row + 1, -length:].to(runner.dtype),
                mask[row : row + 1, -length:],
                images[row : row + 1, -length:],
                schedule,
                max_new_tokens=6,
                return_logits=True,
                sample_seeds=[11 + row],
            )
            for runner in (model, model64)
        )
        mine, theirs = single.generations[0], batched.generations[row]
        assert mine.token_ids == theirs.token_ids == exact.generations[0].token_ids
        assert (
            mine.trace.kept_image_indices
            == theirs.trace.kept_image_indices
            == exact.generations[0].trace.kept_image_indices
        )
        assert mine.trace.tokens_per_layer == theirs.trace.tokens_per_layer
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


def _naive_top(attentions, layer, images, row, keep):
    """Head-mean attention of the last prompt row over the image columns, top-k, ascending."""
    weights = attentions[layer][row, :, -1, :].mean(0)
    columns = images[row].nonzero().flatten()
    top = weights[columns].topk(keep).indices
    return sorted(top.tolist())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_ranking_equals_naive_eager_attention(arch):
    """PDrop ranks with layer k = the NEXT layer; FastV with layer K-1 = the layer that just ran."""
    model = _model(arch, "eager")
    lengths = [41, 35]
    embeds, mask, images = _batch(model, lengths, image_offsets=[2, 5])
    with torch.no_grad():
        full = model(inputs_embeds=embeds, attention_mask=mask, output_attentions=True)
    cases = [(DropSchedule.pyramid(0.5, layers=(3, 6)), 3), (DropSchedule.fastv(k=3, r=0.5), 2)]
    for schedule, ranking_layer in cases:
        result = generate_from_embeds(model, embeds, mask, images, schedule, max_new_tokens=1)
        for row in range(len(lengths)):
            keep = schedule.keep_count(IMAGE_TOKENS, 0)
            expected = _naive_top(full.attentions, ranking_layer, images, row, keep)
            assert result.generations[row].trace.kept_image_indices[0] == expected


def test_keep_counts_floor_of_original_count():
    model = _model("llama", "sdpa")
    schedule = DropSchedule.pyramid(0.6, layers=(2, 4, 6))
    embeds, mask, images = _batch(model, [40, 36])
    result = generate_from_embeds(model, embeds, mask, images, schedule, max_new_tokens=1)
    expected = [int(IMAGE_TOKENS * 0.6), int(IMAGE_TOKENS * 0.36), int(IMAGE_TOKENS * 0.6**3)]
    assert expected == [14, 8, 5]
    for generation in result.generations:
        trace = generation.trace
        assert [len(kept) for kept in trace.kept_image_indices] == expected
        assert trace.image_tokens_per_layer == [24, 24, 14, 14, 8, 8, 5, 5]
        text_tokens = trace.prompt_tokens - IMAGE_TOKENS
        assert trace.tokens_per_layer == [text_tokens + n for n in trace.image_tokens_per_layer]
        for earlier, later in zip(trace.kept_image_indices, trace.kept_image_indices[1:]):
            assert set(later) <= set(earlier)
            assert later == sorted(later)


def test_fastv_rounds_and_random_is_seeded():
    assert DropSchedule.fastv(k=2, r=0.5).keep_count(576, 0) == 288
    assert DropSchedule.fastv(k=2, r=0.75).keep_count(25, 0) == round(25 * 0.25)
    model = _model("llama", "sdpa")
    embeds, mask, images = _batch(model, [40])

    def kept(schedule):
        result = generate_from_embeds(model, embeds, mask, images, schedule, max_new_tokens=1, sample_seeds=[5])
        return result.generations[0].trace.kept_image_indices

    first = kept(DropSchedule.random(layers=(2, 4), ratios=(0.5, 0.25), seed=1))
    assert [len(stage) for stage in first] == [12, 6]
    assert first == kept(DropSchedule.random(layers=(2, 4), ratios=(0.5, 0.25), seed=1))
    assert first != kept(DropSchedule.random(layers=(2, 4), ratios=(0.5, 0.25), seed=2))
    attention_kept = kept(DropSchedule.explicit(layers=(2, 4), ratios=(0.5, 0.25)))
    assert [len(stage) for stage in attention_kept] == [12, 6]


def test_compact_and_original_positions_differ():
    """Catches (checked by mutation) `positions="original"` falling back to compact positions."""
    model = _model("llama", "sdpa")
    embeds, mask, images = _batch(model, [40])
    model64 = _model("llama", "sdpa", torch.float64)
    logits = {}
    for runner, mode in ((model, "compact"), (model, "original"), (model64, "compact")):
        schedule = DropSchedule.pyramid(0.5, layers=(2, 4, 6), positions=mode)
        result = generate_from_embeds(
            runner, embeds.to(runner.dtype), mask, images, schedule, max_new_tokens=3, return_logits=True
        )
        logits[mode, runner.dtype] = result.step_logits
    compact, original = logits["compact", torch.float32], logits["original", torch.float32]
    assert fp32_differs(compact, original, logits["compact", torch.float64])


def test_eos_and_stop_end_each_sample_on_its_own():
    model = _model("llama", "sdpa")
    embeds, mask, images = _batch(model, [40, 33])
    free = generate_from_embeds(model, embeds, mask, images, PDROP, max_new_tokens=6)
    first = free.generations[0].token_ids
    eos = first[2]
    stopped = generate_from_embeds(model, embeds, mask, images, PDROP, max_new_tokens=6, eos_token_ids=[eos])
    assert stopped.generations[0].token_ids == first[: first.index(eos) + 1]
    assert stopped.generations[0].trace.generated_tokens == first.index(eos) + 1
    second = free.generations[1].token_ids
    expected_second = second[: second.index(eos) + 1] if eos in second else second
    assert stopped.generations[1].token_ids == expected_second

    by_callback = generate_from_embeds(
        model, embeds, mask, images, PDROP, max_new_tokens=6, stop=lambda row, tokens: row == 1 and len(tokens) == 2
    )
    assert by_callback.generations[1].token_ids == second[:2]
    assert by_callback.generations[0].token_ids == first


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DropSchedule.pyramid(0.0), "outside (0, 1]"),
        (lambda: DropSchedule.pyramid(1.5), "outside (0, 1]"),
        (lambda: DropSchedule.explicit((8, 16), (0.25, 0.5)), "must not increase"),
        (lambda: DropSchedule.explicit((8, 16), (1.2, 0.5)), "outside (0, 1]"),
        (lambda: DropSchedule.explicit((8, 16), (0.0, 0.0)), "outside (0, 1]"),
        (lambda: DropSchedule.explicit((16, 8), (0.5, 0.25)), "strictly increasing"),
        (lambda: DropSchedule.explicit((8, 8), (0.5, 0.25)), "strictly increasing"),
        (lambda: DropSchedule.explicit((0, 8), (0.5, 0.25)), ">= 1"),
        (lambda: DropSchedule.explicit((8, 16), (0.5,)), "one keep ratio per layer"),
        (lambda: DropSchedule.pyramid(0.5, positions="shifted"), "position mode"),
    ],
)
def test_invalid_schedules_raise_clear_errors(make, message):
    with pytest.raises(PdropEvalError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        make()


def test_layer_beyond_depth_is_refused():
    model = _model("llama", "sdpa")
    embeds, mask, images = _batch(model, [30])
    with pytest.raises(PdropEvalError, match="beyond the model's depth: it has 8 decoder layers"):
        generate_from_embeds(model, embeds, mask, images, DropSchedule.pyramid(0.5), max_new_tokens=1)


def test_right_padding_is_refused():
    model = _model("llama", "sdpa")
    embeds, mask, images = _batch(model, [30, 20])
    with pytest.raises(PdropEvalError, match="LEFT-padded"):
        generate_from_embeds(model, embeds, mask.flip(1), images.flip(1), PDROP, max_new_tokens=1)


def test_schedule_labels_are_distinct_and_stable():
    labels = [
        DropSchedule.none().label,
        DropSchedule.pyramid(0.5).label,
        DropSchedule.pyramid(0.5, layers=(4, 12, 20)).label,
        DropSchedule.pyramid(0.5, positions="original").label,
        DropSchedule.fastv().label,
        DropSchedule.random().label,
        DropSchedule.explicit((8, 16, 24), (0.5, 0.25, 0.125)).label,
    ]
    assert labels[:2] == ["vanilla", "pdrop_lam0.5_8-16-24"]
    assert labels[4] == "fastv_k2_r0.5"
    assert len(set(labels)) == len(labels)
