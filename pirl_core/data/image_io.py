"""Opening any supported medical image file as an RGB picture, or saying why not.

PNG, JPEG, TIFF and BMP through Pillow; DICOM through pydicom with the modality LUT, then
the VOI LUT / window (the radiologist's default view), MONOCHROME1 inverted, any bit depth
scaled to 8 bits. Multi-frame DICOM: the first frame is used (and reported). Grayscale
images become 3-channel so every RGB backbone takes them. A DICOM file written without the
128-byte preamble and `DICM` marker (older modalities, some exports) is recognised by its first
data element. The patient and study of a DICOM image come back too, for patient-aware splits
(data/patients.py hashes them; they are never stored as read).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadImage

MIN_SIDE = 32  # px; smaller images carry too little to learn from
MAX_PIXELS = 100_000_000  # decompression-bomb guard (a 10,000 x 10,000 image)
DICOM_SUFFIXES = {".dcm", ".dicom"}
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check agrees with ours


@dataclass
class Decoded:
    image: Image.Image  # RGB
    note: str | None = None  # e.g. "multi-frame DICOM: first of 12 frames used"
    patient: str | None = None  # DICOM PatientID as read (empty -> None); hashed before anything stores it
    study: str | None = None  # DICOM StudyInstanceUID


PICTURE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8")


def _is_dicom(data: bytes, name: str) -> bool:
    """By content: the DICM preamble, or a dataset that starts with a file-meta or identifying element without
    one; a .dcm name counts only when the bytes are no known picture format (a PNG named .dcm is a PNG)."""
    if data[128:132] == b"DICM" or _preambleless(data):
        return True
    return name.lower().endswith(tuple(DICOM_SUFFIXES)) and not data.startswith(PICTURE_MAGIC)


def _preambleless(data: bytes) -> bool:
    """A DICOM dataset without preamble: its first tag is in group 0002 (file meta) or 0008 (identifying),
    little endian, followed by an explicit VR of two capital letters or an implicit 4-byte length that fits."""
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if data[4:6].isalpha() and data[4:6].isupper():
        return True
    return int.from_bytes(data[4:8], "little") < len(data)


def decode(data: bytes, name: str) -> Decoded:
    """Decode file bytes into an RGB image, or raise BadImage with the reason."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    if _is_dicom(data, name):
        return _decode_dicom(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            _check_size(width, height)
            im.load()  # full decode: catches truncated files
            frames = getattr(im, "n_frames", 1)
            note = f"{im.format} with {frames} frames: first frame used" if frames > 1 else None
            return Decoded(_to_rgb(im), note)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (content is not PNG, JPEG, TIFF, BMP or DICOM)") from None
    except Image.DecompressionBombError:
        raise BadImage(f"too large: over {MAX_PIXELS:,} pixels (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"unreadable or truncated image ({exc})") from None


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadImage(f"too large: {width} x {height} pixels (limit {MAX_PIXELS:,} pixels)")
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"too small: {width} x {height} pixels (minimum {MIN_SIDE} px a side)")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im, dtype=np.float64))).convert("RGB")
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float64)
    lo, hi = np.percentile(pixels, [0, 100])
    if hi <= lo:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip((pixels - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)


def _infer_transfer_syntax(ds) -> None:
    """A dataset read without file meta (no preamble): its transfer syntax is the encoding it was read in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _decode_dicom(data: bytes) -> Decoded:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise BadImage(f"unreadable DICOM ({exc})") from None
    if "PixelData" not in ds:
        raise BadImage("DICOM file without pixel data (a report or structured document?)")
    _infer_transfer_syntax(ds)
    _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)))
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        # Frame 0 only, decoded on its own (a 2,000-frame cine is not read whole). pydicom 3 returns YBR_FULL
        # and YBR_FULL_422 (JPEG from ultrasound and endoscopy) already as RGB: converting again turns red green.
        frame = pixel_array(ds, index=0, as_rgb=True)
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            raise BadImage(f"compressed DICOM ({syntax.name}) that no installed decoder can read "
                           f"(install pylibjpeg with its plugins, or python-gdcm)") from None
        raise BadImage(f"DICOM pixel data cannot be decoded ({exc})") from None
    note = f"multi-frame DICOM: first of {n_frames} frames used" if n_frames > 1 else None
    who = {"patient": str(ds.get("PatientID", "") or "").strip() or None,
           "study": str(ds.get("StudyInstanceUID", "") or "").strip() or None}
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(frame, ds)
        pixels = apply_voi_lut(pixels, ds, index=0) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else pixels
        gray = _to_uint8(np.asarray(pixels))
        if photometric == "MONOCHROME1":  # high values are dark: invert for display and training
            gray = 255 - gray
        return Decoded(Image.fromarray(gray).convert("RGB"), note, **who)
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)  # indices -> the palette's RGB, 8 or 16 bits an entry
        if frame.dtype != np.uint8:
            frame = (frame.astype(np.float64) / (2 ** (8 * frame.dtype.itemsize) - 1) * 255 + 0.5).astype(np.uint8)
    rgb = np.asarray(frame)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise BadImage(f"DICOM colour data of shape {rgb.shape} with {photometric}: not an RGB picture")
    if rgb.dtype != np.uint8:
        rgb = _to_uint8(rgb)
    return Decoded(Image.fromarray(rgb).convert("RGB"), note, **who)
