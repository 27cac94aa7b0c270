"""Opening images the way every benchmark needs them: RGB, from a file, raw bytes or base64.

LLaVA's own MMBench path forgets to convert to RGB (grayscale crashes, palette images turn black), so every
image goes through `to_rgb`. Decoding errors are `SampleError`s naming the sample and the file: the run records
that sample as failed and goes on, and the report lists it so a corrupt download is found fast. An image whose
pixel count is over twice PIL's `MAX_IMAGE_PIXELS` (a decompression bomb) is such a failure too.

Image paths written inside data files are joined to their images folder only when they stay inside it
(`image_path`): a data file must not make the harness read files elsewhere on the machine.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError

from pdrop_eval.errors import PdropEvalError, SampleError


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, RGBA, P, CMYK, I;16...) to RGB; palette transparency goes through RGBA first."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _decode(data: bytes, sample_id: object, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as err:
        raise SampleError(f"sample {sample_id!r}: the image in {where} is too large to decode safely ({err})") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        # PIL's "cannot identify" message names the in-memory buffer's address: say it stably instead, so the
        # reason recorded for a failed sample is the same from run to run.
        detail = "not an image format PIL can identify" if isinstance(err, UnidentifiedImageError) else err
        raise SampleError(
            f"sample {sample_id!r}: cannot decode the image from {where} ({detail}); the file looks corrupt, "
            "download it again"
        ) from err


def open_image_file(path: Path, sample_id: object) -> Image.Image:
    """Read an image file; a missing or unreadable file raises an error naming the sample and the path."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SampleError(f"sample {sample_id!r}: cannot read image file {path} ({err.strerror})") from err
    return _decode(data, sample_id, str(path))


def decode_image_bytes(data: bytes | None, sample_id: object, where: str) -> Image.Image:
    """Decode encoded image bytes (PNG/JPEG...) held in a parquet or arrow table."""
    if not data:
        raise SampleError(f"sample {sample_id!r}: the image in {where} is empty")
    return _decode(data, sample_id, where)


def decode_base64_image(text: str, sample_id: object, where: str) -> Image.Image:
    """Decode a base64 image cell of a TSV (VLMEvalKit, MMBench)."""
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as err:
        raise SampleError(f"sample {sample_id!r}: the base64 image in {where} is not valid base64 ({err})") from err
    return decode_image_bytes(data, sample_id, where)


def image_path(folder: Path, relative: object, where: str) -> Path:
    """`folder / relative` for an image named in a data file, refused when the name is absolute or climbs out of
    `folder` with `..`. The check is on the name itself, not on resolved paths, so an images folder (or image
    files) symlinked from a bigger disk keeps working."""
    text = str(relative)
    escapes = PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive
    parts = os.path.normpath(text.replace("\\", "/")).split(os.sep)
    if escapes or ".." in parts:
        raise PdropEvalError(
            f"{where}: image path {text!r} points outside the images folder {folder}; image paths in data files "
            "must be relative to it: fix that row or use the official file"
        )
    return Path(folder) / text
