"""DICOM colour and frames, with fixtures written by pydicom whose expected pixels are known."""

import numpy as np
import pydicom
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pirl_core.data.image_io import decode
from tests.dicom_files import dataset

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _colour_dicom(path, samples: np.ndarray, photometric: str, frames: int = 1, **extra) -> bytes:
    ds = dataset(SecondaryCaptureImageStorage, ExplicitVRLittleEndian, "P0", None, None, "US")
    ds.Rows, ds.Columns = samples.shape[-3:-1] if samples.ndim >= 3 and samples.shape[-1] == 3 else samples.shape[-2:]
    ds.SamplesPerPixel = 3 if samples.shape[-1] == 3 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = samples.astype(np.uint8).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path.read_bytes()


def _halves(left, right) -> np.ndarray:
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[:, :24], rgb[:, 24:] = left, right
    return rgb


def test_ybr_full_ultrasound_keeps_its_colours(tmp_path):
    rgb = _halves(RED, BLUE)
    for photometric in ("YBR_FULL", "RGB"):
        stored = convert_color_space(rgb, "RGB", "YBR_FULL") if photometric == "YBR_FULL" else rgb
        image = np.asarray(decode(_colour_dicom(tmp_path / f"{photometric}.dcm", stored, photometric), "x.dcm").image)
        assert np.abs(image[10, 5].astype(int) - RED).max() <= 3, (photometric, image[10, 5])  # red stays red
        assert np.abs(image[10, 40].astype(int) - BLUE).max() <= 3, (photometric, image[10, 40])


def test_palette_colour_gets_its_palette(tmp_path):
    indices = np.zeros((48, 48), np.uint8)
    indices[:, 24:] = 1
    lut = {c: np.zeros(256, np.uint16) for c in "RGB"}
    lut["R"][0], lut["B"][1] = 65535, 65535  # 0 -> red, 1 -> blue (16-bit entries)
    extra = {f"{name}PaletteColorLookupTableDescriptor": [256, 0, 16] for name in ("Red", "Green", "Blue")}
    extra.update({f"{name}PaletteColorLookupTableData": lut[name[0]].tobytes() for name in ("Red", "Green", "Blue")})
    image = np.asarray(decode(_colour_dicom(tmp_path / "p.dcm", indices, "PALETTE COLOR", **extra), "p.dcm").image)
    assert tuple(image[10, 5]) == RED and tuple(image[10, 40]) == BLUE


def test_a_multi_frame_file_uses_frame_one_and_says_so(tmp_path):
    frames = np.stack([_halves(RED, RED), _halves(BLUE, BLUE), _halves(BLUE, BLUE)])
    decoded = decode(_colour_dicom(tmp_path / "cine.dcm", frames, "RGB", frames=3), "cine.dcm")
    assert tuple(np.asarray(decoded.image)[5, 5]) == RED and "first of 3 frames" in decoded.note


def test_a_png_named_dcm_is_decoded_by_its_content(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), RED).save(buf, "PNG")
    assert tuple(np.asarray(decode(buf.getvalue(), "scan.dcm").image)[3, 3]) == RED


def test_a_multi_page_tiff_uses_frame_one_and_says_so(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    first, *rest = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE, (0, 255, 0))]
    first.save(buf, "TIFF", save_all=True, append_images=rest)
    decoded = decode(buf.getvalue(), "cine.tif")
    assert tuple(np.asarray(decoded.image)[5, 5])[0] > 200 and "3 frames: first frame used" in decoded.note
