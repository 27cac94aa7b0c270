"""run_eval end to end on the tiny model and the synthetic `shapes` task: outputs, sweeps, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdrop_eval import cli, runner
from pdrop_eval.metrics import get_metric
from pdrop_eval.plan import lambda_for_budget
from tests.fixtures_data import (
    POPE_FULL_IDS,
    b64_image,
    write_llava_gqa,
    write_mmstar_authors_tsv,
    write_pope_full_parquet,
    write_tsv,
)

pytestmark = pytest.mark.engine

BASE = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "4", "--batch-size", "2", "--max-new-tokens", "3"]


def _run(tmp_path: Path, *extra: str, run_name: str = "r") -> int:
    return cli.main([*BASE, "--output-dir", str(tmp_path), "--run-name", run_name, "--no-report", *extra])


def _error(stderr: str) -> str:
    """The one error line; progress bars may precede it on stderr, a traceback never may."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def count_encoded(monkeypatch):
    """How many images went through the vision tower."""
    counter = {"images": 0}
    original = runner.encode_images

    def counting(model, pixel_values, image_sizes=None):
        counter["images"] += pixel_values.shape[0]
        return original(model, pixel_values, image_sizes)

    monkeypatch.setattr(runner, "encode_images", counting)
    return counter


def test_sweep_writes_scored_predictions_and_metrics(tmp_path, count_encoded, capsys):
    assert _run(tmp_path, "--lambda", "0.3,0.5", "--baselines", "vanilla,fastv") == 0
    assert count_encoded["images"] == 4, "the vision tower must run once per image for the whole sweep"
    run_dir = tmp_path / "r"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labels = [r["schedule"]["label"] for r in metrics["results"]]
    assert labels == ["vanilla", "fastv_k2_r0.5", "pdrop_lam0.3_8-16-24", "pdrop_lam0.5_8-16-24"]
    assert metrics["run"]["model"]["image_grid"] == [24, 24]
    assert metrics["run"]["command"][:2] == ["--model", "tiny-llava"]
    assert metrics["tasks"]["shapes"]["primary_metric"] == "accuracy"
    for result in metrics["results"]:
        records = _lines(run_dir / result["predictions"])
        assert [r["id"] for r in records] == [0, 1, 2, 3]
        assert result["n"] == 4
        metric = get_metric("exact_match")
        expected = [metric.score(r["prediction"], r["gold"], r["meta"]) for r in records]
        assert [r["score"] for r in records] == expected
        assert result["primary"] == pytest.approx(100 * sum(expected) / 4)
        assert result["tflops_paper"] == pytest.approx(sum(r["flops_paper"] for r in records) / 4 / 1e12)
        assert all(0 < r["generated_tokens"] <= 3 for r in records)
    by_label = {r["schedule"]["label"]: r for r in metrics["results"]}
    assert by_label["pdrop_lam0.5_8-16-24"]["retained_tokens"] == 270
    assert by_label["vanilla"]["tflops_exact"] > by_label["pdrop_lam0.5_8-16-24"]["tflops_exact"]
    kept = _lines(run_dir / by_label["pdrop_lam0.3_8-16-24"]["predictions"])[0]["kept_image_indices"]
    assert [len(stage) for stage in kept] == [int(576 * 0.3), int(576 * 0.09), int(576 * 0.3**3)]
    saved = sorted(p.name for p in (run_dir / "samples" / "shapes").iterdir())
    assert saved == sorted([f"{i}.{kind}" for i in range(4) for kind in ("png", "json")]), "images and their layouts"
    out = capsys.readouterr().out
    assert "pdrop_lam0.5_8-16-24" in out and "TFLOPs paper" in out


