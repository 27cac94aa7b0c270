"""Images: every mode becomes RGB; corrupt or missing files name the sample and the file."""

from __future__ import annotations

import pytest

from pdrop_eval.data.images import decode_base64_image, decode_image_bytes, open_image_file
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.registry import get_task, load_samples
from tests.fixtures_data import MODES, b64_image, image_bytes, write_llava_gqa


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_mode_and_format_decodes_to_rgb(mode, fmt):
    image = decode_image_bytes(image_bytes(mode, fmt), "s1", "memory")
    assert image.mode == "RGB" and image.size == (6, 4)
    assert decode_base64_image(b64_image(mode, fmt), "s1", "memory").mode == "RGB"


def test_palette_image_keeps_its_colours():
    image = decode_image_bytes(image_bytes("P", "PNG", seed=3), "s", "memory")
    assert image.getpixel((0, 0)) != (0, 0, 0)


def test_corrupt_image_file_names_sample_and_file(tmp_path):
    write_llava_gqa(tmp_path)
    broken = tmp_path / "gqa/data/images/n288870.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    samples = load_samples(get_task("gqa"), tmp_path, lmu_data=tmp_path, hf_cache=tmp_path)
    with pytest.raises(PdropEvalError) as caught:
        samples[0].load_image()
    assert "'20968475'" in str(caught.value) and str(broken) in str(caught.value)


def test_missing_image_file_names_sample_and_file(tmp_path):
    write_llava_gqa(tmp_path)
    gone = tmp_path / "gqa/data/images/n33334.png"
    gone.unlink()
    samples = load_samples(get_task("gqa"), tmp_path, lmu_data=tmp_path, hf_cache=tmp_path)
    with pytest.raises(PdropEvalError) as caught:
        samples[1].load_image()
    assert "'201640614'" in str(caught.value) and str(gone) in str(caught.value)


def test_open_image_file_converts(tmp_path):
    path = tmp_path / "gray.png"
    path.write_bytes(image_bytes("L"))
    assert open_image_file(path, 0).mode == "RGB"
