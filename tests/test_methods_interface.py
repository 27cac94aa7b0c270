"""The pruning-method interface: old schedules keep their labels and records, the engine runs any method through
the interface alone, and the registry answers unknown names with one line."""

import copy
import dataclasses
import json
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods import METHODS, Boundary, PruningMethod, method_class
from pdrop_eval.methods.pdrop import PDrop
from pdrop_eval.plan import schedule_record
from pdrop_eval.pyramid.engine import generate_from_embeds
from pdrop_eval.pyramid.flops import ModelShape, sample_flops
from pdrop_eval.pyramid.schedule import DropSchedule
from tests.numerics import assert_fp32_close

# Prediction files are named by label: these strings are the names runs made before methods were plugins.
OLD_LABELS = [
    (DropSchedule.none(), "vanilla"),
    (DropSchedule.pyramid(0.5), "pdrop_lam0.5_8-16-24"),
    (DropSchedule.pyramid(0.4, layers=(4, 12, 20)), "pdrop_lam0.4_4-12-20"),
    (DropSchedule.pyramid(0.5, positions="original"), "pdrop_lam0.5_8-16-24_original"),
    (DropSchedule.explicit((8, 16, 24), (0.5, 0.25, 0.125)), "pdrop_8-16-24_r0.5-0.25-0.125"),
    (DropSchedule.explicit((2,), (1 / 3,)), "pdrop_2_r0.333333"),
    (DropSchedule.fastv(), "fastv_k2_r0.5"),
    (DropSchedule.fastv(k=3, r=0.75, positions="compact"), "fastv_k3_r0.75_compact"),
    (DropSchedule.random(), "random_8-16-24_r0.5-0.25-0.125_s0"),
    (DropSchedule.random((3, 5), (0.6, 0.3), seed=7, positions="original"), "random_3-5_r0.6-0.3_s7_original"),
]


@pytest.mark.parametrize(("method", "label"), OLD_LABELS, ids=[label for _, label in OLD_LABELS])
def test_labels_of_existing_schedules_are_unchanged(method, label):
    assert method.label == label


def test_records_keep_the_keys_and_values_reports_read():
    assert schedule_record(DropSchedule.pyramid(0.5)) == {
        "label": "pdrop_lam0.5_8-16-24",
        "method": "pdrop",
        "lam": 0.5,
        "layers": [8, 16, 24],
        "ratios": [0.5, 0.25, 0.125],
        "positions": "compact",
    }
    assert schedule_record(DropSchedule.fastv()) == {
        "label": "fastv_k2_r0.5",
        "method": "fastv",
        "lam": None,
        "layers": [2],
        "ratios": [0.5],
        "positions": "original",
    }
    assert schedule_record(DropSchedule.none()) == {
        "label": "vanilla",
        "method": "vanilla",
        "lam": None,
        "layers": [],
        "ratios": [],
        "positions": "compact",
    }
    assert schedule_record(DropSchedule.random(seed=3))["method"] == "random"


def test_equal_settings_are_one_method_and_different_classes_differ():
    assert DropSchedule.pyramid(0.5) == PDrop.from_lambda(0.5)
    assert len({DropSchedule.pyramid(0.5), DropSchedule.pyramid(0.5), DropSchedule.none()}) == 2
    same_numbers = DropSchedule.random(layers=(2,), ratios=(0.5,), positions="original")
    assert same_numbers != DropSchedule.fastv(k=2, r=0.5)


def test_registry_names_every_method_once_and_refuses_unknown_names():
    assert set(METHODS) >= {"vanilla", "pdrop", "fastv", "random", "divprune", "downsample"}
    assert all(cls.name == name for name, cls in METHODS.items())
    assert len({cls.display_name for cls in METHODS.values()}) == len(METHODS)
    assert method_class("divprune").name == "divprune"
    with pytest.raises(PdropEvalError) as error:
        method_class("visionzipp")
    assert "unknown pruning method 'visionzipp': choose from vanilla, pdrop" in str(error.value)
    assert "\n" not in str(error.value)


@dataclasses.dataclass(frozen=True)
class KeepEarliest(PruningMethod):
    """A method the engine has never heard of: after `layer` layers keep the first `keep` image tokens."""

    name = "keep_earliest"
    display_name = "keep earliest"

    layer: int = 2
    keep: int = 5

    @property
    def label(self) -> str:
        return f"earliest_{self.layer}_{self.keep}"

    @property
    def stage_layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        return self.keep

    def score(self, boundary: Boundary) -> torch.Tensor:
        assert boundary.layer == self.layer and boundary.stage == 0
        assert boundary.hidden.shape == boundary.last_input.shape
        return -boundary.image_ordinal.float()

    def overhead_flops(self, shape, trace) -> int:
        return 7