def test_resume_skips_finished_samples_and_keeps_them(tmp_path, count_encoded):
    assert _run(tmp_path, "--lambda", "0.5", "--limit", "2") == 0
    path = tmp_path / "r" / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl"
    first = path.read_text().splitlines()
    count_encoded["images"] = 0
    assert _run(tmp_path, "--lambda", "0.5") == 0
    assert count_encoded["images"] == 2, "only the two new samples are encoded"
    lines = path.read_text().splitlines()
    assert lines[:2] == first and len(lines) == 4
    count_encoded["images"] = 0
    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla") == 0
    assert count_encoded["images"] == 4, "a schedule added to a finished run computes only that schedule"
    assert path.read_text().splitlines() == lines


def test_resumed_run_with_other_settings_is_refused(tmp_path, capsys):
    assert _run(tmp_path, "--lambda", "0.5", "--limit", "2") == 0
    capsys.readouterr()
    assert _run(tmp_path, "--lambda", "0.5", "--max-new-tokens", "5") == 2
    err = _error(capsys.readouterr().err)
    assert "max_new_tokens=3" in err and "--overwrite" in err
    assert _run(tmp_path, "--lambda", "0.5", "--overwrite", "--max-new-tokens", "5") == 0


def test_lambda_for_budget():
    assert lambda_for_budget(270, (8, 16, 24), 32, 576) == 0.5
    assert lambda_for_budget(576, (8, 16, 24), 32, 576) == 1.0


def test_budget_picks_and_prints_lambda(tmp_path, capsys):
    assert _run(tmp_path, "--budget", "270", "--limit", "2") == 0
    assert "budget 270 tokens: PDrop λ0.5 at 8-16-24" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [r["schedule"]["label"] for r in metrics["results"]] == ["pdrop_lam0.5_8-16-24"]


def test_unreachable_budget_is_one_line_with_status_2(tmp_path, capsys):
    assert _run(tmp_path, "--budget", "192,128,64", "--limit", "1") == 2
    err = _error(capsys.readouterr().err)
    assert "--budget 128 cannot be reached with --layers 8,16,24" in err and "floor is" in err
    assert not (tmp_path / "r" / "predictions").exists()


def _write_docvqa(lmu: Path, count: int) -> None:
    """A VLMEvalKit DocVQA_VAL.tsv of `count` rows (odd rows: tests/test_sample_failures.py)."""
    rows = [[index, b64_image("RGB", "PNG", index), f"Question {index}?", "['a']"] for index in range(count)]
    write_tsv(lmu / "DocVQA_VAL.tsv", ["index", "image", "question", "answer"], rows)


def _docvqa_args(tmp_path: Path, run_name: str, *extra: str) -> list[str]:
    common = ["--model", "tiny-llava", "--tasks", "docvqa", "--lambda", "0.5", "--max-new-tokens", "2", "--no-report"]
    return [*common, "--output-dir", str(tmp_path), "--run-name", run_name, *extra]


