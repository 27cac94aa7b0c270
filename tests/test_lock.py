"""One command per run folder: a run or a report on a folder another process holds is one error line naming it.

The holder here is a FolderLock taken in the test process (a lock on another open file of the same path conflicts
exactly as another process's would); test_runner_processes does it with real processes, SIGKILL and torchrun.
"""

from __future__ import annotations

import os

import pytest

from pdrop_eval import cli, runner
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.lock import FolderLock
from tests.run_fixtures import write_run_dir


def _error(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.fixture
def held(tmp_path):
    run_dir = write_run_dir(tmp_path, "busy", tasks=("shapes",))
    lock = FolderLock(run_dir)
    lock.acquire(["run_eval.py", "--tasks", "shapes"], "unused")
    yield run_dir
    lock.release()


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path):
    first, second = FolderLock(tmp_path), FolderLock(tmp_path)
    first.acquire(["run_eval.py", "--tasks", "gqa"], "unused")
    with pytest.raises(PdropEvalError) as refused:
        second.acquire(["run_eval.py"], "use another --run-name")
    message = str(refused.value)
    assert f"in use by pid {os.getpid()} on " in message and "(run_eval.py --tasks gqa)" in message
    assert message.endswith(": use another --run-name")
    first.release()
    second.acquire(["run_eval.py"], "unused")
    second.release()


def test_run_on_a_held_folder_refuses_before_the_model_loads(held, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("a refused run must not load the model")

    monkeypatch.setattr(runner, "load_vlm", fail)
    before = sorted(p.relative_to(held) for p in held.rglob("*"))
    args = ["--model", "tiny-llava", "--tasks", "shapes", "--lambda", "0.5", "--limit", "2"]
    assert cli.main([*args, "--output-dir", str(held.parent), "--run-name", held.name]) == 2
    line = _error(capsys.readouterr().err)
    assert f"in use by pid {os.getpid()}" in line and "another --run-name" in line
    assert sorted(p.relative_to(held) for p in held.rglob("*")) == before


def test_report_into_a_held_folder_refuses_but_may_read_it_for_another_folder(held, tmp_path, capsys):
    assert cli.main(["report", str(held)]) == 2
    assert f"in use by pid {os.getpid()}" in _error(capsys.readouterr().err)
    assert not (held / "results.xlsx").exists()
    assert cli.main(["report", str(held), "--out", str(tmp_path / "snapshot")]) == 0
    assert (tmp_path / "snapshot" / "report.html").is_file()
