"""What a reader must see: another model than the paper's, a partial task, unlike merged runs; λ to 0.001, an N
column, readable legends, a y axis that stays in 0-100, kept maps with question, gold and every answer."""

from __future__ import annotations

import json

import openpyxl
import pandas as pd

from pdrop_eval import cli
from pdrop_eval.report import build_reports
from pdrop_eval.report.load import load_run
from pdrop_eval.report.plots import task_figure
from pdrop_eval.report.reference import reference_frame
from pdrop_eval.report.table import results_frame
from tests.run_fixtures import write_sampled_run


def test_another_model_and_a_partial_task_are_said_in_report_console_and_xlsx(tmp_path, capsys):
    run_dir = write_sampled_run(tmp_path, "tiny", task="pope", n=300, model="tiny-llava")
    assert cli.main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "warning: run tiny evaluated tiny-llava, but the paper's pope numbers are for llava-1.5-7b" in err
    assert "n=300 of its 8,910 samples" in err
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.count('class="warning"') == 2 and "not a reproduction" in html
    assert "<th>our model</th>" in html and "<td>tiny-llava</td>" in html
    warnings = openpyxl.load_workbook(run_dir / "results.xlsx")["Warnings"]
    assert [c.value for c in warnings["B"]][1:] == [line.removeprefix("warning: ") for line in err.splitlines()]


def test_the_papers_model_on_the_full_task_gets_no_warning(tmp_path):
    run_dir = write_sampled_run(tmp_path, "full", task="pope", n=300, model="llava-hf/llava-1.5-7b-hf")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["tasks"]["pope"]["size"] = 300
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert build_reports([run_dir]).warnings == ()


def test_unlike_merged_runs_are_named_and_get_a_front_each(tmp_path, capsys):
    a = write_sampled_run(tmp_path, "a", n=48, max_new_tokens=8)
    b = write_sampled_run(tmp_path, "b", n=24, max_new_tokens=4, seed=1)
    assert cli.main(["report", str(a), str(b), "--out", str(tmp_path / "both")]) == 0
    err = capsys.readouterr().err
    assert "differ in max_new_tokens (a: 8, b: 4); n (a: 48, b: 24)" in err
    markdown = (tmp_path / "both" / "report.md").read_text(encoding="utf-8")
    assert "Pareto front of each run" in markdown
    front = markdown.split("Pareto front of each run")[1].split("###")[0]
    assert "| a |" in front and "| b |" in front
    assert "shapes\\_kept\\_a\\_0" not in markdown
    figures = sorted(p.name for p in (tmp_path / "both" / "report_files").glob("shapes_kept_*"))
    assert figures == ["shapes_kept_a_0.png", "shapes_kept_a_1.png", "shapes_kept_b_0.png", "shapes_kept_b_1.png"]


def test_like_runs_merge_into_one_front(tmp_path):
    a, b = write_sampled_run(tmp_path, "a"), write_sampled_run(tmp_path, "b", seed=1)
    paths = build_reports([a, b], tmp_path / "both")
    assert not [w for w in paths.warnings if "differ" in w]
    assert "Pareto front: the best" in paths.markdown.read_text(encoding="utf-8")


def test_tables_show_n_and_lambda_to_a_thousandth(tmp_path):
    paths = build_reports([write_sampled_run(tmp_path, "a")])
    html = paths.html.read_text(encoding="utf-8")
    assert "<th>N</th>" in html and ">0.254</td>" in html and ">0.3</td>" not in html
    row = next(line for line in paths.markdown.read_text().splitlines() if "pdrop\\_lam0.254" in line)
    assert "| 0.254 | 8-16-24 | 48 |" in row


def test_legend_names_are_readable_and_tied_scores_keep_the_axis_at_zero(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a", vanilla_accuracy=0.0)
    frame = results_frame([load_run(run_dir)])
    frame["primary"] = 0.0
    frame[["ci_low", "ci_high"]] = 0.0
    reference = reference_frame([load_run(run_dir)], frame)
    ax = task_figure(frame, reference, "paper", "shapes").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "random drop at 8-16-24, keep 50%/25%/12.5%" in labels and "vanilla (all image tokens)" in labels
    assert "PDrop at layers 8-16-24 (λ varies)" in labels
    assert not any("_" in label for label in labels)
    assert ax.get_ylim()[0] >= 0 and ax.get_ylim()[1] > 0


def test_markers_at_equal_cost_and_score_are_drawn_side_by_side(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a")
    frame = results_frame([load_run(run_dir)])
    vanilla = frame["method"] == "vanilla"
    frame.loc[frame["method"] == "random", ["tflops_paper", "primary"]] = frame.loc[
        vanilla, ["tflops_paper", "primary"]
    ].to_numpy()
    ax = task_figure(frame, pd.DataFrame(columns=reference_frame([], frame).columns), "paper", "shapes").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    star, cross = lines["vanilla (all image tokens)"], lines["random drop at 8-16-24, keep 50%/25%/12.5%"]
    at = [line.get_transform().transform((line.get_xdata()[0], line.get_ydata()[0])) for line in (star, cross)]
    assert abs(at[0][0] - at[1][0]) >= 5, "the later marker is moved aside, not drawn on top"


def test_kept_maps_show_question_gold_and_every_schedules_answer(tmp_path):
    run_dir = write_sampled_run(tmp_path, "a")
    paths = build_reports([run_dir])
    html = paths.html.read_text(encoding="utf-8")
    first = [json.loads(p.read_text().splitlines()[0]) for p in sorted((run_dir / "predictions/shapes").iterdir())]
    caption = next(c for c in html.split("<figcaption>")[1:] if "sample 0 (run a)" in c)
    assert (
        "Question: &#x27;What colour is shape 0?&#x27;" in caption
        and f"Gold: &#x27;{first[0]['gold']}&#x27;" in caption
    )
    for name in (
        "vanilla (all image tokens)",
        "PDrop λ0.5 at 8-16-24",
        "PDrop λ0.254 at 8-16-24",
        "random drop at 8-16-24, keep 50%/25%/12.5%",
    ):
        assert name in caption
    assert all(f"&#x27;{record['prediction']}&#x27;" in caption for record in first)
    assert sorted(p.name for p in paths.figures if "_kept_" in p.name) == ["shapes_kept_a_0.png", "shapes_kept_a_1.png"]


def test_a_long_run_name_wraps_in_the_header(tmp_path):
    name = "llava-1.5-7b_gqa-textvqa-pope-mmbench-mmstar_" * 4
    paths = build_reports([write_sampled_run(tmp_path, name.rstrip("_"))])
    html = paths.html.read_text(encoding="utf-8")
    style = html.split("<style>")[1].split("</style>")[0]
    assert "h1, h2, h3, p, figcaption { overflow-wrap: anywhere; }" in style
    assert f"<h1>PyramidDrop sweep: {name.rstrip('_')}</h1>" in html
