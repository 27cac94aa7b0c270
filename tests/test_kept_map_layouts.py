"""Kept-token maps on variable grids and for methods that choose before the LLM (issue 11 item 5, issue 12 item 7):
each family's token layout against the model's own packing, and maps that light exactly the kept cells."""

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pdrop_eval import cli
from pdrop_eval.families.layout import TokenLayout
from pdrop_eval.methods.visionzip import VisionZip
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.report.kept_maps import DIM_ALPHA, dim_dropped

pytestmark = pytest.mark.engine

SIZES = [(64, 48), (40, 80), (96, 96), (120, 60), (30, 100)]


@functools.cache
def _loaded(name: str):
    return load_vlm(name)


def _image(size, seed=0) -> Image.Image:
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.to(torch.uint8).numpy())


def _centre(layout: TokenLayout, tile: int, cell: int) -> tuple[int, int]:
    """(row, column) pixel at the centre of a cell, by the same proportional cut the maps use."""
    box = layout.tiles[tile]
    left, top, right, bottom = box.box
    row, column = divmod(cell, box.columns)
    return top + ((2 * row + 1) * (bottom - top)) // (2 * box.rows), left + ((2 * column + 1) * (right - left)) // (
        2 * box.columns
    )


@pytest.mark.parametrize("size", SIZES)
def test_llava_next_layout_places_each_token_where_the_model_packs_it(size):
    """Each crop's features replaced by their own (crop, cell) ids and packed by the model's own
    `pack_image_features` (newline = −1): the packed ids are the layout's places, token for token. Checked by
    mutation against the unpadding read from the columns where it cuts rows, and the base view after the tiles."""
    loaded = _loaded("tiny-llava-next")
    model = loaded.model
    image = _image(size)
    view, layout = loaded.family.token_layout(loaded, image)
    batch = build_batch(loaded, ["What?"], [image])
    crops = int(loaded.family.count_crops(model, batch.image_sizes, 1)[0])
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    ids = torch.stack(
        [torch.tensor([[crop, cell] for cell in range(side * side)], dtype=torch.float32) for crop in range(crops)]
    )
    packed, _ = model.model.pack_image_features(
        [ids], batch.image_sizes, "default", image_newline=torch.tensor([-1.0, -1.0])
    )
    expected = [None if crop < 0 else (int(crop), int(cell)) for crop, cell in packed[0].tolist()]
    assert list(layout.tokens) == expected
    assert len(layout.tokens) == image_token_count(loaded, image)
    assert len(layout.tiles) == crops and view.size[0] >= layout.tiles[-1].box[2]
    assert TokenLayout.from_json(json.loads(json.dumps(layout.to_json()))) == layout


def test_qwen2_5_vl_layout_is_its_merged_grid_row_major():
    loaded = _loaded("tiny-qwen2.5-vl")
    image = _image((120, 60))
    view, layout = loaded.family.token_layout(loaded, image)
    grid = loaded.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    merge = loaded.model.config.vision_config.spatial_merge_size
    ((tile, rows, columns),) = [(t.box, t.rows, t.columns) for t in layout.tiles]
    assert (rows, columns) == (grid[1] // merge, grid[2] // merge)
    assert tile == (0, 0, view.width, view.height) and rows * columns == image_token_count(loaded, image)
    assert list(layout.tokens) == [(0, cell) for cell in range(rows * columns)]


@pytest.mark.parametrize("space", ["tokens", "crops"])
def test_a_map_lights_exactly_the_kept_cells_on_anyres_tiles(space):
    """A random kept set drawn on LLaVA-NeXT's base view and tiles: every cell centre of a kept token keeps its
    colour, every other cell centre is dimmed, newline tokens light nothing. Checked by mutation against the tiles'
    cells cut column-major."""
    loaded = _loaded("tiny-llava-next")
    view, layout = loaded.family.token_layout(loaded, _image((120, 60)))
    generator = torch.Generator().manual_seed(1)
    limit = layout.index_limit(space)
    kept = torch.randperm(limit, generator=generator)[: limit // 3].tolist()
    cells = layout.cells_of(kept, space)
    image = np.full((view.height, view.width, 3), 200, dtype=np.uint8)
    shaded = dim_dropped(image, cells, layout)
    dim = int(200 * (1 - DIM_ALPHA))
    for tile, box in enumerate(layout.tiles):
        for cell in range(box.rows * box.columns):
            row, column = _centre(layout, tile, cell)
            assert shaded[row, column, 0] == (200 if (tile, cell) in cells else dim)
    if space == "tokens":
        assert cells == {layout.tokens[i] for i in kept} - {None}
    else:
        per_tile = layout.tiles[0].rows * layout.tiles[0].columns
        assert cells == {(i // per_tile, i % per_tile) for i in kept}


def test_visionzip_on_llava_next_draws_its_dominant_patches(tmp_path):
    """A NeXT run with a before-the-LLM method: its sample images come with layouts and the report draws a map
    from its kept features (before, runs on NeXT had no maps, and before-the-LLM methods none anywhere)."""
    argv = [
        "--model",
        "tiny-llava-next",
        "--tasks",
        "shapes",
        "--limit",
        "2",
        "--max-new-tokens",
        "1",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "maps",
        "--methods",
        "visionzip,divprune,vanilla",
        "--budget",
        "160",
    ]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "maps"
    layouts = sorted((run_dir / "samples" / "shapes").glob("*.json"))
    assert layouts, "the run saved a layout beside each sample image"
    markdown = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "shapes_kept_maps_" in markdown and "no map" not in markdown
    record = json.loads((run_dir / "predictions/shapes/visionzip_d27_c5.jsonl").read_text().splitlines()[0])
    layout = TokenLayout.from_json(json.loads(layouts[0].read_text()))
    assert VisionZip.kept_index_space == "crops"
    assert max(record["kept_feature_indices"]) < layout.index_limit("crops")
