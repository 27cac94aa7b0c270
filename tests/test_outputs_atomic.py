"""Every output is replaced atomically: a full disk or Ctrl-C while writing keeps the previous complete copy and
leaves no temporary behind; temporaries a SIGKILL left are cleared by the next writer that holds the folder."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import openpyxl
import pytest
from matplotlib.figure import Figure

from pdrop_eval import cli, store
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.store import atomic_path, write_json_atomic
from tests.run_fixtures import write_run_dir

FULL_DISK = OSError(errno.ENOSPC, "No space left on device")


def _error(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def _temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".tmp" in path.name]


@pytest.mark.parametrize("failure", [FULL_DISK, KeyboardInterrupt()], ids=["full-disk", "ctrl-c"])
def test_a_failed_write_keeps_the_previous_copy_and_no_temporary(tmp_path, failure):
    path = tmp_path / "results.xlsx"
    path.write_bytes(b"previous good copy")
    expected = PdropEvalError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as raised, atomic_path(path) as temporary:
        temporary.write_bytes(b"half a work")
        raise failure
    if expected is PdropEvalError:
        assert "No space left on device" in str(raised.value) and "previous copy" in str(raised.value)
    assert path.read_bytes() == b"previous good copy"
    assert sorted(tmp_path.iterdir()) == [path]


def test_metrics_json_whose_fsync_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """A full disk often shows only at fsync: metrics.json stays the last good one, `.metrics.json.<pid>.tmp` goes."""
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"results": ["good"]})

    def no_space(descriptor):
        raise FULL_DISK

    monkeypatch.setattr(store.os, "fsync", no_space)
    with pytest.raises(PdropEvalError, match="metrics.json"):
        write_json_atomic(path, {"results": ["new"]})
    assert json.loads(path.read_text()) == {"results": ["good"]}
    assert sorted(tmp_path.iterdir()) == [path]


def _outputs(run_dir: Path) -> dict[str, bytes]:
    paths = [run_dir / "report.md", run_dir / "report.html", *sorted((run_dir / "report_files").glob("*.png"))]
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in paths}


@pytest.fixture
def reported(tmp_path) -> Path:
    run_dir = write_run_dir(tmp_path, "demo", tasks=("shapes",))
    assert cli.main(["report", str(run_dir)]) == 0
    return run_dir


def test_full_disk_while_writing_the_spreadsheet_is_one_line_and_keeps_every_output(reported, monkeypatch, capsys):
    before, workbook = _outputs(reported), (reported / "results.xlsx").read_bytes()

    def save_half(self, filename):
        Path(filename).write_bytes(workbook[: len(workbook) // 2])
        raise FULL_DISK

    monkeypatch.setattr(openpyxl.Workbook, "save", save_half)
    capsys.readouterr()
    assert cli.main(["report", str(reported)]) == 2
    line = _error(capsys.readouterr().err)
    assert "results.xlsx" in line and "No space left on device" in line
    assert (reported / "results.xlsx").read_bytes() == workbook
    assert _outputs(reported) == before
    assert _temporaries(reported) == []


def test_ctrl_c_while_drawing_a_plot_keeps_the_previous_report(reported, monkeypatch, capsys):
    before = _outputs(reported)

    def interrupted(self, filename, **kwargs):
        Path(filename).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    assert cli.main(["report", str(reported)]) == 130
    assert _outputs(reported) == before
    openpyxl.load_workbook(reported / "results.xlsx")
    assert _temporaries(reported) == []


def test_temporaries_left_by_a_killed_writer_are_cleared_by_the_next_one(reported):
    stale = [reported / ".results.xlsx.4242.tmp.xlsx", reported / "report_files" / ".shapes_tflops.png.4242.tmp.png"]
    for path in stale:
        path.write_bytes(b"torn")
    unrelated = reported / "notes.tmp"
    unrelated.write_text("mine")
    assert cli.main(["report", str(reported)]) == 0
    assert _temporaries(reported) == [unrelated]
