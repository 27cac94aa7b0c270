"""LLaVA-OneVision FLOPs: the exact count equals torch's FlopCounterMode on the tiny model (SigLIP tiles without a
CLS row, the projector over every crop, Qwen2; the rotary table set aside as tests/flop_counting.py explains), and
the 7B preset has the llava-hf checkpoint's shapes.
"""

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlavaOnevisionForConditionalGeneration
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from pdrop_eval.families.llava_onevision import LlavaOnevisionFamily, packed_length
from pdrop_eval.models import build_batch, load_vlm
from pdrop_eval.models.presets import preset_config
from pdrop_eval.pyramid.flops import image_tokens_per_layer, paper_flops, sample_flops, vision_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import generate
from tests.flop_counting import counted_matmul_flops

pytestmark = pytest.mark.engine  # the counts must hold on the oldest supported transformers too


def test_exact_flops_equal_flop_counter_on_siglip_tiles():
    """SigLIP runs every layer on the 16 patches of each crop, the projector maps every crop's patches, the
    newline vectors cost nothing, then Qwen2. Catches (checked by mutation) a CLS row counted in the tower and a
    single tower pass per image."""
    loaded = load_vlm("tiny-llava-onevision", attn="eager")  # FlopCounterMode does not see CPU SDPA kernels
    shape = loaded.family.model_shape(loaded.model.config)
    assert not shape.vision.cls_token and shape.vision.tokens == 16
    for image in (Image.new("RGB", (60, 40), (200, 30, 90)), Image.new("RGB", (300, 300), (20, 90, 30))):
        batch = build_batch(loaded, ["What is in the picture?"], [image])
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


def test_onevision_7b_preset_is_llava_hf_checkpoint_shape():
    """llava-onevision-qwen2-7b-ov-hf: SigLIP so400m without its last layer (26 of 27) at 384/14 → 729 patches
    per crop, no CLS; Qwen2-7B with 4 KV heads; a 640 × 480 image takes the 2 × 2 pinpoint (5 crops)."""
    config = preset_config("llava-onevision-7b")
    shape = LlavaOnevisionFamily().model_shape(config)
    assert (shape.text.hidden, shape.text.ffn, shape.text.layers, shape.text.kv_heads) == (3584, 18944, 28, 4)
    assert shape.vision.tokens == shape.vision.patches == 729 and shape.vision.layers == 26
    assert image_size_to_num_patches((480, 640), config.image_grid_pinpoints, 384) == 5
    d, m, n = 1152, 4304, 729
    tower = 2 * n * 3 * 14 * 14 * d + 26 * (8 * n * d * d + 4 * n * n * d + 4 * n * d * m)
    assert vision_flops(shape.vision, 3584, 5) == 5 * tower + 2 * 5 * n * (d * 3584 + 3584 * 3584)


def test_onevision_7b_numbers_in_the_readme():
    """A 640 × 480 image: 729 + 40 × 54 + 40 = 2929 tokens (the 2 × 2 tiles' 54 × 54 features unpadded to 40 rows),
    counted by the 7B's own packing on the meta device (no weights), and its TFLOPs as the README prints them."""
    config = preset_config("llava-onevision-7b")
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    tokens = packed_length(model, 480, 640)
    assert tokens == 2929
    shape = LlavaOnevisionFamily().model_shape(config)
    tflops = {}
    for schedule in (DropSchedule.none(), DropSchedule.pyramid(0.5)):
        tflops[schedule.label] = round(paper_flops(shape.text, image_tokens_per_layer(schedule, 28, tokens)) / 1e12, 2)
    assert tflops == {"vanilla": 22.64, "pdrop_lam0.5_8-16-24": 11.48}
    assert round(vision_flops(shape.vision, 3584, 5) / 1e12, 2) == 3.33
