"""Progress that suits where stderr goes: tqdm bars on a terminal, plain periodic lines in a log file.

Under nohup or a batch scheduler, stderr is a file: cursor-control codes and carriage returns would fill it with
thousands of half-lines, so there a line such as `gqa: 1200/12578 samples, 6 schedules, 3.1 samples/s, 61 min
left` is printed every LOG_INTERVAL_S seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 60.0


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def quiet_loading_bars() -> None:
    """Model loading ("Loading checkpoint shards") prints bars too; in a log file they are only noise."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


class TaskProgress:
    """Samples done per schedule for one task; `update(label, count)` after each batch, `close()` at the end."""

    def __init__(self, task: str, labels: Sequence[str], total: int, done: dict[str, int], enabled: bool = True):
        self.task, self.labels, self.total, self.enabled = task, list(labels), total, enabled
        self.done = {label: done.get(label, 0) for label in self.labels}
        self.terminal = is_terminal()
        self.bars: dict[str, tqdm] = {}
        self.started = self.last = time.monotonic()
        self.start_count = self._overall()
        if enabled and self.terminal:
            self.bars = {
                label: tqdm(
                    total=total,
                    initial=self.done[label],
                    desc=f"{task} {label}",
                    unit="sample",
                    position=index,
                    leave=True,
                    mininterval=1.0,
                )
                for index, label in enumerate(self.labels)
            }

    def _overall(self) -> int:
        return min(self.done.values()) if self.done else 0

    def update(self, label: str, count: int) -> None:
        self.done[label] += count
        if label in self.bars:
            self.bars[label].update(count)
        elif self.enabled and not self.terminal and time.monotonic() - self.last >= LOG_INTERVAL_S:
            self._line()

    def _line(self) -> None:
        self.last = now = time.monotonic()
        finished = self._overall()
        rate = (finished - self.start_count) / (now - self.started) if now > self.started else 0.0
        left = f", {(self.total - finished) / rate / 60:.0f} min left" if rate > 0 and finished < self.total else ""
        print(
            f"{self.task}: {finished}/{self.total} samples through all {len(self.labels)} schedules, "
            f"{rate:.2f} samples/s{left}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        if self.enabled and not self.terminal:
            self._line()
