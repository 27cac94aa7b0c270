"""Inputs that used to end in a traceback, escape their folder or be resolved silently: each is one `error:` line
(exit 2; 130 for Ctrl-C) or works, and nothing already computed is lost."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pdrop_eval import cli, runner, store
from pdrop_eval.data.hf import HFSplit, HFTable, load_hf_vqa
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.tiny import tiny_model_dir
from tests.fixtures_data import write_image, write_jsonl, write_llava_gqa, write_parquet
from tests.run_fixtures import SAMPLE_IDS, write_run_dir
from tests.test_runner import _error, _lines, count_encoded  # noqa: F401  (count_encoded is a fixture)

SENTINEL = '{"kept": "metrics of an earlier run"}\n'


def _fail_if_model_loads(*args, **kwargs):
    raise AssertionError("the model must not be loaded before input is validated")


def _card(folder: Path, text: str | bytes, name: str = "card.yaml") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)


SHAPES_CARD = """name: {name}
description: synthetic
size: 4
prompt_suffix: ""
max_new_tokens: 2
metrics: {metrics}
sources:
  - format: synthetic_shapes
    count: {count}
"""


def _shapes_card(tmp: Path, name: str = "mine", metrics: str = "[exact_match]", count: int = 4) -> list[str]:
    _card(tmp / "cards", SHAPES_CARD.format(name=name, metrics=metrics, count=count))
    return ["--tasks-dir", str(tmp / "cards"), "--tasks", "mine"]


def _gqa(tmp: Path, edit: Callable[[list[dict]], list[dict]] | None = None, raw: bytes | None = None) -> list[str]:
    """LLaVA's GQA folder under tmp/data, its question rows passed through `edit` or replaced by `raw` bytes."""
    write_llava_gqa(tmp / "data")
    questions = tmp / "data" / "gqa" / "llava_gqa_testdev_balanced.jsonl"
    if edit is not None:
        write_jsonl(questions, edit(_lines(questions)))
    if raw is not None:
        questions.write_bytes(raw)
    return ["--tasks", "gqa", "--data-root", str(tmp / "data")]


