"""Runs as separate processes: killed with SIGKILL mid-run and resumed, and sharded over two torchrun ranks.

Both must end with exactly the predictions of one uninterrupted single-process run: no sample lost, none
duplicated, a torn last line ignored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdrop_eval import cli

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--model",
    "tiny-llava",
    "--tasks",
    "shapes",
    "--limit",
    "6",
    "--max-new-tokens",
    "3",
    "--lambda",
    "0.5",
    "--baselines",
    "vanilla",
    "--no-report",
]
LABELS = ("vanilla", "pdrop_lam0.5_8-16-24")


def _comparable(run_dir: Path) -> dict[str, list[dict]]:
    """Merged predictions without timings, which differ from run to run."""
    out = {}
    for label in LABELS:
        lines = (run_dir / "predictions" / "shapes" / f"{label}.jsonl").read_text().splitlines()
        out[label] = [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in lines]
    return out


def _reference(tmp_path: Path) -> dict[str, list[dict]]:
    assert cli.main([*ARGS, "--batch-size", "2", "--output-dir", str(tmp_path), "--run-name", "reference"]) == 0
    return _comparable(tmp_path / "reference")


def _written(run_dir: Path) -> int:
    folder = run_dir / "predictions" / "shapes"
    if not folder.is_dir():
        return 0
    return sum(path.read_bytes().count(b"\n") for path in folder.glob("*.jsonl"))


def _command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "run_eval.py", *ARGS, "--output-dir", str(tmp_path), "--run-name", "killed", *extra]


def test_sigkill_at_any_moment_then_resume_equals_uninterrupted_run(tmp_path):
    reference = _reference(tmp_path)
    run_dir = tmp_path / "killed"
    for target in (1, 5):
        process = subprocess.Popen(
            _command(tmp_path, "--batch-size", "1"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while _written(run_dir) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    shard = run_dir / "predictions" / "shapes" / "vanilla.rank0.jsonl"
    with shard.open("a") as handle:
        handle.write('{"id": 5, "prediction": "half a rec')  # what a kill in the middle of a write leaves
    written_before = _written(run_dir)
    assert 0 < written_before < 12
    finished = subprocess.run(
        _command(tmp_path, "--batch-size", "2"), check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _comparable(run_dir) == reference
    assert not list((run_dir / "predictions" / "shapes").glob("*.rank*.jsonl")), "shards are merged away"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_processes_equal_one(tmp_path):
    reference = _reference(tmp_path)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "run_eval.py",
        *ARGS,
        "--batch-size",
        "2",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "ddp",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert _comparable(tmp_path / "ddp") == reference
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["run"]["settings"]["world_size"] == 2
    assert all(result["n"] == 6 for result in metrics["results"])


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-2000:]
    return errors[0]


def test_second_process_on_a_running_run_refuses_and_a_killed_one_blocks_nothing(tmp_path):
    """The first run is paused (SIGSTOP) while it holds the run, so the second surely meets it; then it is killed
    with SIGKILL, and a third run resumes and finishes what it left."""
    reference = _reference(tmp_path)
    run_dir = tmp_path / "killed"
    first = subprocess.Popen(
        _command(tmp_path, "--batch-size", "1"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while _written(run_dir) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before a second one could meet it"
        os.kill(first.pid, signal.SIGSTOP)
        written = _written(run_dir)
        second = subprocess.run(
            _command(tmp_path, "--batch-size", "2"), check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2
        line = _one_error_line(second.stderr)
        assert f"is in use by pid {first.pid} on {socket.gethostname()} since " in line and "--run-name" in line
        assert _written(run_dir) == written, "the refused run wrote no prediction"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    third = subprocess.run(
        _command(tmp_path, "--batch-size", "2"), check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert third.returncode == 0, third.stderr[-2000:]
    assert _comparable(run_dir) == reference


def test_torchrun_ranks_all_refuse_a_run_another_process_holds(tmp_path):
    """Rank 0 takes the lock for its torchrun; when another process holds it every rank gets the same one line
    (none is left waiting at a barrier) and nothing is written."""
    from pdrop_eval.lock import FolderLock

    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    holder = FolderLock(run_dir)
    holder.acquire(["pdrop-eval", "--tasks", "shapes"], "unused")
    try:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "--log-dir",
            str(tmp_path / "logs"),
            "--redirects",
            "2",  # each rank's stderr in its own file: two ranks writing one pipe may interleave
            "run_eval.py",
            *ARGS,
            "--output-dir",
            str(tmp_path),
            "--run-name",
            "ddp",
        ]
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        finished = subprocess.run(
            command, check=False, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=300
        )
    finally:
        holder.release()
    assert finished.returncode != 0
    logs = sorted((tmp_path / "logs").rglob("stderr.log"))
    assert len(logs) == 2, finished.stderr
    for log in logs:
        refusals = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
        assert len(refusals) == 1 and f"is in use by pid {os.getpid()} " in refusals[0], log.read_text()
    assert not (run_dir / "predictions").exists() and not (run_dir / "run.json").exists()