def test_a_new_method_plugs_into_the_engine_through_the_interface_alone():
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    embeds = torch.randn(2, 20, 32)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, :4] = 0
    images = torch.zeros(2, 20, dtype=torch.bool)
    images[0, 3:15] = True
    images[1, 6:14] = True
    result = generate_from_embeds(model, embeds, mask, images, KeepEarliest(), max_new_tokens=2)
    for generation, count, length in zip(result.generations, (12, 8), (20, 16)):
        trace = generation.trace
        assert trace.kept_image_indices == [[0, 1, 2, 3, 4]]
        assert trace.image_tokens_per_layer == [count, count, 5, 5]
        assert trace.tokens_per_layer == [length, length, length - count + 5, length - count + 5]
        assert sample_flops(ModelShape.from_config(config), trace).exact_rank == 7


def _one_of_each() -> list[PruningMethod]:
    from pdrop_eval.methods.dart import DART
    from pdrop_eval.methods.divprune import DivPrune
    from pdrop_eval.methods.downsample import Downsample
    from pdrop_eval.methods.sparsevlm import SparseVLM
    from pdrop_eval.methods.visionzip import VisionZip

    methods = [method for method, _ in OLD_LABELS] + [DivPrune(), Downsample(), VisionZip(), DART(), SparseVLM()]
    assert {type(method).name for method in methods} == set(METHODS), "a registered method is missing here"
    return methods


def test_every_method_names_a_file_and_records_as_json():
    labels = set()
    for method in _one_of_each():
        record = json.loads(json.dumps(method.record()))
        assert record["method"] == type(method).name and record["label"] == method.label
        assert re.fullmatch(r"[A-Za-z0-9._-]+", method.label), method.label
        assert isinstance(record["layers"], list) and record["positions"] in ("compact", "original")
        labels.add(method.label)
    assert len(labels) == len(_one_of_each())


@dataclasses.dataclass(frozen=True)
class KeepEarliestAddMean(KeepEarliest):
    """Keeps the first `keep` image tokens and adds the mean of the deleted ones right after them (`added` tokens
    claimed, to check the engine refuses a count that differs)."""

    positions: str = "compact"
    claimed: int = 1

    def added_count(self, num_image_tokens: int, stage: int) -> int:
        return self.claimed

    def recycle(self, boundary: Boundary, scores: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        deleted = boundary.image_mask & ~keep
        return [boundary.hidden[row, deleted[row]].mean(0, keepdim=True) for row in range(keep.shape[0])]


def _manual_add_mean(model, embeds: torch.Tensor, start: int, count: int, keep: int) -> torch.Tensor:
    """Layers 0-1 on the whole prompt, then [before the image, first `keep` image tokens, mean of the rest, text]
    re-indexed 0..n-1 through layers 2-3; the last token's logits."""
    hidden, layers = embeds, model.model.layers

    def run(hidden, indices):
        length = hidden.shape[1]
        positions = torch.arange(length)[None]
        causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
        for index in indices:
            output = layers[index](
                hidden,
                attention_mask=causal,
                position_ids=positions,
                position_embeddings=model.model.rotary_emb(hidden, positions),
            )
            hidden = output[0] if isinstance(output, tuple) else output
        return hidden

    with torch.no_grad():
        hidden = run(hidden, [0, 1])
        merged = hidden[:, start + keep : start + count].mean(1, keepdim=True)
        hidden = torch.cat([hidden[:, : start + keep], merged, hidden[:, start + count :]], dim=1)
        hidden = run(hidden, [2, 3])
        return model.lm_head(model.model.norm(hidden[:, -1]))[0]


def test_tokens_a_method_adds_go_after_the_kept_image_tokens_and_count_as_image_tokens():
    """The manual loop's float64 twin gives the tolerance. Checked by mutation against added tokens appended after
    the text instead of right after the image."""
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    embeds = torch.randn(2, 20, 32)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, :4] = 0
    images = torch.zeros(2, 20, dtype=torch.bool)
    images[0, 3:15] = True
    images[1, 6:14] = True
    method = KeepEarliestAddMean(layer=2, keep=5)
    result = generate_from_embeds(model, embeds, mask, images, method, max_new_tokens=2, return_logits=True)
    exact_model = copy.deepcopy(model).double()  # the manual loop's float64 twin gives the tolerance
    for row, (offset, start, count, length) in enumerate([(0, 3, 12, 20), (4, 2, 8, 16)]):
        trace = result.generations[row].trace
        assert trace.kept_image_indices == [[0, 1, 2, 3, 4]]
        assert trace.image_tokens_per_layer == [count, count, 6, 6]
        assert trace.tokens_per_layer == [length, length, length - count + 6, length - count + 6]
        expected = _manual_add_mean(model, embeds[row : row + 1, offset:], start, count, 5)
        exact = _manual_add_mean(exact_model, embeds[row : row + 1, offset:].double(), start, count, 5)
        assert_fp32_close(result.step_logits[row, 0], expected, exact)
    with pytest.raises(PdropEvalError, match="added \\[1, 1\\] tokens at stage 0, not its added_count"):
        generate_from_embeds(model, embeds, mask, images, KeepEarliestAddMean(claimed=2), max_new_tokens=1)
    with pytest.raises(PdropEvalError, match="use positions='compact'"):
        generate_from_embeds(model, embeds, mask, images, KeepEarliestAddMean(positions="original"), max_new_tokens=1)