def _image(row_image: str) -> Callable[[list[dict]], list[dict]]:
    return lambda rows: [{**rows[0], "image": row_image}, *rows[1:]]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "--layers 1e400": (lambda tmp: ["--tasks", "shapes", "--layers", "1e400"], "'1e400' is not a finite number"),
    "--seed 2**64": (lambda tmp: ["--tasks", "shapes", "--seed", str(2**64)], "--seed must be a whole number"),
    "card not UTF-8": (
        lambda tmp: (
            _card(tmp / "cards", b"name: mine\ndescription: caf\xe9\n"),
            ["--tasks-dir", str(tmp / "cards"), "--tasks", "mine"],
        )[1],
        "save it as UTF-8",
    ),
    "card metrics: []": (lambda tmp: _shapes_card(tmp, metrics="[]"), "`metrics` must name at least one metric"),
    "card count: -5": (lambda tmp: _shapes_card(tmp, count=-5), "task mine: its data in generated on the fly holds no"),
    "card name absolute": (lambda tmp: _shapes_card(tmp, name="/tmp/escaped"), "`name` '/tmp/escaped' must be"),
    "card name ..": (lambda tmp: _shapes_card(tmp, name=".."), "`name` '..' must be"),
    "empty jsonl": (lambda tmp: _gqa(tmp, raw=b""), "task gqa: its data in"),
    "jsonl not UTF-8": (lambda tmp: _gqa(tmp, raw=b'{"question_id": "1", "text": "caf\xe9"}\n'), "line 1 is not UTF-8"),
    "image path ../../outside.png": (
        lambda tmp: _gqa(tmp, _image("../../outside.png")),
        "question '20968475': image path '../../outside.png' points outside the images folder",
    ),
    "image path absolute": (
        lambda tmp: _gqa(tmp, _image(str(tmp / "outside.png"))),
        "question '20968475': image path",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_the_model_loads_and_keeps_earlier_results(case, tmp_path, monkeypatch, capsys):
    setup, expected = CASES[case]
    monkeypatch.setattr(runner, "load_vlm", _fail_if_model_loads)
    (tmp_path / "outside.png").write_bytes(b"a file a data row must not reach")
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(SENTINEL)
    args = [*setup(tmp_path), "--lambda", "0.5", "--output-dir", str(tmp_path / "out"), "--run-name", "r"]
    assert cli.main([*args, "--no-report"]) == 2
    assert expected in _error(capsys.readouterr().err)
    assert (run_dir / "metrics.json").read_text() == SENTINEL
    assert not (tmp_path / "escaped").exists()


@pytest.mark.engine
def test_truncated_weights_are_one_line(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("tiny-llava"), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = ["--model", str(model), "--tasks", "shapes", "--lambda", "0.5", "--limit", "1", "--no-report"]
    assert cli.main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = _error(capsys.readouterr().err)
    assert f"could not load the model in {model}" in err and "complete HF model" in err


# ---- report -----------------------------------------------------------------------------------------------------


def test_report_out_pointing_at_a_file_is_one_line(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path, tasks=("shapes",))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["report", str(run_dir), "--out", str(blocker)]) == 2
    assert "is a file" in _error(capsys.readouterr().err)
    assert cli.main(["report", str(run_dir), "--out", str(blocker / "sub")]) == 2
    assert str(blocker / "sub") in _error(capsys.readouterr().err)
    assert blocker.read_text() == "x"


def test_report_with_a_corrupt_sample_png_still_works(tmp_path):
    run_dir = write_run_dir(tmp_path, tasks=("shapes",))
    for png in (run_dir / "samples" / "shapes").glob("*.png"):
        png.write_bytes(b"\x89PNG\r\n\x1a\n then garbage")
    assert cli.main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert f"sample {SAMPLE_IDS[0]}: no map, its image" in report and "cannot be read" in report


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b'{"id": 1, "prediction": "caf\xe9"}\n', "not valid JSON text"), (b"[1, 2]\n", "not a prediction record")],
)
def test_report_on_damaged_predictions_is_one_line(line, expected, tmp_path, capsys):
    run_dir = write_run_dir(tmp_path, tasks=("shapes",))
    predictions = run_dir / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl"
    predictions.write_bytes(line + predictions.read_bytes())
    assert cli.main(["report", str(run_dir)]) == 2
    err = _error(capsys.readouterr().err)
    assert f"{predictions} line 1" in err and expected in err


def test_ctrl_c_during_the_report_is_one_line_and_keeps_metrics(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pdrop_eval.report.build_reports", interrupted)
    args = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "2", "--max-new-tokens", "2", "--lambda", "0.5"]
    assert cli.main([*args, "--output-dir", str(tmp_path), "--run-name", "r"]) == 130
    assert "interrupted (Ctrl-C)" in _error(capsys.readouterr().err)
    assert len(json.loads((tmp_path / "r" / "metrics.json").read_text())["results"]) == 1


# ---- stored predictions -----------------------------------------------------------------------------------------

RUN = ["--model", "tiny-llava", "--tasks", "shapes", "--limit", "4", "--batch-size", "2", "--max-new-tokens", "2"]
MERGED = Path("r") / "predictions" / "shapes" / "pdrop_lam0.5_8-16-24.jsonl"


def _run(out: Path) -> int:
    return cli.main([*RUN, "--lambda", "0.5", "--output-dir", str(out), "--run-name", "r", "--no-report"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-sample run, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("finished")
    assert _run(out) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "out")
    return tmp_path / "out"


def _without(key: str) -> Callable[[dict], bytes]:
    return lambda record: json.dumps({k: v for k, v in record.items() if k != key}).encode() + b"\n"


DAMAGE: dict[str, tuple[Callable[[dict], bytes], str]] = {
    "non-UTF-8 bytes": (lambda record: b'{"id": 9, "prediction": "caf\xe9"}\n', "line 5 is not UTF-8 text"),
    "no id": (_without("id"), "line 5 is not a prediction record"),
    "JSON array": (lambda record: b'["a", "b"]\n', "line 5 is not a prediction record"),
    "no gold": (_without("gold"), "lacks ['gold']"),
    "same id, other prediction": (
        lambda record: json.dumps({**record, "prediction": record["prediction"] + " other"}).encode() + b"\n",
        "has two different predictions",
    ),
}


@pytest.mark.engine
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_predictions_are_one_line_and_stay_on_disk(damage, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    line, expected = DAMAGE[damage]
    path = out / MERGED
    first = _lines(path)[0]
    if damage == "no gold":  # the damaged record replaces sample 0's own, as a hand edit would
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in _lines(path)[1:]) + line(first))
    else:
        path.write_bytes(path.read_bytes() + line(first))
    damaged = path.read_bytes()
    assert _run(out) == 2
    err = _error(capsys.readouterr().err)
    assert expected in err and str(path.name) in err
    assert path.read_bytes() == damaged


