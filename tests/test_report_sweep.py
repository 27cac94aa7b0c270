"""build_reports on one run directory: the files land in it, plots and kept maps are real PNGs, the HTML embeds
them, the markdown links them, and the Pareto tables hold exactly the undominated schedules."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.layout import TokenLayout
from pdrop_eval.report import ReportPaths, build_reports
from pdrop_eval.report.kept_maps import DIM_ALPHA, dim_dropped
from pdrop_eval.report.table import pareto_front
from tests.run_fixtures import write_run_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportPaths]:
    run_dir = write_run_dir(tmp_path_factory.mktemp("results"), "demo")
    return run_dir, build_reports([run_dir])


def test_outputs_default_to_the_run_dir(built):
    run_dir, paths = built
    assert paths.spreadsheet == run_dir / "results.xlsx" and paths.spreadsheet.is_file()
    assert paths.markdown == run_dir / "report.md" and paths.html == run_dir / "report.html"
    assert all(p.parent == run_dir / "report_files" for p in paths.figures)


def test_plots_and_kept_maps_are_valid_pngs(built):
    _, paths = built
    names = sorted(p.name for p in paths.figures)
    assert names == sorted([
        "shapes_tflops.png", "pope_tflops.png",
        "shapes_kept_demo_0.png", "shapes_kept_demo_1.png", "pope_kept_demo_0.png", "pope_kept_demo_1.png",
    ])
    for path in paths.figures:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
            assert len(set(image.convert("L").getdata())) > 20


def test_kept_map_dims_exactly_the_dropped_patches():
    image = np.full((336, 336, 3), 200, dtype=np.uint8)
    layout = TokenLayout.single_grid(336, 336, 24, 24)
    shaded = dim_dropped(image, layout.cells_of([0, 25, 575]), layout)
    dim = int(200 * (1 - DIM_ALPHA))
    assert shaded[0, 0, 0] == shaded[13, 13, 0] == 200
    assert shaded[14, 0, 0] == shaded[0, 14, 0] == dim
    assert shaded[14:28, 14:28].min() == 200 and shaded[335, 335, 0] == 200 and shaded[200, 100, 2] == dim
    odd_layout = TokenLayout.single_grid(70, 50, 2, 2)
    odd = dim_dropped(np.full((50, 70, 3), 100, dtype=np.uint8), odd_layout.cells_of([1]), odd_layout)
    assert odd[0, 35, 0] == 100 and odd[0, 34, 0] == odd[25, 35, 0] == int(100 * (1 - DIM_ALPHA))


def test_html_embeds_every_figure(built):
    _, paths = built
    html = paths.html.read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(paths.figures)
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in paths.figures}
    assert "report_files/" not in html
    assert "<h2>pope</h2>" in html and "Pareto front" in html and "Paper vs this run" in html


def test_markdown_links_every_figure_relative_to_itself(built):
    run_dir, paths = built
    markdown = paths.markdown.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(links) == sorted(f"report_files/{p.name}" for p in paths.figures)
    assert all((run_dir / link).is_file() for link in links)
    assert r"pdrop\_lam0.5\_8-16-24" in markdown
    assert "| vanilla | FastV K2 R50 |" not in markdown and "| FastV K2 R50 | 2.01 | 84.80 |" in markdown


def test_pareto_table_lists_the_undominated_schedules(built):
    _, paths = built
    markdown = paths.markdown.read_text(encoding="utf-8")
    pope = markdown.split("## pope")[1]
    pareto = pope.split("### Pareto front")[1].split("###")[0]
    listed = re.findall(r"^\| ([a-z0-9\\_.-]+) \|", pareto, flags=re.MULTILINE)
    assert [s.replace("\\", "") for s in listed[1:]] == [
        "pdrop_lam0.3_4-12-20", "pdrop_lam0.3_8-16-24", "pdrop_lam0.5_4-12-20", "pdrop_lam0.5_8-16-24",
        "fastv_k2_r0.5", "pdrop_lam0.7_8-16-24", "vanilla",
    ]


def test_pareto_front_keeps_ties_out_and_drops_dominated():
    frame = pd.DataFrame({
        "schedule": ["a", "b", "c", "d", "e"],
        "primary": [70.0, 70.0, 65.0, 60.0, float("nan")],
        "tflops_paper": [3.0, 2.0, 1.0, 1.5, 0.1],
    })
    assert list(pareto_front(frame)["schedule"]) == ["c", "b"]


def test_run_without_sample_images_draws_no_maps(tmp_path):
    run_dir = write_run_dir(tmp_path, "next", image_grid=None, tasks=("shapes",))
    paths = build_reports([run_dir], tflops="exact")
    assert [p.name for p in paths.figures] == ["shapes_tflops.png"]
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "No sample images with kept image tokens were saved" in markdown
    assert "exact convention" in markdown


def test_truncated_predictions_file_is_a_clear_error(tmp_path):
    run_dir = write_run_dir(tmp_path, "cut", tasks=("shapes",))
    predictions = run_dir / "predictions/shapes/pdrop_lam0.5_8-16-24.jsonl"
    predictions.write_text('{"id": 0, "kept_image_indices": [[1, 2', encoding="utf-8")
    with pytest.raises(PdropEvalError, match="line 1 is not valid JSON"):
        build_reports([run_dir])


def test_without_openpyxl_the_report_is_written_and_the_spreadsheet_skipped(tmp_path, monkeypatch):
    """The GPU image has no openpyxl: a run there still ends with its markdown/HTML report."""
    import importlib.util

    from pdrop_eval.report import build_reports
    from tests.run_fixtures import write_run_dir

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openpyxl" else real_find_spec(name, *a)
    )
    run_dir = write_run_dir(tmp_path, "run", tasks=("shapes",))
    paths = build_reports([run_dir])
    assert paths.spreadsheet is None and not (run_dir / "results.xlsx").exists()
    assert paths.html.stat().st_size > 0 and paths.markdown.exists()
