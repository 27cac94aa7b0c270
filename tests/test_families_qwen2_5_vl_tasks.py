"""Every task runs on Qwen2.5-VL (issue 12 item 5): the runner end to end on tiny-qwen2.5-vl from real-format fixture
files (every task's prompt: tests/test_families_every_task.py), the family's position-mode default, and the images
prepared exactly as lmms-eval 0.7.3's Qwen2.5-VL path prepares them."""

import ast
import base64
import functools
import importlib.util
import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pdrop_eval import cli
from pdrop_eval.families.qwen2_5_vl import EVAL_JPEG_QUALITY, EVAL_MAX_PIXELS, EVAL_MIN_PIXELS
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.plan import resolve_position_mode
from tests.fixtures_data import (
    load_fixture_task,
    write_llava_gqa,
    write_mmstar_tsv,
)

# Engine-marked tests also run on the oldest supported transformers (make test-compat); the two that read
# lmms-eval's own code run where it is installed (make test).
engine = pytest.mark.engine


@functools.cache
def _loaded():
    return load_vlm("tiny-qwen2.5-vl")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@engine
def test_runner_end_to_end_on_qwen_from_published_file_formats(tmp_path, monkeypatch, capsys):
    """GQA from LLaVA's folder and MMStar from VLMEvalKit's TSV through the whole CLI with vanilla, FastV and PDrop:
    each prediction records its image's own patch grid and token count (images of different sizes give different
    counts), FLOPs count the windowed tower from that grid, the position mode is the family's `original` and is
    recorded as such, sample images are the resized views lmms-eval feeds the model, and the report draws
    kept-token maps on them."""
    data = tmp_path / "data"
    write_llava_gqa(data)
    _textured((300, 500), "RGB").save(data / "gqa/data/images/n288870.jpg")  # a larger image than the fixtures'
    write_mmstar_tsv(tmp_path / "lmu" / "MMStar.tsv")
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["--model", "tiny-qwen2.5-vl", "--tasks", "gqa,mmstar", "--lambda", "0.5", "--baselines", "vanilla,fastv"]
    args += ["--max-new-tokens", "2", "--batch-size", "2", "--data-root", str(data), "--output-dir", str(tmp_path)]
    assert cli.main([*args, "--run-name", "q"]) == 0
    run = tmp_path / "q"
    metrics = json.loads((run / "metrics.json").read_text())
    settings = metrics["run"]["settings"]
    assert (settings["position_mode"], settings["position_mode_from"]) == ("original", "model family default")
    assert metrics["run"]["model"]["family"] == "qwen2_5_vl"
    labels = {(r["task"], r["schedule"]["label"]) for r in metrics["results"]}
    schedules = {"vanilla", "fastv_k2_r0.5", "pdrop_lam0.5_8-16-24_original"}
    assert labels == {(task, label) for task in ("gqa", "mmstar") for label in schedules}

    loaded = _loaded()
    shape = loaded.family.model_shape(loaded.model.config)
    roots = {"gqa": data, "mmstar": tmp_path}  # LLaVA's folder under the data root; the TSV under root/lmu
    samples = {(task, s.id): s for task, root in roots.items() for s in load_fixture_task(task, root)}
    counts = set()
    for result in metrics["results"]:
        for record in _lines(run / result["predictions"]):
            image = samples[(result["task"], record["id"])].load_image()
            t, h, w = record["vision_grid"]
            assert record["num_image_tokens"] == image_token_count(loaded, image) == t * h * w // 4
            assert record["image_tokens_per_layer"][0] == record["num_image_tokens"]
            assert record["flops_exact"] > shape.vision.flops((t, h, w)) > 0
            counts.add(record["num_image_tokens"])
    assert len(counts) > 1
    views = sorted((run / "samples" / "gqa").glob("*.png"))
    assert views and all(Image.open(v).size[0] % 28 == 0 == Image.open(v).size[1] % 28 for v in views)
    assert "gqa_kept_q_" in (run / "report.md").read_text()  # maps drawn on Qwen's merged grid
    assert "Traceback" not in capsys.readouterr().err


