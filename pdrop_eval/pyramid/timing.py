"""Timing that counts GPU work.

CUDA runs asynchronously. A whole phase (prefill, decode) is timed by synchronising on both ends; a short span inside
a phase (rank and drop) is timed with CUDA events instead, since a synchronisation there would drain the launch queue
and make the span, and the phase around it, slower than it is when nobody is looking.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from typing_extensions import Self


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """`with Stopwatch(device) as watch: ...` then `watch.seconds`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Self:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


class SpanTimer:
    """Sums the time of several spans inside one phase without synchronising: `with timer.span(): ...` for each, then
    `timer.seconds()` once the phase is over (that call waits for the GPU work recorded so far)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._host_seconds = 0.0

    @contextmanager
    def span(self) -> Iterator[None]:
        if self.device.type != "cuda":
            start = time.perf_counter()
            yield
            self._host_seconds += time.perf_counter() - start
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._events.append((start, end))

    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
        return self._host_seconds + sum(start.elapsed_time(end) for start, end in self._events) / 1e3
