"""Shared test setup: a private model cache per session and the tiny models, loaded once and shared."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import pytest
import torch

from pdrop_eval.models.cache import CACHE_ENV

_created_cache: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Build tiny models into a fresh cache so a stale one from older code can never leak into a run.

    Tests run on one torch thread unless OMP_NUM_THREADS says otherwise: their tensors are tiny, and on a small
    shared machine intra-op threads spin against each other and made the model tests 3-6x slower, not faster.
    """
    global _created_cache
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    if CACHE_ENV not in os.environ:
        _created_cache = tempfile.mkdtemp(prefix="pdrop_eval_test_cache_")
        os.environ[CACHE_ENV] = _created_cache


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created_cache is not None:
        shutil.rmtree(_created_cache, ignore_errors=True)
        os.environ.pop(CACHE_ENV, None)


@pytest.fixture(scope="session")
def tiny_vlm() -> Callable:
    """`tiny_vlm("tiny-llava")`: a fp32 CPU LoadedVLM, loaded once per session (tests must not modify it)."""
    from pdrop_eval.models import load_vlm

    loaded = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_vlm(name)
        return loaded[name]

    return get
