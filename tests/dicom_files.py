"""DICOM files for the tests and the PACS benchmark, made with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def dataset(sop_class: str, syntax: str, patient: str, study: str | None, series: str | None,
            modality: str) -> Dataset:
    """A header with its file meta, patient, study and series; the pixel attributes are the caller's."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID, ds.PatientName = patient, f"Doe^{patient}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.StudyDate, ds.StudyDescription, ds.SeriesNumber, ds.InstanceNumber = "20240315", f"{modality} study", 1, 1
    return ds


def make_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", bits=16, frames=1, compressed=False,
               window=None, patient="P0", study=None, series=None, modality="OT", preamble=True) -> Dataset:
    multi = frames > 1 and modality == "US"
    ds = dataset(UltrasoundMultiFrameImageStorage if multi else SecondaryCaptureImageStorage,
                 JPEG2000Lossless if compressed else ExplicitVRLittleEndian, patient, study, series, modality)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    if compressed:
        ds.PixelData = encapsulate([b"\x00\x01" * 64])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    if path is not None:
        if preamble:
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
        else:  # the dataset alone, no preamble, no DICM, no file meta: how older modalities write
            del ds.file_meta
            pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return ds


def make_report(path, patient="P0", study=None) -> Dataset:
    """A basic text structured report: a DICOM instance with no picture."""
    ds = dataset(BASIC_TEXT_SR, ExplicitVRLittleEndian, patient, study, None, "SR")
    ds.ValueType, ds.ContentDate = "CONTAINER", "20240315"
    if path is not None:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return ds