@engine
def test_position_mode_auto_is_the_family_default_and_an_explicit_mode_wins():
    """LLaVA stays compact (official PDrop: every existing label and result unchanged); Qwen2.5-VL keeps M-RoPE
    rows (original); --position-mode compact on Qwen is honoured."""
    assert resolve_position_mode("auto", "tiny-llava") == "compact"
    assert resolve_position_mode("auto", "tiny-qwen2.5-vl") == "original"
    assert resolve_position_mode("compact", "tiny-qwen2.5-vl") == "compact"
    args = cli.build_parser().parse_args(["--model", "tiny-qwen2.5-vl", "--tasks", "shapes", "--lambda", "0.5"])
    plan = cli.plan_from_args(args, [])
    assert [s.label for s in plan.schedules] == ["pdrop_lam0.5_8-16-24_original"]
    assert plan.position_mode_from == "model family default"
    args = cli.build_parser().parse_args(["--model", "tiny-llava", "--tasks", "shapes", "--lambda", "0.5"])
    assert [s.label for s in cli.plan_from_args(args, []).schedules] == ["pdrop_lam0.5_8-16-24"]


def _lmms_eval_model_source() -> ast.Module:
    """lmms-eval 0.7.3's models/simple/qwen2_5_vl.py, parsed (importing it needs decord, which is not installed)."""
    spec = importlib.util.find_spec("lmms_eval")
    return ast.parse((Path(spec.origin).parent / "models" / "simple" / "qwen2_5_vl.py").read_text(encoding="utf-8"))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name)


def test_constants_are_lmms_evals():
    """JPEG quality and the pixel bounds are read from the installed lmms-eval's own source."""
    tree = _lmms_eval_model_source()
    call = next(node for node in ast.walk(_function(tree, "_encode_image_data_url")) if isinstance(node, ast.Call))
    encode = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    assert encode == {"image_format": "JPEG", "mime_type": "image/jpeg", "convert_rgb": True, "quality": 85}
    assert EVAL_JPEG_QUALITY == encode["quality"]
    init = _function(tree, "__init__").args
    defaults = dict(zip([a.arg for a in init.args][-len(init.defaults) :], init.defaults))
    assert ast.unparse(defaults["min_pixels"]) == "256 * 28 * 28" and EVAL_MIN_PIXELS == 256 * 28 * 28
    assert ast.literal_eval(defaults["max_pixels"]) == EVAL_MAX_PIXELS


def _textured(size: tuple[int, int], mode: str) -> Image.Image:
    """Seeded noise with sharp edges, so JPEG's loss shows in the pixels."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2, : size[0] // 3] = (250, 20, 0)
    return Image.fromarray(pixels).convert(mode)


def test_pixel_values_equal_lmms_evals_path():
    """lmms-eval's own encoder (media_encoder.encode_image_to_data_url with _encode_image_data_url's arguments),
    then qwen_vl_utils 0.0.14's fetch_image steps (decode the data URL, to RGB, PIL's default resize to the
    smart_resize size, worked out by hand below), then the processor: our batch holds exactly those pixels. A
    500×375 px greyscale picture: sides round to 504×364 = 183456 px < 200704, so both scale by
    sqrt(200704 / 187500) and ceil to 532×392 px (19×14 tokens). Skipping the JPEG round trip changes them."""
    from lmms_eval.models.model_utils.media_encoder import encode_image_to_data_url

    loaded = _loaded()
    image = _textured((500, 375), "L")
    url = encode_image_to_data_url(image, image_format="JPEG", mime_type="image/jpeg", convert_rgb=True, quality=85)
    fetched = Image.open(BytesIO(base64.b64decode(url.split("base64,", 1)[1]))).convert("RGB")
    resized = fetched.resize((532, 392))
    expected = loaded.image_processor(images=[resized], return_tensors="pt")
    batch = build_batch(loaded, ["What is it?"], [image])
    assert batch.image_sizes.tolist() == expected["image_grid_thw"].tolist() == [[1, 28, 38]]
    assert torch.equal(batch.pixel_values, expected["pixel_values"])
    assert loaded.family.model_view(loaded, image).tobytes() == resized.tobytes()
    without_jpeg = loaded.image_processor(images=[image.convert("RGB").resize((532, 392))], return_tensors="pt")
    assert not torch.equal(batch.pixel_values, without_jpeg["pixel_values"])
