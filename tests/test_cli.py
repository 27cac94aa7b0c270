"""The command line: --list-tasks, one-line errors with exit status 2, --scorer vlmeval without the package."""

from __future__ import annotations

import sys

import pytest

from pdrop_eval.cli import main
from tests.fixtures_data import write_llava_gqa


@pytest.fixture(autouse=True)
def _no_user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("PDROP_DATA", raising=False)


def test_list_tasks_shows_every_task_with_data_status_size_and_source(tmp_path, capsys):
    write_llava_gqa(tmp_path / "data")
    assert main(["--list-tasks", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    for name in ("gqa", "textvqa", "pope", "mmbench", "mmstar", "docvqa", "chartqa", "infovqa", "ocrvqa", "shapes"):
        assert f"\n{name}  [" in "\n" + out
    gqa = out.split("gqa  [", 1)[1].split("\ninfovqa", 1)[0]
    assert "12578 samples" in gqa
    assert f"found (llava_gqa, {tmp_path / 'data'})" in gqa
    assert "https://huggingface.co/datasets/lmms-lab/GQA" in gqa
    textvqa = out.split("textvqa  [", 1)[1]
    assert "not found" in textvqa.splitlines()[1]
    assert "found (synthetic_shapes, generated on the fly)" in out
    assert "\nocrvqa_core  [size not published, metrics: ocrvqa_exact]" in out


def test_list_tasks_includes_user_cards(tmp_path, capsys):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards/mine.yaml").write_text(
        "name: mine\ndescription: d\nsize: 3\nprompt_suffix: ''\nmax_new_tokens: 4\nmetrics: [exact_match]\n"
        "sources:\n  - format: synthetic_shapes\n    count: 3\n"
    )
    assert main(["--list-tasks", "--tasks-dir", str(tmp_path / "cards")]) == 0
    assert "mine  [3 samples" in capsys.readouterr().out


def test_errors_are_one_line_on_stderr_with_status_2(tmp_path, capsys):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards/bad.yaml").write_text("name: bad\n")
    assert main(["--list-tasks", "--tasks-dir", str(tmp_path / "cards")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: task card") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_scorer_vlmeval_without_the_package_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vlmeval", None)
    assert main(["--scorer", "vlmeval", "--list-tasks"]) == 2
    err = capsys.readouterr().err
    assert "vlmeval" in err and "not installed" in err


def test_run_eval_script_is_a_thin_entry_point():
    import pathlib

    text = (pathlib.Path(__file__).parents[1] / "run_eval.py").read_text()
    assert "from pdrop_eval.cli import main" in text and "raise SystemExit(main())" in text


def test_a_data_warning_is_one_line_printed_by_rank_zero_only(monkeypatch, capsys):
    import warnings

    from pdrop_eval import cli
    from pdrop_eval.errors import PdropEvalWarning

    def warns(argv):
        warnings.simplefilter("always")  # so the second call is not hidden as a repeat
        warnings.warn("task mmstar: no metadata column(s)\n ['l2_category']", PdropEvalWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "_run", warns)
    monkeypatch.setenv("RANK", "0")
    assert main([]) == 0
    assert capsys.readouterr().err == "warning: task mmstar: no metadata column(s) ['l2_category']\n"
    monkeypatch.setenv("RANK", "1")
    assert main([]) == 0
    assert capsys.readouterr().err == ""