@pytest.mark.engine
@pytest.mark.parametrize(("content", "expected"), [(b"\xff\xfe", "is not valid JSON"), (b"[]", "not a JSON object")])
def test_a_damaged_run_json_is_one_line(content, expected, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    (out / "r" / "run.json").write_bytes(content)
    assert _run(out) == 2
    assert expected in _error(capsys.readouterr().err)
    assert len(_lines(out / MERGED)) == 4


@pytest.mark.engine
def test_a_repeated_record_with_the_same_prediction_is_still_fine(finished, tmp_path, count_encoded):  # noqa: F811
    """What a crash between writing the merged file and removing the shards leaves: resolved, nothing recomputed."""
    out = _copy(finished, tmp_path)
    path = out / MERGED
    records = _lines(path)
    shard = path.with_name("pdrop_lam0.5_8-16-24.rank0.jsonl")
    shard.write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    assert _run(out) == 0
    assert count_encoded["images"] == 0
    assert [r["id"] for r in _lines(path)] == [0, 1, 2, 3] and not shard.exists()


# ---- a full disk ----------------------------------------------------------------------------------------------


def _fill_disk_from(monkeypatch, arm_after: str) -> None:
    """From the moment `arm_after` (a runner attribute) has been called once, every fsync in the store fails with
    ENOSPC, as a full disk reports it (on many filesystems the error only surfaces at fsync)."""
    state = {"armed": False}
    real_fsync = store.os.fsync

    def fsync(fd: int) -> None:
        if state["armed"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    target = getattr(runner, arm_after) if arm_after != "append" else store.ShardWriter.append

    def armed(*args, **kwargs):
        if arm_after == "append":
            result = target(*args, **kwargs)
            state["armed"] = True
            return result
        state["armed"] = True
        return target(*args, **kwargs)

    if arm_after == "append":
        monkeypatch.setattr(store.ShardWriter, "append", armed)
    else:
        monkeypatch.setattr(runner, arm_after, armed)


@pytest.mark.engine
@pytest.mark.parametrize("when", ["append", "finalize"])
def test_a_full_disk_is_one_line_and_the_rerun_loses_nothing(when, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        _fill_disk_from(patch, when)
        assert _run(tmp_path) == 2
    err = _error(capsys.readouterr().err)
    assert "No space left on device" in err and "rerun the same command" in err
    folder = tmp_path / MERGED.parent
    kept = [r["id"] for shard in folder.glob("*.rank0.jsonl") for r in _lines(shard)]
    assert kept[:2] == [0, 1], "the batch fsynced before the disk filled is on disk"
    if when == "finalize":
        assert kept == [0, 1, 2, 3] and not (tmp_path / "r" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "r").rglob("*.tmp")], "no half-written temporary file is left behind"
    assert _run(tmp_path) == 0
    assert [r["id"] for r in _lines(tmp_path / MERGED)] == [0, 1, 2, 3]


def test_hf_image_cells_named_by_path_stay_inside_their_table_folder(tmp_path):
    """A save_to_disk-style cell without bytes is read relative to the table's folder; one leaving it is refused."""
    folder = tmp_path / "hf" / "data"
    write_image(folder / "inside.png", "RGB", "PNG")

    def load(path: str):
        rows = [{"index": 7, "question": "q", "answer": "a", "image": {"bytes": None, "path": path}}]
        write_parquet(folder / "validation.parquet", rows)
        return load_hf_vqa(
            LoadRequest(
                paths={"rows": HFTable(splits=(HFSplit(name=None, parquet_files=(folder / "validation.parquet",)),))}
            )
        )

    assert load("inside.png")[0].load_image().size == (6, 4)
    for escaping in ("../../outside.png", str(tmp_path / "outside.png")):
        with pytest.raises(PdropEvalError, match="sample 7: image path .* points outside the images folder"):
            load(escaping)
