"""Batches prepared ahead of the model: reading, decoding, preprocessing and tokenising run in worker threads while
the runner's main thread moves the previous batch to the device and runs the model.

Why threads, not processes: PIL's decoders and resampling and numpy's normalisation release the GIL for most of
their time, so two threads prepared 500×375 JPEGs 1.7× as fast as one on two cores (6.1 → 3.6 ms per image with
CLIP's preprocessing), while two processes reached only 1.2× (5.1 ms): each 336² float32 image (1.35 MB) has to be
pickled back. Threads also share the loaders' closures (a `Sample.load_image` need not pickle) and start nothing
under torchrun: each rank runs its own pool over its own shard.

What the runner sees does not depend on the pipeline: batches come in the order it would have built them itself,
each one's failures first (`PreparedBatch`), and the batches are the same as building them on the main thread
(`workers=0` does exactly that, without threads). With `by_length`, each window of BUCKET_BATCHES batches' worth of
consecutive samples is sorted by prompt length (image tokens plus text) before it is cut into batches, so a batch of
LLaVA-NeXT images with 1,900 and 2,900 tokens does not pad the short ones by 1,000: that changes which samples share
a batch, never a sample's answer in float32 (the engine is batch-invariant there; tests prove it token for token),
while in half precision a sample's answer can depend on its batch (the batch effect), hence the runner's flag to
turn it off. The predictions files stay in dataset order (the shards are merged in it), and resuming is by sample
id, so neither depends on the order samples ran in.

Shutdown: `close` (the `with` block's exit, on an error or Ctrl-C in the loop too) cancels what has not started,
waits for the few jobs that have, and joins every thread, so no thread outlives the loop; it writes nothing, so
nothing written is touched.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image

from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import SampleError
from pdrop_eval.models.batch import VLMBatch, build_host_batch, check_prompt, image_token_count
from pdrop_eval.models.images import to_rgb
from pdrop_eval.models.loaded import LoadedVLM

if TYPE_CHECKING:
    from typing_extensions import Self

BUCKET_BATCHES = 8  # batches' worth of samples sorted together; their decoded images are held until batched
MAX_DEFAULT_WORKERS = 4  # enough to feed one GPU at 100+ samples/s of GQA-sized images (about 9 ms each)
_POLL_S = 0.1  # how often a blocked producer checks whether the loop has stopped


@dataclass
class PreparedBatch:
    """One step of the runner's loop.

    `failures` (sample, reason) are the samples of this step whose input could not be used, to be recorded before
    the batch runs; `outcomes` are every sample's reason or None in dataset order, for `FailureWatch`. With length
    groups one window of samples gives several batches, and its first batch carries the window's failures and
    outcomes (the others carry none). `samples` are the usable samples in the row order of `inputs`, host tensors
    (page-locked when the pipeline prepares for a GPU); both are empty / None when every sample of the step failed.
    """

    samples: list[Sample]
    inputs: VLMBatch | None
    failures: list[tuple[Sample, str]]
    outcomes: list[str | None]


@dataclass
class _Loaded:
    """A sample after reading and decoding: its image, or why it cannot be used; its prompt length when sorted."""

    sample: Sample
    image: Image.Image | None
    reason: str | None
    length: int = 0


@dataclass
class _Pending:
    """A queued step: a `PreparedBatch` whose inputs a worker may still be building."""

    samples: list[Sample]
    failures: list[tuple[Sample, str]]
    outcomes: list[str | None]
    build: Future | None


def default_workers() -> int:
    """This process's share of the CPU cores it may run on (torchrun's ranks on one node split them), at most
    MAX_DEFAULT_WORKERS, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_DEFAULT_WORKERS, cores // max(ranks_here, 1)))


def varies_in_length(loaded: LoadedVLM) -> bool:
    """Whether image-token counts differ between images (LLaVA-NeXT's tiles, Qwen2.5-VL's grids): only then do
    length groups save enough padding to be worth moving samples between batches."""
    return loaded.image_tokens_per_image is None


def prompt_length(loaded: LoadedVLM, sample: Sample, image: Image.Image) -> int:
    """The sort key of length groups: the image's tokens plus the message's tokens (the template adds the same
    tokens to every prompt, so it cannot change the order)."""
    text = loaded.tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
    return image_token_count(loaded, to_rgb(image)) + len(text)


