"""Opening any supported medical image file as an RGB picture, or saying why not.

PNG, JPEG, TIFF and BMP through Pillow (other formats Pillow could open are refused by name: the README
lists what is supported); DICOM through pydicom with the modality LUT, then
the VOI LUT / window (the radiologist's default view), MONOCHROME1 inverted, any bit depth
scaled to 8 bits. Multi-frame DICOM: the first frame is used (and reported). Grayscale
images become 3-channel so every RGB backbone takes them. A DICOM file written without the
128-byte preamble and `DICM` marker (older modalities, some exports) is recognised by its first
data element. The patient and study of a DICOM image come back too, for patient-aware splits
(data/patients.py hashes them; they are never stored as read).

Untrusted bytes: whatever a decoder raises on a damaged file becomes BadImage (the file is skipped and
named, the rest of an import or a prediction goes on); memory is bounded before decoding: the pixel count
(lower for 16- and 32-bit pixels, which the scaling to 8 bits holds as floats) and what a deflated DICOM may
inflate to.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadImage

MIN_SIDE = 32  # px; smaller images carry too little to learn from
MAX_PIXELS = 100_000_000  # decompression-bomb guard (a 10,000 x 10,000 image)
MAX_DEEP_PIXELS = 25_000_000  # 16- or 32-bit pixels (a 5,000 x 5,000 image; mammograms are about 4,000 x 5,000)
MAX_INFLATED = 256 * 2**20  # bytes a deflated DICOM dataset may inflate to
DEEP_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
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
            if im.format not in FORMATS:
                raise BadImage(f"{im.format} images are not supported (PNG, JPEG, TIFF, BMP or DICOM): convert it "
                               "to PNG")
            width, height = im.size
            _check_size(width, height, deep=im.mode in DEEP_MODES)
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
    except MemoryError:
        raise BadImage("too large to decode in this machine's memory") from None
    except Exception as exc:  # a damaged file can make a decoder raise anything
        raise BadImage(f"unreadable or truncated image ({type(exc).__name__}: {exc})"[:300]) from None


def _check_size(width: int, height: int, deep: bool = False) -> None:
    if width * height > MAX_PIXELS:
        raise BadImage(f"too large: {width} x {height} pixels (limit {MAX_PIXELS:,} pixels)")
    if deep and width * height > MAX_DEEP_PIXELS:
        raise BadImage(f"too large: {width} x {height} pixels of 16 bits or more (limit {MAX_DEEP_PIXELS:,} pixels "
                       "at that depth)")
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"too small: {width} x {height} pixels (minimum {MIN_SIDE} px a side)")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any numeric pixels -> uint8, their range stretched to 0..255 (float32: one copy of 4 bytes a pixel)."""
    lo, hi = float(pixels.min()), float(pixels.max())
    if not hi > lo:  # flat, or NaN
        return np.zeros(pixels.shape, np.uint8)
    out = pixels.astype(np.float32)
    out -= lo
    out *= 255 / (hi - lo)
    out += 0.5
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


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


def _check_inflation(data: bytes) -> None:
    """A deflated DICOM (the whole dataset zlib-compressed) is inflated whole by pydicom: refuse one that would
    grow past MAX_INFLATED before that happens (a 1 MB file can hold a gigabyte of frames)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    if DeflatedExplicitVRLittleEndian.encode() not in data[:4096]:
        return
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise BadImage("deflated DICOM without the standard file header: cannot be read safely")
    start = 144 + int.from_bytes(data[140:144], "little")  # after the file meta group, whose length is at 140
    inflater, rest, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    while rest and total <= MAX_INFLATED:  # counted 16 MB at a time, nothing kept
        try:
            total += len(inflater.decompress(rest, 16 * 2**20))
        except zlib.error as exc:
            raise BadImage(f"deflated DICOM whose data does not inflate ({exc})") from None
        rest = inflater.unconsumed_tail
    if total > MAX_INFLATED:
        raise BadImage(f"deflated DICOM that inflates past {MAX_INFLATED // 2**20} MB (a decompression bomb?)")


def _decode_dicom(data: bytes) -> Decoded:
    import pydicom

    try:
        _check_inflation(data)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except BadImage:
        raise
    except Exception as exc:
        raise BadImage(f"unreadable DICOM ({exc})"[:300]) from None
    if "PixelData" not in ds:
        raise BadImage("DICOM file without pixel data (a report or structured document?)")
    try:
        _infer_transfer_syntax(ds)
        _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), deep=int(ds.get("BitsAllocated", 8)) > 8)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        who = {"patient": str(ds.get("PatientID", "") or "").strip() or None,
               "study": str(ds.get("StudyInstanceUID", "") or "").strip() or None}
    except BadImage:
        raise
    except Exception as exc:  # a damaged header: values of the wrong type or form
        raise BadImage(f"unreadable DICOM header ({type(exc).__name__}: {exc})"[:300]) from None
    note = f"multi-frame DICOM: first of {n_frames} frames used" if n_frames > 1 else None
    return Decoded(Image.fromarray(_dicom_picture(ds)).convert("RGB"), note, **who)


def _dicom_picture(ds) -> np.ndarray:
    """The first frame as uint8 grayscale (H, W) or RGB (H, W, 3), or BadImage saying why not."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    try:
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        # Frame 0 only, decoded on its own (a 2,000-frame cine is not read whole). pydicom 3 returns YBR_FULL
        # and YBR_FULL_422 (JPEG from ultrasound and endoscopy) already as RGB: converting again turns red green.
        frame = pixel_array(ds, index=0, as_rgb=True)
    except MemoryError:
        raise BadImage("DICOM pixel data too large to decode in this machine's memory") from None
    except Exception as exc:
        from pydicom.uid import UID

        syntax = ds.file_meta.get("TransferSyntaxUID")
        if isinstance(syntax, UID) and syntax.is_transfer_syntax and syntax.is_compressed:
            raise BadImage(f"compressed DICOM ({syntax.name}) that no installed decoder can read "
                           f"(install pylibjpeg with its plugins, or python-gdcm)") from None
        raise BadImage(f"DICOM pixel data cannot be decoded ({exc})"[:300]) from None
    try:
        if photometric.startswith("MONOCHROME"):
            pixels = apply_modality_lut(frame, ds)
            if "WindowCenter" in ds or "VOILUTSequence" in ds:
                pixels = apply_voi_lut(pixels, ds, index=0)
            gray = _to_uint8(np.asarray(pixels))
            return 255 - gray if photometric == "MONOCHROME1" else gray  # MONOCHROME1: high values are dark
        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds)  # indices -> the palette's RGB
            # The entries' depth is the descriptor's third value (8 or 16), not the array's: 8-bit entries are
            # often stored in 16-bit words.
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds \
                else 8 * frame.dtype.itemsize
            if frame.dtype != np.uint8:
                frame = (frame.astype(np.float32) * (255 / (2 ** bits - 1)) + 0.5).clip(0, 255).astype(np.uint8)
    except Exception as exc:
        raise BadImage(f"DICOM pixel data cannot be shown ({type(exc).__name__}: {exc})"[:300]) from None
    rgb = np.asarray(frame)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise BadImage(f"DICOM colour data of shape {rgb.shape} with {photometric}: not an RGB picture")
    return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb)
