"""Checkpoint fingerprints change with any change to a file, even one that keeps its size and restores its mtime."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdrop_eval.models import fingerprint
from pdrop_eval.models.fingerprint import directory_fingerprint


def wait_for_clock_tick(directory: Path, ctime_ns: int) -> None:
    """File times come from a coarse clock (ms ticks): wait until a new file gets a later ctime than `ctime_ns`."""
    probe = directory / ".probe"
    for _ in range(10**6):
        probe.write_bytes(b"")
        later = probe.stat().st_ctime_ns > ctime_ns
        probe.unlink()
        if later:
            return
    raise AssertionError("the file system clock did not advance")


def rewrite_keeping_size_and_mtime(path: Path, content: bytes) -> None:
    """Other bytes of the same length, with the old access and modification times put back (`cp -p`, `rsync -a`)."""
    old = path.stat()
    assert len(content) == old.st_size
    wait_for_clock_tick(path.parent, old.st_ctime_ns)
    path.write_bytes(content)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert path.stat().st_mtime_ns == old.st_mtime_ns


def test_unchanged_directory_has_a_stable_fingerprint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    assert directory_fingerprint(tmp_path) == directory_fingerprint(tmp_path)


@pytest.mark.parametrize("hashed_max_bytes", [fingerprint.HASHED_MAX_BYTES, 0], ids=["hashed", "stat"])
def test_same_size_rewrite_with_restored_mtime_changes_the_fingerprint(tmp_path, monkeypatch, hashed_max_bytes):
    monkeypatch.setattr(fingerprint, "HASHED_MAX_BYTES", hashed_max_bytes)
    shard = tmp_path / "model-00001-of-00002.safetensors"
    shard.write_bytes(b"a" * 4096)
    (tmp_path / "config.json").write_text("{}")
    before = directory_fingerprint(tmp_path)
    rewrite_keeping_size_and_mtime(shard, b"b" * 4096)
    assert directory_fingerprint(tmp_path) != before


def test_small_files_are_hashed_and_large_ones_stat_ed(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "HASHED_MAX_BYTES", 10)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    (tmp_path / "sub").mkdir()
    entries = {entry[0]: entry[1] for entry in directory_fingerprint(tmp_path)}
    assert entries == {"config.json": "sha256", "model.safetensors": "stat"}
