"""One odd sample is recorded as failed (scored wrong, counted, listed in the report) and the run goes on; a
dataset whose first samples mostly fail stops with one line, keeping what it wrote."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import openpyxl
import pytest
from PIL import Image

from pdrop_eval import cli
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics import ScoredRecord, get_metric
from pdrop_eval.runner import FailureWatch
from tests.fixtures_data import b64_image, write_tsv
from tests.test_runner import _error, _lines, count_encoded  # noqa: F401  (count_encoded is a fixture)

LABEL = "pdrop_lam0.5_8-16-24"


def bomb_png(side: int = 20000) -> bytes:
    """A valid PNG header claiming side × side pixels (over twice PIL's MAX_IMAGE_PIXELS): a decompression bomb
    that PIL refuses at open, written in a few bytes."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, side, side)  # IHDR data starts after signature (8), length (4), type (4)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


ODD = {
    "image tag in the question": ("question", "What is <image> here?", "literal <image>"),
    "corrupt image": ("image", base64.b64encode(b"not an image at all").decode() + "=" * 70, "cannot decode"),
    "decompression bomb": ("image", base64.b64encode(bomb_png()).decode(), "decompression bomb"),
}


def write_docvqa(lmu: Path, count: int, odd: dict[int, str]) -> None:
    """DocVQA_VAL.tsv with `count` rows; row i is made odd in the way ODD[odd[i]] says."""
    rows = [[index, b64_image("RGB", "PNG", index), f"Question {index}?", "['a']"] for index in range(count)]
    for index, kind in odd.items():
        column, value, _ = ODD[kind]
        rows[index][1 if column == "image" else 2] = value
    write_tsv(lmu / "DocVQA_VAL.tsv", ["index", "image", "question", "answer"], rows)


def docvqa_run(tmp_path: Path, *extra: str) -> int:
    args = ["--model", "tiny-llava", "--tasks", "docvqa", "--lambda", "0.5", "--max-new-tokens", "2"]
    return cli.main([*args, "--output-dir", str(tmp_path), "--run-name", "r", "--no-report", *extra])


@pytest.mark.engine
@pytest.mark.parametrize("kind", list(ODD))
def test_an_odd_sample_is_recorded_failed_scored_wrong_and_listed(kind, tmp_path, monkeypatch, capsys):
    write_docvqa(tmp_path / "lmu", 4, {2: kind})
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    assert docvqa_run(tmp_path, "--batch-size", "2") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "1 sample(s) failed" in err
    run_dir = tmp_path / "r"
    records = _lines(run_dir / "predictions" / "docvqa" / f"{LABEL}.jsonl")
    assert [r["id"] for r in records] == [0, 1, 2, 3]
    odd = records[2]
    assert ODD[kind][2] in odd["failed"] and "sample 2" in odd["failed"]
    assert odd["prediction"] == "" and odd["score"] == 0.0 and odd["scores"] == {"anls": 0.0}
    assert not any("failed" in r for r in records[:2] + records[3:])
    (result,) = json.loads((run_dir / "metrics.json").read_text())["results"]
    assert result["n"] == 4 and result["failed"] == 1
    assert result["failed_samples"] == [{"id": 2, "reason": odd["failed"]}]
    assert result["primary"] == pytest.approx(100 * sum(r["score"] for r in records) / 4)
    ran = [r for r in records if "failed" not in r]
    assert result["tflops_exact"] == pytest.approx(sum(r["flops_exact"] for r in ran) / 3 / 1e12)
    assert cli.main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "Failed samples (1)" in report and ODD[kind][2].replace("<", "\\<").replace(">", "\\>") in report
    header, row = openpyxl.load_workbook(run_dir / "results.xlsx")["Summary"].iter_rows(values_only=True)
    assert dict(zip(header, row))["Failed samples"] == 1


@pytest.mark.engine
def test_a_failed_sample_is_retried_once_its_input_is_fixed(tmp_path, monkeypatch, count_encoded):  # noqa: F811
    write_docvqa(tmp_path / "lmu", 4, {3: "corrupt image"})
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    assert docvqa_run(tmp_path, "--batch-size", "2") == 0
    assert count_encoded["images"] == 3
    path = tmp_path / "r" / "predictions" / "docvqa" / f"{LABEL}.jsonl"
    before = _lines(path)
    assert docvqa_run(tmp_path, "--batch-size", "2") == 0, "a rerun with the sample still odd finishes as before"
    assert _lines(path) == before
    write_docvqa(tmp_path / "lmu", 4, {})
    count_encoded["images"] = 0
    assert docvqa_run(tmp_path, "--batch-size", "2") == 0
    assert count_encoded["images"] == 1, "only the failed sample runs again"
    after = _lines(path)
    assert after[:3] == before[:3] and "failed" not in after[3] and after[3]["id"] == 3
    (result,) = json.loads((tmp_path / "r" / "metrics.json").read_text())["results"]
    assert result["failed"] == 0 and result["failed_samples"] == []


@pytest.mark.engine
def test_a_broken_dataset_stops_with_one_line_keeping_what_was_written(tmp_path, monkeypatch, capsys):
    write_docvqa(tmp_path / "lmu", 6, {index: "corrupt image" for index in range(6)})
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    assert docvqa_run(tmp_path, "--batch-size", "2") == 2
    err = _error(capsys.readouterr().err)
    assert "6 of its first 6 samples failed" in err and "sample 0" in err and "DocVQA_VAL.tsv" in err
    shard = tmp_path / "r" / "predictions" / "docvqa" / f"{LABEL}.rank0.jsonl"
    assert [r["id"] for r in _lines(shard)] == list(range(6)) and all(r["failed"] for r in _lines(shard))
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_failure_watch_judges_the_first_window_only():
    """More than half of the first min(32, pending) samples stops the run; exactly half, or failures after the
    window, do not (one odd stretch late in a big task is still odd samples, not broken data)."""
    half = FailureWatch("t", 4)
    half.add([None, "bad", None, "bad"])
    late = FailureWatch("t", 100)
    late.add([None] * 32)
    late.add(["bad"] * 68)
    assert len(late.reasons) == 68
    retried = FailureWatch("t", 4, tried=3)  # a finished run's one odd sample, still odd on the rerun
    retried.add(["bad"])
    stops = FailureWatch("t", 100)
    stops.add(["bad"] * 16 + [None] * 14)
    with pytest.raises(PdropEvalError, match="17 of its first 32 samples failed"):
        stops.add(["bad", None, "bad"])


def test_pope_counts_a_failed_sample_wrong_whatever_its_label():
    """An empty prediction parses as "yes" under LLaVA's rule; a failed sample must not earn a true positive."""
    pope = get_metric("pope")

    def record(gold: str, failed: bool) -> ScoredRecord:
        return ScoredRecord(id=gold, prediction="", gold=gold, score=0.0, meta={"category": "random"}, failed=failed)

    out = pope.aggregate([record("yes", True), record("no", True)])
    assert (out["tp/random"], out["fn/random"], out["tn/random"], out["fp/random"]) == (0, 1, 0, 1)
    assert out["accuracy_mean"] == 0.0
