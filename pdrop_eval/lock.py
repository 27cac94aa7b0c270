"""One writer per run folder: a second command on a run that is still going refuses, naming the one that holds it.

Two processes on one run would both generate every pending sample and both rewrite metrics.json and the reports.
The lock is `flock` on `<folder>/.lock`, which the kernel releases when its holder exits in any way, SIGKILL
included, so a lock left by a killed run never blocks the next one. The file only says who holds the lock (pid,
host, start time, command) for the refusal message; it is never deleted, because deleting a lock file lets two
processes lock two different files of the same name. Under torchrun only rank 0 takes it (see runner).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pdrop_eval.errors import PdropEvalError

LOCK_FILE = ".lock"
_COMMAND_SHOWN = 160


class FolderLock:
    """An exclusive, non-blocking lock on one output folder, held from `acquire` until `release` or exit."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self, command: Sequence[str], hint: str) -> None:
        """Take the lock or raise one line naming its holder; `hint` says what the user can do instead."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(descriptor))
            os.close(descriptor)
            raise PdropEvalError(f"{self.folder} is in use by {holder}: {hint}") from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(command),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)
            self._descriptor = None


def _read(descriptor: int) -> dict:
    try:
        holder = json.loads(os.pread(descriptor, 1 << 16, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    """ "pid 123 on host-a since 2026-11-30T22:50:01+00:00 (run_eval.py --tasks gqa ...)", or as much as is known
    (a holder that has just taken the lock may not have written its details yet)."""
    if not holder.get("pid"):
        return "another pdrop-eval process"
    command = str(holder.get("command", ""))
    if len(command) > _COMMAND_SHOWN:
        command = command[:_COMMAND_SHOWN] + "..."
    return f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')} ({command})"