def length_groups(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` cut into batches of `batch_size` after a stable sort by length: each batch holds
    neighbours in length, ties keep their order."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class BatchPipeline:
    """`with BatchPipeline(...) as batches: for prepared in batches: ...` over `samples` in order.

    `workers` threads prepare up to 2 × `workers` batches ahead (0: everything on the calling thread, no look-ahead);
    `by_length` sorts windows of samples by prompt length first (module docstring). With `gpu`, the workers pin
    each batch in page-locked memory so the loop's copy to that GPU overlaps its work."""

    def __init__(
        self,
        loaded: LoadedVLM,
        samples: Sequence[Sample],
        batch_size: int,
        *,
        workers: int,
        by_length: bool = False,
        gpu: torch.device | None = None,
    ):
        self.loaded = loaded
        self.samples = list(samples)
        self.batch_size = batch_size
        self.workers = workers
        self.by_length = by_length
        self.gpu = gpu
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, 2 * workers))
        self._pool: ThreadPoolExecutor | None = None
        self._producer: threading.Thread | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[PreparedBatch]:
        if self.workers == 0:
            yield from self._prepare_inline()
            return
        self._start()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            inputs = None if item.build is None else item.build.result()
            yield PreparedBatch(item.samples, inputs, item.failures, item.outcomes)

    def close(self) -> None:
        """Stop preparing, cancel jobs not started, wait for the running ones and join every thread."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        while self._producer is not None and self._producer.is_alive():
            self._drain()
            self._producer.join(_POLL_S)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._drain()

    # ---- the stages, the same with or without threads ----

    def _windows(self) -> Iterator[list[Sample]]:
        """Consecutive samples judged, sorted and cut together: one batch, or BUCKET_BATCHES with length groups."""
        size = self.batch_size * (BUCKET_BATCHES if self.by_length else 1)
        for start in range(0, len(self.samples), size):
            yield self.samples[start : start + size]

    def _load(self, sample: Sample) -> _Loaded:
        try:
            check_prompt(sample.prompt, sample.id)
            image = sample.load_image()
        except SampleError as error:
            return _Loaded(sample, None, " ".join(str(error).split()))
        length = prompt_length(self.loaded, sample, image) if self.by_length else 0
        return _Loaded(sample, image, None, length)

    def _groups(self, loaded: list[_Loaded]) -> list[list[_Loaded]]:
        usable = [item for item in loaded if item.reason is None]
        if not self.by_length:
            return [usable] if usable else []
        return [[usable[i] for i in group] for group in length_groups([u.length for u in usable], self.batch_size)]

    def _build(self, group: list[_Loaded]) -> VLMBatch:
        return build_host_batch(self.loaded, [item.sample.prompt for item in group], [item.image for item in group])

    @staticmethod
    def _failures(loaded: list[_Loaded]) -> tuple[list[tuple[Sample, str]], list[str | None]]:
        return [(item.sample, item.reason) for item in loaded if item.reason is not None], [i.reason for i in loaded]

    def _prepare_inline(self) -> Iterator[PreparedBatch]:
        for window in self._windows():
            loaded = [self._load(sample) for sample in window]
            failures, outcomes = self._failures(loaded)
            groups = self._groups(loaded)
            if not groups:
                yield PreparedBatch([], None, failures, outcomes)
            for index, group in enumerate(groups):
                first = index == 0
                yield PreparedBatch(
                    [item.sample for item in group],
                    self._build(group),
                    failures if first else [],
                    outcomes if first else [],
                )

    # ---- threads ----

    def _start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pdrop-data", initializer=self._bind_gpu)
        self._producer = threading.Thread(target=self._produce, name="pdrop-data-producer", daemon=True)
        self._producer.start()

    def _bind_gpu(self) -> None:
        """A worker thread starts on GPU 0: pinning from there would open a CUDA context on GPU 0 for every rank
        (as PyTorch's DataLoader pin-memory thread avoids by the same call). `--device cuda` names no index: it is
        the current device, which a new thread already has, and `set_device` refuses a device without one."""
        if self.gpu is not None and self.gpu.index is not None:
            torch.cuda.set_device(self.gpu.index)

    def _build_pinned(self, group: list[_Loaded]) -> VLMBatch:
        return self._build(group).pinned()

    def _produce(self) -> None:
        """Submit each window's loads, then its batches' builds, each queued as a future in order; the bounded
        queue keeps the look-ahead (and the memory it holds) to 2 × workers batches."""
        assert self._pool is not None
        try:
            for window in self._windows():
                loads = [self._pool.submit(self._load, sample) for sample in window]
                loaded = [future.result() for future in loads]
                failures, outcomes = self._failures(loaded)
                groups = self._groups(loaded)
                if not groups and not self._put(_Pending([], failures, outcomes, None)):
                    return
                for index, group in enumerate(groups):
                    first = index == 0
                    build = self._pool.submit(self._build_pinned if self.gpu is not None else self._build, group)
                    samples = [member.sample for member in group]
                    if not self._put(_Pending(samples, failures if first else [], outcomes if first else [], build)):
                        return
            self._put(None)
        except BaseException as error:  # noqa: BLE001  the loop raises it where the work would have run
            self._put(error)

    def _put(self, item) -> bool:
        """Queue `item` unless the loop stopped; False when it did."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
