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
