"""Mutated image files through every entry point that decodes what a user brings: does anything escape as
something other than "skipped, with the reason"?

Seeds: a PNG (8- and 16-bit), a JPEG, a TIFF, a BMP and DICOM files (8-bit, 16-bit, palette, multi-frame,
deflated). Each round flips, inserts, deletes or repeats bytes in one seed, then decodes it the three ways the
product does: `image_io.decode` (ingest) and `preprocess.cache_row` (the Predict page, an Explore upload and
`pirl predict`: the model's input). Anything but BadImage is printed with the mutated file kept in the output
folder. Prints rounds, rounds per second, outcomes and the peak memory; exits 1 when anything escaped.

    python bench/fuzz_decoders.py --minutes 3
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import resource
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from pirl_core.data import image_io, preprocess
from pirl_core.errors import BadImage


def _seeds() -> dict[str, bytes]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    picture = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    out = {}
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, fmt)
        out[f"seed.{suffix}"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray((rng.random((48, 64)) * 65535).astype(np.uint16)).save(buf, "PNG")
    out["seed16.png"] = buf.getvalue()

    def dicom(name, pixels, photometric, syntax=ExplicitVRLittleEndian, **extra):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
        meta.TransferSyntaxUID = syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.StudyInstanceUID = "FUZZ", generate_uid()
        ds.Rows, ds.Columns = pixels.shape[:2] if photometric == "RGB" else pixels.shape[-2:]
        ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
        ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
        if photometric == "RGB":
            ds.PlanarConfiguration = 0
        for k, v in extra.items():
            setattr(ds, k, v)
        ds.PixelData = pixels.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[name] = buf.getvalue()

    dicom("seed8.dcm", picture[..., 0], "MONOCHROME2")
    dicom("seed16.dcm", (rng.random((48, 64)) * 4095).astype(np.uint16), "MONOCHROME1",
          WindowCenter=2000, WindowWidth=3000)
    dicom("seedrgb.dcm", picture, "RGB")
    dicom("seedframes.dcm", np.stack([picture[..., 0]] * 4), "MONOCHROME2", NumberOfFrames=4)
    dicom("seeddeflated.dcm", picture[..., 0], "MONOCHROME2", syntax=DeflatedExplicitVRLittleEndian)
    lut = bytes(np.arange(256, dtype=np.uint16).astype("<u2").tobytes())
    dicom("seedpalette.dcm", picture[..., 0], "PALETTE COLOR",
          RedPaletteColorLookupTableDescriptor=[256, 0, 16], GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
          BluePaletteColorLookupTableDescriptor=[256, 0, 16], RedPaletteColorLookupTableData=lut,
          GreenPaletteColorLookupTableData=lut, BluePaletteColorLookupTableData=lut)
    return out


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 4, 16))):
        i = rnd.randrange(len(b))
        op = rnd.random()
        if op < 0.5:
            b[i] = rnd.randrange(256)
        elif op < 0.65:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 8)))
        elif op < 0.8:
            del b[i:i + rnd.randrange(1, 64)]
        elif op < 0.9:
            b[i:i + 4] = rnd.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
        else:
            b = b[:i]
        if not b:
            b = bytearray(b"\x00")
    return bytes(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=0, help="stop after this many mutated files (0: --minutes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep files that escaped here (default: a temporary folder)")
    args = ap.parse_args()
    seeds = _seeds()
    for name, data in seeds.items():  # every seed decodes before mutation
        image_io.decode(data, name)
    out = Path(args.out or tempfile.mkdtemp(prefix="fuzz-"))
    rnd = random.Random(args.seed)
    outcomes: collections.Counter = collections.Counter()
    escaped = 0
    t0, rounds = time.time(), 0
    while (rounds < args.rounds) if args.rounds else (time.time() - t0 < args.minutes * 60):
        name = rnd.choice(list(seeds))
        data = _mutate(seeds[name], rnd)
        rounds += 1
        for entry, fn, extra in (("ingest", image_io.decode, ()), ("predict", preprocess.cache_row, (64,))):
            try:
                fn(data, name, *extra)
                outcomes[f"{entry}: decoded"] += 1
            except BadImage as exc:
                outcomes[f"{entry}: skipped ({str(exc).split(' (')[0][:40]})"] += 1
            except Exception:
                escaped += 1
                keep = out / f"escaped-{escaped}-{name}"
                keep.write_bytes(data)
                print(f"ESCAPED via {entry}: {keep}\n{traceback.format_exc(limit=3)}", flush=True)
    dt = time.time() - t0
    print(f"{rounds} mutated files in {dt:.0f} s ({rounds / dt:.0f}/s), {escaped} escaped as an error that is not "
          f"'skipped with a reason'; peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {v:6d}  {k}")
    raise SystemExit(1 if escaped else 0)


if __name__ == "__main__":
    main()