def _fail_if_model_loads(*args, **kwargs):
    raise AssertionError("the model must not be loaded before input is validated")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tasks", "gq", "--lambda", "0.5"], "gqa"),
        (["--tasks", "gqa", "--lambda", "0.5", "--data-root", "/nonexistent"], "gqa/llava_gqa_testdev_balanced.jsonl"),
        (["--tasks", "shapes", "--lambda", "1.5"], "outside (0, 1]"),
        (["--tasks", "shapes", "--lambda", "0"], "outside (0, 1]"),
        (["--tasks", "shapes", "--lambda", "abc"], "'abc' is not a number"),
        (["--tasks", "shapes", "--lambda", "0.5", "--layers", "8,x,24"], "'x' is not a number"),
        (["--tasks", "shapes", "--lambda", "0.5", "--layers", "16,8,24"], "strictly increasing"),
        (["--tasks", "shapes", "--budget", "128", "--lambda", "0.5"], "not both"),
        (["--tasks", "shapes", "--baselines", "vanila"], "--baselines: unknown pruning method 'vanila': did you mean vanilla?"),
        (["--tasks", "shapes", "--lambda", "0.5", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--tasks", "shapes", "--lambda", "0.5", "--data-workers", "-1"], "--data-workers must be 0 or more"),
        (["--tasks", "shapes", "--lambda", "0.5", "--run-name", "a/b"], "--run-name"),
        (["--lambda", "0.5"], "--tasks is required"),
        (["--tasks", ",", "--lambda", "0.5"], "--tasks ',' names nothing"),
        (["--tasks", "shapes", "--lambda", ""], "--lambda: no values given"),
        (["--tasks", "shapes", "--lambda", "0.5", "--baselines", ""], "--baselines '' names nothing"),
        (["--tasks", "shapes", "--budget", ""], "--budget: no values given"),
        (["--tasks", "shapes", "--lambda", "0.5", "--layers", ""], "--layers: no values given"),
        (["--tasks", "shapes", "--ratios", " ; "], "--ratios: no values given"),
        (["--tasks", "shapes", "--lambda", "0.5", "--run-name", ""], "--run-name ''"),
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    monkeypatch.delenv("LMUData", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert cli.main([*args, "--output-dir", str(tmp_path), "--no-report"]) == 2
    assert expected in _error(capsys.readouterr().err)


def test_missing_model_and_unwritable_output_and_deep_layer(tmp_path, capsys):
    common = ["--tasks", "shapes", "--lambda", "0.5", "--limit", "1", "--no-report"]
    assert cli.main([*common, "--model", str(tmp_path / "no-model"), "--output-dir", str(tmp_path)]) == 2
    assert "no-model" in _error(capsys.readouterr().err)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main([*common, "--model", "tiny-llava", "--output-dir", str(blocker / "sub")]) == 2
    assert "cannot write to the output directory" in _error(capsys.readouterr().err)
    deep = ["--model", "tiny-llava", "--layers", "8,16,40", "--output-dir", str(tmp_path)]
    assert cli.main([*common, *deep]) == 2
    assert "beyond the model's depth: it has 32 decoder layers" in _error(capsys.readouterr().err)


def test_run_ends_with_report_which_report_command_rebuilds(tmp_path, capsys):
    args = [*BASE, "--limit", "2", "--lambda", "0.5", "--baselines", "vanilla", "--output-dir", str(tmp_path)]
    assert cli.main([*args, "--run-name", "a"]) == 0
    run_dir = tmp_path / "a"
    outputs = [run_dir / name for name in ("results.xlsx", "report.md", "report.html")]
    assert all(path.stat().st_size > 0 for path in outputs)
    for path in outputs:
        path.unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    assert all(path.stat().st_size > 0 for path in outputs)
    assert cli.main([*args, "--run-name", "b"]) == 0
    assert cli.main(["report", str(run_dir), str(tmp_path / "b"), "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "results.xlsx").exists()
    capsys.readouterr()
    assert cli.main(["report", str(run_dir), str(tmp_path / "b")]) == 2
    assert "--out" in _error(capsys.readouterr().err)


def test_vlmeval_scorer_scores_through_its_dataset_classes(tmp_path, monkeypatch):
    """With `vlmeval` importable (a stand-in here: VLMEvalKit is not on PyPI), its dataset class scores the
    prediction xlsx the run writes, and its numbers land beside the native ones."""
    import sys
    import types

    import pandas as pd

    seen = {}

    class FakeDocVQA:
        TYPE = "VQA"

        def evaluate(self, eval_file, **judge_kwargs):
            frame = pd.read_excel(eval_file)
            seen["columns"], seen["rows"] = list(frame.columns), len(frame)
            return pd.DataFrame([{"Overall": 42.0, "split": "val"}])

    package, datasets = types.ModuleType("vlmeval"), types.ModuleType("vlmeval.dataset")
    datasets.build_dataset = lambda name: FakeDocVQA() if name == "DocVQA_VAL" else None
    monkeypatch.setitem(sys.modules, "vlmeval", package)
    monkeypatch.setitem(sys.modules, "vlmeval.dataset", datasets)
    _write_docvqa(tmp_path / "lmu", 3)
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    args = [
        "--model",
        "tiny-llava",
        "--tasks",
        "docvqa,shapes",
        "--limit",
        "3",
        "--lambda",
        "0.5",
        "--max-new-tokens",
        "2",
        "--scorer",
        "vlmeval",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "v",
        "--no-report",
    ]
    assert cli.main(args) == 0
    assert seen == {"columns": ["index", "question", "answer", "prediction"], "rows": 3}
    results = json.loads((tmp_path / "v" / "metrics.json").read_text())["results"]
    docvqa, shapes = results
    assert docvqa["metrics"]["vlmeval/Overall"] == 42.0 and "anls" in docvqa["metrics"]
    assert not any(key.startswith("vlmeval/") for key in shapes["metrics"])
    assert (tmp_path / "v" / "vlmeval" / "docvqa" / "pdrop_lam0.5_8-16-24" / "pdrop_DocVQA_VAL.xlsx").exists()


def test_resume_refuses_predictions_from_other_data(tmp_path, monkeypatch, capsys):
    for folder in ("first", "second"):
        _write_docvqa(tmp_path / folder, 2)
    args = _docvqa_args(tmp_path, "d")
    monkeypatch.setenv("LMUData", str(tmp_path / "first"))
    assert cli.main(args) == 0
    monkeypatch.setenv("LMUData", str(tmp_path / "second"))
    capsys.readouterr()
    assert cli.main(args) == 2
    err = _error(capsys.readouterr().err)
    assert "ran task docvqa with source=" in err and "first" in err and "second" in err


def test_malformed_flags_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--tasks", "shapes", "--limit", "many"])
    assert exit_info.value.code == 2
    assert "--limit" in _error(capsys.readouterr().err)


def test_vlmeval_scorer_refuses_data_that_is_not_its_tsv_before_loading(tmp_path, monkeypatch, capsys):
    """LLaVA's MMBench TSV is a TSV too, but VLMEvalKit would rebuild MMBench_DEV_EN from $LMUData (and try to
    download it there): refused up front, not after hours of generation."""
    import sys
    import types

    from tests.fixtures_data import write_mmbench_tsv

    monkeypatch.setitem(sys.modules, "vlmeval", types.ModuleType("vlmeval"))
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    monkeypatch.setenv("LMUData", str(tmp_path / "empty-lmu"))
    write_mmbench_tsv(tmp_path / "data" / "mmbench" / "mmbench_dev_20230712.tsv")
    args = [
        "--tasks",
        "mmbench",
        "--lambda",
        "0.5",
        "--scorer",
        "vlmeval",
        "--data-root",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path),
        "--no-report",
    ]
    assert cli.main(args) == 2
    assert "MMBench_DEV_EN.tsv in $LMUData" in _error(capsys.readouterr().err)


def test_overwrite_with_a_mistyped_task_deletes_nothing(tmp_path, capsys):
    assert _run(tmp_path, "--lambda", "0.5", "--limit", "2") == 0
    predictions = tmp_path / "r" / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl"
    before = predictions.read_text()
    args = [
        "--model",
        "tiny-llava",
        "--tasks",
        "shapez",
        "--lambda",
        "0.5",
        "--overwrite",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "r",
        "--no-report",
    ]
    assert cli.main(args) == 2
    assert "shapes" in _error(capsys.readouterr().err)
    assert predictions.read_text() == before


def test_stored_predictions_are_rescored_when_the_run_is_finished_again(tmp_path):
    """A scorer fix (here: a tampered stored score) applies to existing predictions at the next finalize."""
    assert _run(tmp_path, "--lambda", "0.5", "--limit", "2") == 0
    path = tmp_path / "r" / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl"
    records = _lines(path)
    truth = [r["score"] for r in records]
    for record in records:
        record["score"] = record["scores"]["exact_match"] = 1.0 - record["score"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert _run(tmp_path, "--lambda", "0.5", "--limit", "2") == 0
    assert [r["score"] for r in _lines(path)] == truth
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["results"][0]["primary"] == pytest.approx(100 * sum(truth) / 2)


def test_device_that_does_not_exist_is_one_line(tmp_path, capsys):
    for device, expected in (("tpu:9", "not a device"), ("cuda:99", "GPU this machine does not have")):
        assert _run(tmp_path, "--lambda", "0.5", "--device", device) == 2
        assert expected in _error(capsys.readouterr().err)


def _run_fixture_task(tmp_path: Path, monkeypatch, task: str) -> Path:
    """One tiny run of `task` on the fixture data under tmp_path/data; nothing outside tmp_path is looked at."""
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["--model", "tiny-llava", "--tasks", task, "--lambda", "0.5", "--max-new-tokens", "2", "--batch-size", "2"]
    args += ["--data-root", str(tmp_path / "data"), "--output-dir", str(tmp_path), "--run-name", task, "--no-report"]
    assert cli.main(args) == 0
    return tmp_path / task / "predictions" / task / "pdrop_lam0.5_8-16-24.jsonl"


def _rescore_with(tmp_path: Path, monkeypatch, task: str, path: Path, predictions: dict) -> dict:
    """Replace the stored predictions by known answers and finish the run again: what metrics.json then holds is
    the scorer's verdict on those answers, through the whole CLI."""
    records = _lines(path)
    for record in records:
        record["prediction"] = predictions[record["id"]]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    _run_fixture_task(tmp_path, monkeypatch, task)
    (result,) = json.loads((tmp_path / task / "metrics.json").read_text())["results"]
    return result


def test_scienceqa_img_end_to_end_from_llavas_folder(tmp_path, monkeypatch):
    from tests.fixtures_data import write_llava_scienceqa

    expected = write_llava_scienceqa(tmp_path / "data")
    path = _run_fixture_task(tmp_path, monkeypatch, "scienceqa_img")
    records = _lines(path)
    assert [r["id"] for r in records] == expected["ids"]
    assert [r["prompt"] for r in records] == expected["prompts"]
    assert [r["gold"] for r in records] == expected["gold"]
    metrics = json.loads((tmp_path / "scienceqa_img" / "metrics.json").read_text())
    assert [row["score"] for row in metrics["tasks"]["scienceqa_img"]["reference"]["rows"]] == [66.8, 68.5, 69.2]
    # gold B, B, E: "B" and one "The answer is B." are right; "E." (two characters) is unparsed, so wrong
    result = _rescore_with(
        tmp_path, monkeypatch, "scienceqa_img", path, {"5": "B", "11": "The answer is B.", "42": "E."}
    )
    assert result["primary_metric"] == "accuracy"
    assert result["primary"] == pytest.approx(200 / 3)
    assert result["metrics"]["n_unparsed"] == 1 and result["n"] == 3


def test_mmbench_cn_end_to_end_is_scored_circularly(tmp_path, monkeypatch):
    from tests.fixtures_data import write_mmbench_cn_tsv

    expected = write_mmbench_cn_tsv(tmp_path / "data" / "mmbench_cn" / "mmbench_dev_cn_20231003.tsv")
    path = _run_fixture_task(tmp_path, monkeypatch, "mmbench_cn")
    records = _lines(path)
    assert [r["id"] for r in records] == expected["ids"]
    assert [r["prompt"] for r in records] == expected["prompts"]
    # question 30: both rotations right ("狗" is option B's text); question 31: "B。" is unreadable, so wrong
    result = _rescore_with(tmp_path, monkeypatch, "mmbench_cn", path, {30: "狗", 1000030: "A", 31: "B。"})
    assert result["primary_metric"] == "circular_accuracy"
    assert result["primary"] == 50.0
    assert result["metrics"]["vanilla_accuracy"] == pytest.approx(200 / 3)
    assert result["metrics"]["n_questions"] == 2
def test_gqa_mmstar_and_pope_full_run_from_their_published_files(tmp_path, monkeypatch, capsys):
    """The headline command on the real schemas: GQA from LLaVA's folder, MMStar from its published TSV
    (`l2_category`), POPE from lmms-lab/POPE's `Full` parquet; metrics.json hashes every file read, the HF shards
    included, and no warning is printed because nothing the cards read is missing."""
    data = tmp_path / "data"
    write_llava_gqa(data)
    write_mmstar_authors_tsv(tmp_path / "lmu" / "MMStar.tsv")
    write_pope_full_parquet(data / "hf/lmms-lab/POPE")
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = [
        "--model",
        "tiny-llava",
        "--tasks",
        "gqa,mmstar,pope",
        "--lambda",
        "0.5",
        "--max-new-tokens",
        "2",
        "--data-root",
        str(data),
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "h",
        "--no-report",
    ]
    assert cli.main(args) == 0
    assert "warning:" not in capsys.readouterr().err
    metrics = json.loads((tmp_path / "h" / "metrics.json").read_text())
    by_task = {r["task"]: r for r in metrics["results"]}
    assert set(by_task) == {"gqa", "mmstar", "pope"}
    assert {"accuracy/l2-category=image scene and topic", "accuracy/category=math"} <= set(by_task["mmstar"]["metrics"])
    assert {"f1/adversarial", "f1/popular", "f1/random", "f1_mean"} <= set(by_task["pope"]["metrics"])
    pope_files = metrics["run"]["data_files"]["pope"]
    assert sorted(key.split("/")[-1] for key in pope_files) == [
        f"{split}-00000-of-00001.parquet" for split in ("adversarial", "popular", "random")
    ]
    assert all(len(digest) == 64 for digest in pope_files.values())
    records = _lines(tmp_path / "h" / by_task["pope"]["predictions"])
    assert [r["id"] for r in records] == POPE_FULL_IDS
def _rows_by_key(run_dir: Path) -> dict[tuple[str, str], dict]:
    results = json.loads((run_dir / "metrics.json").read_text())["results"]
    return {(r["task"], r["schedule"]["label"]): r for r in results}


def test_every_command_on_a_run_keeps_what_the_earlier_ones_computed(tmp_path, monkeypatch):
    """Another λ, then another task, on one run: metrics.json, results.xlsx and the report describe all of it."""
    import openpyxl

    _write_docvqa(tmp_path / "lmu", 2)
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    common = ["--model", "tiny-llava", "--limit", "2", "--max-new-tokens", "2", "--output-dir", str(tmp_path)]
    common += ["--run-name", "many"]
    run_dir = tmp_path / "many"
    assert cli.main([*common, "--tasks", "shapes", "--lambda", "0.5"]) == 0
    first = _rows_by_key(run_dir)[("shapes", "pdrop_lam0.5_8-16-24")]
    assert cli.main([*common, "--tasks", "shapes", "--lambda", "0.3"]) == 0
    rows = _rows_by_key(run_dir)
    assert list(rows) == [("shapes", "pdrop_lam0.5_8-16-24"), ("shapes", "pdrop_lam0.3_8-16-24")]
    assert rows["shapes", "pdrop_lam0.5_8-16-24"] == first
    assert cli.main([*common, "--tasks", "docvqa", "--lambda", "0.5"]) == 0
    rows = _rows_by_key(run_dir)
    expected = [
        ("shapes", "pdrop_lam0.5_8-16-24"),
        ("shapes", "pdrop_lam0.3_8-16-24"),
        ("docvqa", "pdrop_lam0.5_8-16-24"),
    ]
    assert list(rows) == expected
    assert rows["shapes", "pdrop_lam0.5_8-16-24"] == first and all(row["n"] == 2 for row in rows.values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["shapes", "docvqa"] and set(metrics["run"]["data_files"]) == {"shapes", "docvqa"}
    assert [command[command.index("--tasks") + 1 :][:3] for command in metrics["run"]["commands"]] == [
        ["shapes", "--lambda", "0.5"],
        ["shapes", "--lambda", "0.3"],
        ["docvqa", "--lambda", "0.5"],
    ]
    summary = openpyxl.load_workbook(run_dir / "results.xlsx")["Summary"]
    header = [cell.value for cell in summary[1]]
    cells = [dict(zip(header, row)) for row in summary.iter_rows(min_row=2, values_only=True)]
    assert [(row["Task"], row["Schedule"]) for row in cells] == expected
    report = (run_dir / "report.md").read_text()
    assert all(label.replace("_", "\\_") in report for label in ("pdrop_lam0.5_8-16-24", "pdrop_lam0.3_8-16-24"))
    assert "## docvqa" in report and "## shapes" in report


def test_a_command_interrupted_midway_is_described_by_the_next_one(tmp_path, monkeypatch):
    """The predictions an interrupted command kept are in the next command's outputs, though it runs another
    schedule: the schedule was recorded in run.json before its first prediction."""
    assert _run(tmp_path, "--lambda", "0.5") == 0
    calls = {"n": 0}
    original = runner.generate

    def interrupted_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "generate", interrupted_on_second_batch)
    assert _run(tmp_path, "--lambda", "0.3") == 130
    monkeypatch.setattr(runner, "generate", original)
    assert _run(tmp_path, "--baselines", "vanilla") == 0
    rows = _rows_by_key(tmp_path / "r")
    counts = {label: row["n"] for (_, label), row in rows.items()}
    assert counts == {"pdrop_lam0.5_8-16-24": 4, "pdrop_lam0.3_8-16-24": 2, "vanilla": 4}
    assert not list((tmp_path / "r" / "predictions" / "shapes").glob("*.rank*.jsonl")), "shards are merged"
def test_complete_run_is_rebuilt_without_loading_the_model(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla", "--limit", "2") == 0
    before = json.loads((tmp_path / "r" / "metrics.json").read_text())
    loads = []
    monkeypatch.setattr(runner, "load_vlm", lambda *a, **k: loads.append(a) or _fail_if_model_loads())
    capsys.readouterr()
    assert _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla", "--limit", "2") == 0
    assert loads == []
    assert "is already complete" in capsys.readouterr().err
    after = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [r["primary"] for r in after["results"]] == [r["primary"] for r in before["results"]]
    assert after["run"]["model"] == before["run"]["model"] and after["tasks"]["shapes"]["size"] == 300
    with pytest.raises(AssertionError, match="must not be loaded"):
        _run(tmp_path, "--lambda", "0.5", "--baselines", "vanilla", "--limit", "3")
    assert len(loads) == 1, "a run with samples left to compute loads the model"


def test_progress_in_a_log_file_is_plain_lines(tmp_path, monkeypatch, capsys):
    from transformers.utils import logging as hf_logging

    from pdrop_eval import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    try:
        assert _run(tmp_path, "--lambda", "0.5", "--limit", "4") == 0
        assert not hf_logging.is_progress_bar_enabled(), "model-loading bars are off when stderr is a log"
    finally:
        hf_logging.enable_progress_bar()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("shapes: ")]
    assert len(lines) >= 2 and lines[-1].startswith("shapes: 4/4 samples through all 1 schedules")


def test_a_missing_package_is_one_error_line():
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['torch'] = None; "
        "sys.argv = ['run_eval.py', '--model', 'tiny-llava', '--tasks', 'shapes', '--lambda', '0.5']; "
        "exec(open('run_eval.py').read())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [_error(done.stderr)]
    assert "'torch' is not installed" in done.stderr and "source .venv/bin/activate" in done.stderr
