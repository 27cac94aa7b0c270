"""The optional VLMEvalKit scorer: a clear error without the package, its file format and call with a stand-in."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest

from pdrop_eval.data.vlmeval_scoring import require_vlmeval, score_with_vlmeval, write_prediction_xlsx
from pdrop_eval.errors import PdropEvalError
from tests.fixtures_data import write_mmstar_tsv, write_vqa_tsv


def test_missing_vlmeval_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vlmeval", None)
    with pytest.raises(PdropEvalError, match="not installed.*--scorer native"):
        require_vlmeval()


def test_prediction_xlsx_has_tsv_columns_without_image_plus_prediction(tmp_path):
    write_vqa_tsv(tmp_path / "DocVQA_VAL.tsv")
    path = write_prediction_xlsx(tmp_path / "DocVQA_VAL.tsv", {9: "1984", 7: "Dennys"}, tmp_path / "out/p.xlsx")
    frame = pd.read_excel(path)
    assert list(frame.columns) == ["index", "question", "answer", "prediction"]
    assert frame["index"].tolist() == [7, 9]
    assert frame["prediction"].tolist() == ["Dennys", "1984"]


def test_prediction_ids_from_another_file_are_rejected(tmp_path):
    write_vqa_tsv(tmp_path / "DocVQA_VAL.tsv")
    with pytest.raises(PdropEvalError, match="not indices"):
        write_prediction_xlsx(tmp_path / "DocVQA_VAL.tsv", {"49153": "x"}, tmp_path / "p.xlsx")


def test_scoring_goes_through_vlmevalkit_dataset_classes(tmp_path, monkeypatch):
    calls = {}

    class FakeDataset:
        TYPE = "MCQ"

        def evaluate(self, eval_file, **judge_kwargs):
            calls["file"], calls["judge"] = eval_file, judge_kwargs
            return {"Overall": 100.0}

    package = types.ModuleType("vlmeval")
    dataset_module = types.ModuleType("vlmeval.dataset")
    dataset_module.build_dataset = lambda name: FakeDataset() if name == "MMStar" else None
    monkeypatch.setitem(sys.modules, "vlmeval", package)
    monkeypatch.setitem(sys.modules, "vlmeval.dataset", dataset_module)
    write_mmstar_tsv(tmp_path / "MMStar.tsv")
    result = score_with_vlmeval("MMStar", tmp_path / "MMStar.tsv", {0: "A", 1: "C"}, tmp_path / "out")
    assert result == {"Overall": 100.0}
    assert calls["judge"] == {"model": "exact_matching"}
    assert calls["file"].endswith("pdrop_MMStar.xlsx")
    assert pd.read_excel(calls["file"])["prediction"].tolist() == ["A", "C"]
    with pytest.raises(PdropEvalError, match="does not know"):
        score_with_vlmeval("Nope", tmp_path / "MMStar.tsv", {}, tmp_path / "out")
