"""A fingerprint of a checkpoint directory that changes whenever any of its files changes, cheap enough for every load.

A cached conversion is reused only while the fingerprint of everything it was made from is unchanged, so weights
re-saved in place are never silently replaced by the old ones. Two ways to notice a change:

- Small files (configs, tokenizer files, a projector `.bin`; up to `HASHED_MAX_BYTES`) are hashed: exact, and
  reading a few MB costs milliseconds.
- Large files (the multi-GB weight shards) are identified by size, inode, mtime_ns and ctime_ns. Hashing them on
  every load would read all 14 GB of a 7B checkpoint each time (tens of seconds to minutes, more than loading the
  converted model itself), so the file system's own change record is used instead. Every write to a file updates
  its mtime and ctime; a re-save by write-and-rename also gives a new inode; and unlike mtime, ctime cannot be set
  back by tools that preserve timestamps (`cp -p`, `rsync -a`, `touch -d`), so a copy of other weights over the
  old file with their old mtime is caught too. The one blind spot is a same-size rewrite within one tick of the
  file system clock (milliseconds on Linux) of the moment the file was fingerprinted, which writing a
  multi-GB shard cannot fit in.

Symlinks are followed (HF cache snapshots link to blobs), so the blob actually read is what is fingerprinted.
Only top-level files count: checkpoints keep every file the conversion reads there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HASHED_MAX_BYTES = 64 * 2**20
_READ_CHUNK = 2**20


def directory_fingerprint(directory: Path) -> list[list]:
    """One entry per top-level file, by name: `[name, "sha256", digest]` or `[name, "stat", size, ino, mtime, ctime]`."""
    entries: list[list] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        stat = path.stat()
        if stat.st_size <= HASHED_MAX_BYTES:
            entries.append([path.name, "sha256", _sha256(path)])
        else:
            entries.append([path.name, "stat", stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns])
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
