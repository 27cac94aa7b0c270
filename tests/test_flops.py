"""FLOPs: the paper's published TFLOPs from the config alone, and the exact count against torch's FlopCounterMode."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pdrop_eval.models.presets import preset_config
from pdrop_eval.pyramid.flops import (
    ModelShape,
    TextShape,
    average_retained_tokens,
    image_tokens_per_layer,
    paper_flops,
    sample_flops,
)
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate
from tests.flop_counting import counted_matmul_flops

pytestmark = pytest.mark.engine  # the counts must hold on the oldest supported transformers too

LLAVA_7B = ModelShape.from_config(preset_config("llava-1.5-7b"))


@pytest.mark.parametrize(
    ("schedule", "published"),
    [
        (DropSchedule.none(), 3.82),
        (DropSchedule.pyramid(0.5), 1.78),
        (DropSchedule.pyramid(0.4), 1.54),
        (DropSchedule.pyramid(0.6), 2.06),
        (DropSchedule.fastv(k=2, r=0.5), 2.01),
    ],
)
def test_paper_convention_reproduces_published_tflops(schedule, published):
    tokens = image_tokens_per_layer(schedule, LLAVA_7B.text.layers, 576)
    assert round(paper_flops(LLAVA_7B.text, tokens) / 1e12, 2) == published


def test_shapes_from_config():
    assert LLAVA_7B.text.hidden == 4096 and LLAVA_7B.text.ffn == 11008 and LLAVA_7B.text.layers == 32
    assert LLAVA_7B.vision.tokens == 577
    thirteen = ModelShape.from_config(preset_config("llava-1.5-13b"))
    assert (thirteen.text.hidden, thirteen.text.layers, thirteen.text.heads) == (5120, 40, 40)


def test_average_retained_tokens():
    assert average_retained_tokens(image_tokens_per_layer(DropSchedule.pyramid(0.5), 32, 576)) == 270
    assert average_retained_tokens(image_tokens_per_layer(DropSchedule.none(), 32, 576)) == 576
    fastv = image_tokens_per_layer(DropSchedule.fastv(k=2, r=0.5), 32, 576)
    assert average_retained_tokens(fastv) == (2 * 576 + 30 * 288) / 32


def _tiny_llava(kind: str):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2Config,
    )

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14
    )
    text_args = {
        "vocab_size": 200,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
    }
    text = LlamaConfig(num_key_value_heads=4, **text_args) if kind == "llama" else Qwen2Config(
        num_key_value_heads=2, **text_args
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=199)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.set_attn_implementation("eager")  # FlopCounterMode does not see CPU SDPA kernels; eager is plain matmuls
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize(
    "schedule",
    [DropSchedule.none(), DropSchedule.pyramid(0.5, layers=(2, 4, 6)), DropSchedule.fastv(k=2, r=0.5)],
    ids=lambda schedule: schedule.label,
)
def test_exact_convention_matches_flop_counter(kind, schedule):
    model = _tiny_llava(kind)
    ids = torch.randint(3, 190, (1, 34))
    ids[0, 4:20] = 199
    pixels = torch.randn(1, 3, 56, 56)
    counter = FlopCounterMode(display=False)
    with counter:
        result = generate(model, ids, torch.ones_like(ids), schedule, pixel_values=pixels, max_new_tokens=4)
    trace = result.generations[0].trace
    assert trace.generated_tokens == 4 and trace.vision_crops == 1
    counted = sample_flops(ModelShape.from_config(model.config), trace)
    assert counted.exact == counted_matmul_flops(counter)
    assert counted.exact_rank > 0 if schedule.drops else counted.exact_rank == 0


def test_trace_tokens_match_schedule_and_kv_bytes():
    model = _tiny_llava("llama")
    ids = torch.randint(3, 190, (1, 30))
    ids[0, 4:20] = 199
    schedule = DropSchedule.pyramid(0.5, layers=(2, 4, 6))
    result = generate(model, ids, torch.ones_like(ids), schedule, pixel_values=torch.randn(1, 3, 56, 56))
    trace = result.generations[0].trace
    assert trace.image_tokens_per_layer == image_tokens_per_layer(schedule, 8, 16)
    counted = sample_flops(ModelShape.from_config(model.config), trace, kv_bytes_per_element=4)
    assert counted.kv_cache_bytes == 2 * sum(trace.tokens_per_layer) * 4 * 16 * 4
    assert counted.retained_tokens == (2 * 16 + 2 * 8 + 2 * 4 + 2 * 2) / 8


def test_exact_convention_matches_flop_counter_on_llava_next_crops():
    """Anyres: the tower runs once per crop and each sample has its own image-token count."""
    from PIL import Image

    from pdrop_eval.models import build_batch, load_vlm

    loaded = load_vlm("tiny-llava-next", attn="eager")
    shape = ModelShape.from_config(loaded.model.config)
    for size in [(40, 80), (96, 96)]:
        batch = build_batch(loaded, ["What is in the picture?"], [Image.new("RGB", size, (200, 30, 90))])
        counter = FlopCounterMode(display=False)
        with counter:
            result = generate(
                loaded.model,
                batch.input_ids,
                batch.attention_mask,
                DropSchedule.pyramid(0.5),
                pixel_values=batch.pixel_values,
                image_sizes=batch.image_sizes,
                max_new_tokens=3,
            )
        trace = result.generations[0].trace
        assert trace.vision_crops > 1 and trace.num_image_tokens == batch.image_token_counts[0]
        assert sample_flops(shape, trace).exact == counted_matmul_flops(counter)


@pytest.mark.parametrize(
    "size",
    [(120, 90), (300, 500)],
    ids=["28x38-patches", "42x26-patches"],
)
def test_exact_convention_matches_flop_counter_on_qwen_windowed_tower(size):
    """Qwen2.5-VL: the tower's cost follows each image's patch grid. Both grids leave partial windows at the
    edge (19 merged columns in windows of 2; 13 merged columns) and the tiny tower has one windowed and one full
    block, so counting windows padded to full size, every block as full (or as windowed) attention, a plain MLP
    instead of SwiGLU or the merger on unmerged patches gives a different count."""
    from PIL import Image

    from pdrop_eval.models import build_batch, load_vlm

    loaded = load_vlm("tiny-qwen2.5-vl", attn="eager")
    shape = loaded.family.model_shape(loaded.model.config)
    batch = build_batch(loaded, ["What is in the picture?"], [Image.new("RGB", size, (200, 30, 90))])
    counter = FlopCounterMode(display=False)
    with counter:
        result = generate(
            loaded.model,
            batch.input_ids,
            batch.attention_mask,
            DropSchedule.pyramid(0.5, positions="original"),
            pixel_values=batch.pixel_values,
            image_sizes=batch.image_sizes,
            max_new_tokens=3,
        )
    trace = result.generations[0].trace
    assert trace.vision_grid == tuple(batch.image_sizes[0].tolist())
    counted = sample_flops(shape, trace)
    assert counted.exact == counted_matmul_flops(counter)
    tower = FlopCounterMode(display=False)
    with tower:
        loaded.model.model.visual(batch.pixel_values, grid_thw=batch.image_sizes)
    assert counted.exact_vision == counted_matmul_flops(tower)
    assert counted.paper == paper_flops(shape.text, trace.image_tokens_per_layer)


def test_qwen_presets_are_the_published_configs():
    """Qwen/Qwen2.5-VL-7B-Instruct and -3B-Instruct config.json: one 32-block ViT (full attention in blocks 7,
    15, 23, 31, 112 px windows), merged into the language model's width."""
    from pdrop_eval.families.qwen2_5_vl import Qwen25VLFamily

    seven = Qwen25VLFamily().model_shape(preset_config("qwen2.5-vl-7b"))
    three = Qwen25VLFamily().model_shape(preset_config("qwen2.5-vl-3b"))
    assert seven.text == TextShape(hidden=3584, ffn=18944, layers=28, heads=28, kv_heads=4, head_dim=128, vocab=152064)
    assert three.text == TextShape(hidden=2048, ffn=11008, layers=36, heads=16, kv_heads=2, head_dim=128, vocab=151936)
    for shape, width in [(seven, 3584), (three, 2048)]:
        vision = shape.vision
        assert (vision.hidden, vision.ffn, vision.layers, vision.window_size) == (1280, 3420, 32, 112)
        assert vision.full_attention_layers == (7, 15, 23, 31) and vision.out_hidden == width
    assert preset_config("qwen2.5-vl-7b").image_token_id == 151655


@pytest.mark.parametrize(("preset", "billions"), [("qwen2.5-vl-7b", 8.29), ("qwen2.5-vl-3b", 3.75)])
def test_qwen_presets_build_models_of_the_published_size(preset, billions):
    """The preset builds the HF model (on the meta device: no memory) with the parameter count the Hub lists for
    the checkpoint (8.29B, 3.75B with tied embeddings), so speed.py times a model of the real size."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(preset_config(preset))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
