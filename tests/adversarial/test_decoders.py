"""Untrusted image bytes: bounded memory before decoding, the documented formats only, and every damaged file a
named skip (BadImage), never another exception that would stop an import or a prediction."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pirl_core.data import image_io
from pirl_core.errors import BadImage
from tests.conftest import ROOT
from tests.dicom_files import make_dicom


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_a_16_bit_png_is_bounded_by_its_bytes_not_only_its_pixel_count():
    side = int(image_io.MAX_DEEP_PIXELS ** 0.5) + 2  # far under MAX_PIXELS, over the deep limit
    assert side * side < image_io.MAX_PIXELS
    with pytest.raises(BadImage, match="16 bits or more"):
        image_io.decode(_png(np.zeros((side, side), np.uint16)), "big16.png")
    small = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    gray = np.asarray(image_io.decode(_png(small), "small16.png").image)[..., 0]
    assert gray.min() == 0 and gray.max() == 255 and gray[32, 32] == round(small[32, 32] / small.max() * 255)


def test_a_deflated_dicom_that_would_inflate_past_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_dicom(None, np.zeros((64, 64), np.uint8), bits=8, frames=400)  # 1.6 MB of zeros: ~2 KB deflated
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.PixelData = np.zeros((400, 64, 64), np.uint8).tobytes()
    ds.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    data = (tmp_path / "bomb.dcm").read_bytes()
    assert len(data) < 20_000
    assert image_io.decode(data, "bomb.dcm").note == "multi-frame DICOM: first of 400 frames used"  # under the limit
    monkeypatch.setattr(image_io, "MAX_INFLATED", 1_000_000)
    with pytest.raises(BadImage, match="inflates past"):
        image_io.decode(data, "bomb.dcm")


def test_palette_entries_of_8_bits_stored_in_16_bit_words_keep_their_colours(tmp_path):
    from tests.adversarial.test_dicom import _colour_dicom

    indices = np.zeros((48, 48), np.uint8)
    indices[:, 24:] = 1
    lut = {c: np.zeros(256, np.uint16) for c in "RGB"}
    lut["R"][0], lut["B"][1] = 255, 255  # 0 -> red, 1 -> blue, 8-bit entries in 16-bit words
    extra = {f"{name}PaletteColorLookupTableDescriptor": [256, 0, 8] for name in ("Red", "Green", "Blue")}
    extra.update({f"{name}PaletteColorLookupTableData": lut[name[0]].tobytes() for name in ("Red", "Green", "Blue")})
    image = np.asarray(image_io.decode(_colour_dicom(tmp_path / "p.dcm", indices, "PALETTE COLOR", **extra),
                                       "p.dcm").image)
    assert tuple(image[10, 5]) == (255, 0, 0) and tuple(image[10, 40]) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "ICO", "PPM", "XBM"])
def test_formats_the_readme_does_not_list_are_refused_by_name(fmt):
    buf = io.BytesIO()
    Image.new("1" if fmt == "XBM" else "RGB", (48, 48)).save(buf, fmt)
    with pytest.raises(BadImage, match=f"{fmt if fmt != 'PPM' else 'PPM'} images are not supported"):
        image_io.decode(buf.getvalue(), f"x.{fmt.lower()}")


def test_a_damaged_dicom_header_is_a_named_skip(tmp_path):
    make_dicom(tmp_path / "x.dcm", np.zeros((48, 48), np.uint8), bits=8)
    data = (tmp_path / "x.dcm").read_bytes()
    photometric = b"\x28\x00\x04\x00CS"  # (0028,0004) with its value representation
    assert photometric in data
    with pytest.raises(BadImage, match="unreadable DICOM header|cannot be"):  # an unknown VR there
        image_io.decode(data.replace(photometric, b"\x28\x00\x04\x00ES"), "x.dcm")


def test_mutated_png_jpeg_tiff_bmp_and_dicom_files_are_all_named_skips_or_decoded():
    """A short run of the fuzz bench (bench/fuzz_decoders.py, minutes of it for the closing note)."""
    out = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench/fuzz_decoders.py"), "--rounds", "3000"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 escaped" in out.stdout
