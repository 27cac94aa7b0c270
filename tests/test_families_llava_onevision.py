"""LLaVA-OneVision as a model family: the tiny random checkpoint loads through `load_vlm` like llava-hf's, its
image-token counts are what the model packs (SigLIP tiles, anyres_max_9 downsizing, a newline per row), the engine
equals HF `generate` and itself under batching and caching, ranks as a naive eager forward does, and the runner
takes it end to end. FLOPs: tests/test_flops_llava_onevision.py."""

import functools
import json

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import LlavaOnevisionProcessor
from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape

from pdrop_eval import cli
from pdrop_eval.families.llava_onevision import LlavaOnevisionFamily, chat_prompt
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.pyramid.engine import DecoderParts, prefill
from pdrop_eval.pyramid.schedule import DropSchedule
from pdrop_eval.pyramid.vlm import embed_with_images, encode_images, generate
from tests.fixtures_data import write_llava_gqa, write_mmstar_authors_tsv
from tests.numerics import assert_fp32_close

pytestmark = pytest.mark.engine  # also run on the oldest supported transformers (make test-compat)

NAME = "tiny-llava-onevision"
PROMPTS = ["What color is the circle?", "How many shapes are there?", "Describe the picture.", "Is it red?"]
# (width, height) -> tiles (rows × columns of 56 px) and tokens: 1×2 → 44, 2×1 → 56, 4×4 (16 × 16 features, downsized
# by anyres_max_9 to 12 × 12) → 172, 2×3 → 104: four token counts, four tile layouts.
SIZES = [(60, 40), (40, 100), (300, 300), (120, 90)]
CROPS = [3, 3, 17, 7]
SCHEDULE = DropSchedule.pyramid(0.5)


@functools.cache
def _loaded(attn: str = "sdpa", dtype: torch.dtype = torch.float32):
    """float64 loads the same weights, cast exactly: the exact twin each fp32 comparison takes its tolerance from."""
    return load_vlm(NAME, attn=attn, dtype=dtype)


def _images():
    images = []
    for index, size in enumerate(SIZES):
        image = Image.new("RGB", size, (40 * index, 200 - 30 * index, 90))
        ImageDraw.Draw(image).ellipse((3, 3, size[0] // 2, size[1] // 2), fill=(255, 50 * index, 0))
        images.append(image)
    return images


def _generate(loaded, batch, method, **options):
    return generate(
        loaded.model,
        batch.input_ids,
        batch.attention_mask,
        method,
        pixel_values=batch.pixel_values.to(loaded.model.dtype),
        image_sizes=batch.image_sizes,
        **{"eos_token_ids": loaded.eos_token_ids, "pad_token_id": loaded.pad_token_id, **options},
    )


def _processor_count(loaded, image: Image.Image) -> int:
    """transformers' own LlavaOnevisionProcessor count (what its `__call__` expands `<image>` to). The processor
    cannot be built here (its video processor needs torchvision), so its counting method runs on an instance
    holding only what that method reads: the image processor, the checkpoint's per-tile tokens and aspect mode."""
    processor = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    processor.image_processor = loaded.image_processor
    processor_config = json.loads((loaded.path / "processor_config.json").read_text())
    processor.num_image_tokens = processor_config["num_image_tokens"]
    processor.vision_aspect_ratio = processor_config["vision_aspect_ratio"]
    tile = loaded.image_processor.size["height"]
    width, height = image.size
    return processor._get_number_of_features(height, width, tile, tile)


def test_tiny_onevision_is_a_real_model_directory_loaded_like_a_checkpoint():
    loaded = _loaded()
    assert isinstance(loaded.family, LlavaOnevisionFamily) and loaded.kind == "llava_onevision"
    files = {path.name for path in loaded.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    config = json.loads((loaded.path / "config.json").read_text())
    assert config["model_type"] == "llava_onevision" and config["vision_aspect_ratio"] == "anyres_max_9"
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    assert config["vision_config"]["vision_use_head"] is False and config["text_config"]["model_type"] == "qwen2"
    assert loaded.image_token_id == loaded.tokenizer.convert_tokens_to_ids("<image>")
    assert loaded.eos_token_ids == (loaded.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    assert loaded.tokenizer.bos_token_id is None  # Qwen2 adds no BOS: the prompt starts at <|im_start|>
    assert loaded.template == "qwen_1_5" and loaded.image_tokens_per_image is None


def test_token_counts_are_what_the_model_packs_and_the_processor_expands():
    """The family's count equals transformers' processor count and the features the model packs, for four tile
    layouts including a downsized one; a count without the newline tokens, without the anyres_max_9 downsizing or
    without unpadding fails here (the 300 × 300 image alone would be 16 + 256 + 16 = 288 undownsized)."""
    loaded = _loaded()
    images = _images()
    counts = [image_token_count(loaded, image) for image in images]
    assert counts == [44, 56, 172, 104]
    assert counts == [_processor_count(loaded, image) for image in images]
    batch = build_batch(loaded, PROMPTS, images)
    placeholders = ((batch.input_ids == loaded.image_token_id) & batch.attention_mask.bool()).sum(-1).tolist()
    assert placeholders == batch.image_token_counts == counts
    features = encode_images(loaded.model, batch.pixel_values, batch.image_sizes)
    assert [len(f) for f in features] == counts
    assert loaded.family.count_crops(loaded.model, batch.image_sizes, len(images)) == CROPS
    for size in [(6, 4), (500, 120), (90, 330), (224, 224)]:
        image = Image.new("RGB", size)
        assert image_token_count(loaded, image) == _processor_count(loaded, image)


def test_prompt_is_lmms_evals_qwen_1_5_conversation():
    """lmms-eval 0.7.3's llava_onevision: `"<image>\\n" + context` as the user turn of conv_templates["qwen_1_5"]
    (CHATML: system, user, empty assistant), split at <image> by tokenizer_image_token: text ids on either side of
    the image's run of placeholders, no BOS."""
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nWhat is it?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat_prompt("What is it?") == expected
    loaded = _loaded()
    tokenizer = loaded.tokenizer
    batch = build_batch(loaded, ["What is it?"], _images()[:1])
    count = batch.image_token_counts[0]
    before, after = expected.split("<image>")
    ids = tokenizer(before).input_ids + [loaded.image_token_id] * count + tokenizer(after).input_ids
    assert batch.input_ids[0].tolist() == ids
    assert tokenizer.decode(batch.input_ids[0]) == expected.replace("<image>", "<image>" * count)


def test_schedule_none_equals_hf_generate_on_a_mixed_tile_batch():
    """HF's own forward packs and positions this left-padded batch of four tile layouts. Catches (checked by
    mutation) the tower read at LLaVA's feature layer −2 instead of OneVision's −1, newline tokens left out of the
    count, and decode positions one off."""
    loaded = _loaded()
    batch = build_batch(loaded, PROMPTS, _images())
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
        for runner in (loaded, _loaded(dtype=torch.float64))
    )
    ours = _generate(loaded, batch, DropSchedule.none(), max_new_tokens=6, return_logits=True, eos_token_ids=())
    prompt_length = batch.input_ids.shape[1]
    assert [g.token_ids for g in ours.generations] == reference.sequences[:, prompt_length:].tolist()
    assert torch.equal(exact.sequences, reference.sequences)
    assert_fp32_close(ours.step_logits, torch.stack(reference.logits, dim=1), torch.stack(exact.logits, dim=1))
    assert all(len(set(g.token_ids)) > 1 for g in ours.generations), "tiny model output is degenerate"


def test_batch_of_four_tile_layouts_equals_four_single_runs_with_drops():
    """Each row, with its own token count and crops, equals its batch-1 run. Catches (checked by mutation) one
    image's tiles paired with another row's prompt (the pixel rows rolled across the batch), and a count without
    newlines or a crop count of 1."""
    loaded = _loaded()
    images = _images()
    batch = build_batch(loaded, PROMPTS, images)
    batched = _generate(loaded, batch, SCHEDULE, max_new_tokens=5, return_logits=True)
    for row in range(len(PROMPTS)):
        single_batch = build_batch(loaded, PROMPTS[row : row + 1], images[row : row + 1])
        single, exact = (
            _generate(runner, single_batch, SCHEDULE, max_new_tokens=5, return_logits=True)
            for runner in (loaded, _loaded(dtype=torch.float64))
        )
        mine, theirs, twin = single.generations[0], batched.generations[row], exact.generations[0]
        assert theirs.trace.num_image_tokens == batch.image_token_counts[row]
        assert theirs.trace.vision_crops == CROPS[row]
        assert [len(k) for k in theirs.trace.kept_image_indices] == [
            int(batch.image_token_counts[row] * r) for r in SCHEDULE.ratios
        ]
        assert mine.trace.kept_image_indices == theirs.trace.kept_image_indices == twin.trace.kept_image_indices
        assert mine.token_ids == theirs.token_ids == twin.token_ids
        assert_fp32_close(batched.step_logits[row], single.step_logits[0], exact.step_logits[0])


@pytest.mark.parametrize("positions", ["compact", "original"])
def test_cached_decoding_equals_recomputation_with_drops(positions):
    """Each step recomputed from scratch (prompt + tokens so far, the same kept sets forced) gives the logits the
    cached decode gave. Catches (checked by mutation) a decode position one off after a drop."""
    loaded = _loaded()
    method = DropSchedule.pyramid(0.5, positions=positions)
    batch = build_batch(loaded, PROMPTS[2:3], _images()[2:3])
    result = _generate(loaded, batch, method, max_new_tokens=4, return_logits=True, eos_token_ids=())
    generation = result.generations[0]
    recomputed = {}
    for runner in (loaded, _loaded(dtype=torch.float64)):
        model = runner.model
        features = encode_images(model, batch.pixel_values.to(model.dtype), batch.image_sizes)
        per_step = []
        for step in range(len(generation.token_ids)):
            ids = torch.cat([batch.input_ids, torch.tensor([generation.token_ids[:step]], dtype=torch.long)], dim=1)
            embeds, image_mask = embed_with_images(model, ids, features)
            state = prefill(
                DecoderParts.from_model(model, runner.family.positions),
                embeds,
                torch.ones_like(ids),
                image_mask,
                method,
                forced_keep=[generation.trace.kept_image_indices],
                use_cache=False,
            )
            per_step.append(state.logits[0])
        recomputed[model.dtype] = torch.stack(per_step)
    assert_fp32_close(result.step_logits[0], recomputed[torch.float32], recomputed[torch.float64])


def test_ranking_equals_naive_eager_attention():
    """The kept sets at the first boundary are the top image tokens (newlines included) of the last prompt token's
    head-averaged attention in HF's own eager forward, positions counted over each row's real tokens: PDrop reads
    layer 8 (the next layer), FastV layer 2 (the one that just ran). Catches (checked by mutation) the tower read at
    feature layer −2 and newline tokens left out."""
    loaded = _loaded(attn="eager")
    batch = build_batch(loaded, PROMPTS, _images())
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        attentions = loaded.model(**batch.model_inputs(), position_ids=positions, output_attentions=True).attentions
    image_tokens = (batch.input_ids == loaded.image_token_id) & batch.attention_mask.bool()
    for method, layer in [(SCHEDULE, 8), (DropSchedule.fastv(k=3, r=0.5), 2)]:
        result = _generate(loaded, batch, method, max_new_tokens=1)
        for row, generation in enumerate(result.generations):
            weights = attentions[layer][row, :, -1, :].mean(0)[image_tokens[row]]
            keep = method.keep_count(batch.image_token_counts[row], 0)
            assert generation.trace.kept_image_indices[0] == sorted(weights.topk(keep).indices.tolist())


def test_cls_rankers_are_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """VisionZip ranks by the tower's CLS attention, which SigLIP does not have; downsample needs one square grid.
    Both are one error line from config.json alone, asked for by budget or as a baseline."""
    from pdrop_eval import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(runner, "load_vlm", no_loading)
    common = ["--model", NAME, "--tasks", "shapes", "--output-dir", str(tmp_path), "--no-report"]
    for method, reason in (("visionzip", "has no CLS token"), ("downsample", "tiles its images")):
        for flags in (["--methods", method, "--budget", "64"], ["--baselines", method]):
            assert cli.main([*common, *flags]) == 2
            err = capsys.readouterr().err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and reason in errors[0] and "Traceback" not in err


def test_runner_scores_gqa_and_mmstar_on_onevision(tmp_path, monkeypatch):
    """The fixture GQA (LLaVA's folder) and MMStar (its TSV) through run_eval: every record holds the image's
    token count and crops as the family counts them, FLOPs include the tower, and each sample image is saved with its
    token layout so the report draws kept-token maps on the base view and the tiles."""
    data = tmp_path / "data"
    write_llava_gqa(data)
    write_mmstar_authors_tsv(tmp_path / "lmu" / "MMStar.tsv")
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["--model", NAME, "--tasks", "gqa,mmstar", "--lambda", "0.5", "--baselines", "vanilla"]
    args += ["--max-new-tokens", "2", "--batch-size", "2", "--data-root", str(data)]
    assert cli.main([*args, "--output-dir", str(tmp_path), "--run-name", "ov"]) == 0
    metrics = json.loads((tmp_path / "ov" / "metrics.json").read_text())
    assert metrics["run"]["model"]["kind"] == "llava_onevision" and metrics["run"]["model"]["image_grid"] is None
    assert {(r["task"], r["schedule"]["label"]) for r in metrics["results"]} == {
        (task, label) for task in ("gqa", "mmstar") for label in ("vanilla", "pdrop_lam0.5_8-16-24")
    }
    loaded = _loaded()
    # every fixture image is 6 × 4: the base view and one tile, 16 + 2 unpadded rows of 4 + 2 newlines
    expected = image_token_count(loaded, Image.new("RGB", (6, 4)))
    assert expected == 26
    for result in metrics["results"]:
        records = [json.loads(line) for line in (tmp_path / "ov" / result["predictions"]).read_text().splitlines()]
        assert records and all(r["num_image_tokens"] == expected and r["vision_crops"] == 2 for r in records)
        assert all(r["flops_exact"] > 0 for r in records)
    saved = sorted((tmp_path / "ov" / "samples" / "gqa").iterdir())
    assert saved and {p.suffix for p in saved} == {".json", ".png"} and len(saved) % 2 == 0
    report = (tmp_path / "ov" / "report.html").read_text(encoding="utf-8")
    assert "gqa" in report and "mmstar" in report
    assert "gqa_kept_ov_" in (tmp_path / "ov" / "report.md").read_text()  # maps on the base view and tiles


def _packed_places(model, size, aspect_ratio):
    """The model's own `pack_image_features` on tile features that hold their (row, column) in the stitched tiles:
    each packed tile token's place, [-1, -1] for a newline (blended places where anyres_max downsized)."""
    config, vision = model.config, model.config.vision_config
    side = vision.image_size // vision.patch_size
    rows, columns = get_anyres_image_grid_shape((size[1], size[0]), config.image_grid_pinpoints, vision.image_size)
    grid = torch.stack(torch.meshgrid(torch.arange(rows * side), torch.arange(columns * side), indexing="ij"), -1)
    tiles = grid.view(rows, side, columns, side, 2).permute(0, 2, 1, 3, 4).reshape(rows * columns, side * side, 2)
    features = torch.cat([torch.zeros(1, side * side, 2), tiles.float()])
    sizes = torch.tensor([[size[1], size[0]]])
    packed = model.model.pack_image_features([features], sizes, torch.full((2,), -1.0), aspect_ratio)[0][0]
    return packed[side * side :].tolist(), columns * vision.image_size


@pytest.mark.parametrize("size", [*SIZES, (37, 500)], ids=str)
def test_kept_map_layout_places_each_token_where_the_model_packs_it(size):
    """Newline tokens have no cell exactly where the model packs them; the tile grid has the packed shape; without
    downsizing each tile token's cell centre is its own patch's centre on the drawn tiles (within a pixel of
    rounding), and where anyres_max_9 downsized (300 × 300: 16 × 16 → 12 × 12) the grid spans the unpadded area.
    Checked by mutation against the tile grid cut column-major."""
    loaded = _loaded()
    model = loaded.model
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    pixel = model.config.vision_config.image_size / side
    image = Image.new("RGB", size, (90, 40, 200))
    view, layout = loaded.family.token_layout(loaded, image)
    packed, tiles_width = _packed_places(model, size, model.config.vision_aspect_ratio)
    assert len(layout.tokens) == image_token_count(loaded, image) == side * side + len(packed)
    newlines = [i for i, (row, _) in enumerate(packed) if row == -1]
    assert [i for i, place in enumerate(layout.tokens[side * side :]) if place is None] == newlines
    grid = layout.tiles[1]
    assert (grid.rows, grid.columns) == (len(newlines), len(packed) // len(newlines) - 1)
    left, (x0, y0, x1, y1) = view.width - tiles_width, grid.box
    unpadded = [place for place in _packed_places(model, size, "anyres_max_100000")[0] if place[0] >= 0]
    assert (
        abs(x0 - (left + min(c for _, c in unpadded) * pixel)) <= 1
        and abs(x1 - (left + (max(c for _, c in unpadded) + 1) * pixel)) <= 1
    )
    assert (
        abs(y0 - min(r for r, _ in unpadded) * pixel) <= 1 and abs(y1 - (max(r for r, _ in unpadded) + 1) * pixel) <= 1
    )
    if size == (300, 300):
        assert (grid.rows, grid.columns) == (12, 12)
        return
    for place, (row, column) in zip(layout.tokens[side * side :], packed):
        if place is not None:
            cell_row, cell_column = divmod(place[1], grid.columns)
            assert abs(x0 + (cell_column + 0.5) * (x1 - x0) / grid.columns - (left + (column + 0.5) * pixel)) <= 1
            assert abs(y0 + (cell_row + 0.5) * (y1 - y0) / grid.rows - (row + 0.5) * pixel) <= 1
