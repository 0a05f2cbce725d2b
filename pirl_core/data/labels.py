"""Labels and groups for an import: a filename,label[,group] CSV or class sub-folders, matched to the images.

A stage of an ingest (and of attaching labels later): the CSV is read and checked before any image is decoded,
so a problem (an ambiguous row, a class of one image) surfaces before minutes of work.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath

from ..errors import PirlError


def _text(data: bytes) -> str:
    """CSV bytes as text: UTF-8 (with or without its BOM), UTF-16 (as Excel's "Unicode text" saves it, with or
    without a BOM), else Windows-1252 as older spreadsheets save it."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ["utf-16"]
    elif len(data) >= 2 and data.count(b"\x00") > len(data) // 4:  # UTF-16 without a BOM: every other byte NUL
        encodings = ["utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"]
    else:
        encodings = ["utf-8-sig", "cp1252"]
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise PirlError("The labels CSV is not readable text (UTF-8, UTF-16 or Windows-1252): save it as "
                    "\"CSV UTF-8\" from your spreadsheet.")


def read_labels_csv(data: bytes | str | Path) -> dict[str, tuple[str, str | None]]:
    """filename -> (label, group) from a CSV with columns filename,label[,group] (bytes in UTF-8, UTF-16 or
    Windows-1252; or a path); two rows that give one file different labels are an error naming them."""
    if isinstance(data, str) and "\n" not in data and Path(data).is_file():
        data = Path(data)
    if isinstance(data, Path):
        if not data.is_file():
            raise PirlError(f"The labels CSV {data} does not exist or is not a file: check the path.")
        data = data.read_bytes()
    text = _text(data) if isinstance(data, bytes) else data
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if "filename" not in cols or "label" not in cols:
        raise PirlError(f"The labels CSV needs the columns filename,label (optionally group); it has "
                        f"{', '.join(cols) or 'none'}.")
    out: dict[str, tuple[str, str | None]] = {}
    conflicts = []
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        name = _csv_path(row["filename"])
        if name and row["label"]:
            entry = (row["label"], row.get("group") or None)
            if name in out and out[name] != entry:
                conflicts.append(f"{name} ({out[name][0]} / {entry[0]})")
            out[name] = entry
    if conflicts:
        raise PirlError(f"The labels CSV gives {len(conflicts)} file(s) two different labels or groups: "
                        + ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "") + ". Keep one row each.")
    if not out:
        raise PirlError("The labels CSV has no rows with both a filename and a label.")
    return out


def _csv_path(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix().removeprefix("./") if name else ""


def match_labels(names: list[str], table: dict[str, tuple[str, str | None]]) -> tuple[list, list, list[str]]:
    """Match CSV rows to images by their full relative path; a bare file name only where it names one image
    (a name that matches several is an error naming them). Returns labels, groups, unknown rows."""
    by_path = {n: i for i, n in enumerate(names)}
    by_base: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_base.setdefault(PurePosixPath(n).name, []).append(i)
    labels, groups = [None] * len(names), [None] * len(names)
    unknown, ambiguous = [], []
    for fname, (label, group) in table.items():
        if fname in by_path:
            hits = [by_path[fname]]
        else:
            hits = by_base.get(fname, []) if "/" not in fname else []
            if len(hits) > 1:
                ambiguous.append(f"{fname} ({', '.join(names[i] for i in hits[:3])})")
                continue
        if not hits:
            unknown.append(fname)
        for i in hits:
            labels[i], groups[i] = label, group
    if ambiguous:
        raise PirlError(f"{len(ambiguous)} file name(s) in the labels CSV match several images: "
                        + "; ".join(ambiguous[:5]) + ". Give the path inside the folder (e.g. benign/1.png).")
    return labels, groups, unknown


def check_labels(labels: list[str | None]) -> tuple[dict[str, int], list[str]]:
    """The class counts and the warnings the user should know; a PirlError for a set that cannot be split."""
    counts: dict[str, int] = {}
    for lab in labels:
        if lab is not None:
            counts[lab] = counts.get(lab, 0) + 1
    warnings = []
    missing = sum(1 for lab in labels if lab is None)
    if missing:
        warnings.append(f"{missing} image(s) have no label; they are kept for pretraining but not used "
                        f"for finetuning or evaluation.")
    if len(counts) < 2:
        raise PirlError(f"A labeled set needs at least 2 classes; found {len(counts)} "
                        f"({', '.join(counts) or 'none'}).")
    small = {c: n for c, n in counts.items() if n < 3}
    if small:
        raise PirlError("Each class needs at least 3 images (one each for train, validation and test): "
                        + ", ".join(f"{c} has {n}" for c, n in small.items()) + ".")
    few = {c: n for c, n in counts.items() if n < 20}
    if few:
        warnings.append("Few images in " + ", ".join(f"{c} ({n})" for c, n in few.items())
                        + ": test AUCs will have wide confidence intervals.")
    return dict(sorted(counts.items())), warnings


def folder_label(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    return parts[-2] if len(parts) > 1 else None


# -- labels from a DICOM header --------------------------------------------------------------
def _header_tag(attribute: str) -> int | None:
    """The tag a keyword (`StudyDescription`) or a written tag (`0011,1010`, `(0011,1010)`) names, or None."""
    from pydicom.datadict import tag_for_keyword

    digits = attribute.strip().strip("()").replace(",", "").replace(" ", "")
    if tag_for_keyword(attribute.strip()) is not None:
        return tag_for_keyword(attribute.strip())
    return int(digits, 16) if len(digits) == 8 and all(c in "0123456789abcdefABCDEF" for c in digits) else None


def header_rule(attribute: str, table: str) -> tuple[str, list[list[str]]]:
    """A DICOM attribute (keyword `StudyDescription`, or tag `0011,1010` for a private one) and the typed table
    `MALIG = malignant, BENIGN = benign` (commas or new lines) as (attribute, [[keyword, class], ...]). An image
    takes the class of the first keyword its attribute contains (case ignored); none: no label."""
    attribute = attribute.strip()
    if _header_tag(attribute) is None:
        raise PirlError(f"{attribute!r} is neither a DICOM keyword (e.g. StudyDescription, BodyPartExamined) nor a "
                        "tag like 0011,1010.")
    pairs = []
    for entry in table.replace("\n", ",").split(","):
        if not entry.strip():
            continue
        keyword, sep, label = entry.partition("=")
        if not sep or not keyword.strip() or not label.strip():
            raise PirlError(f"{entry.strip()!r}: write each class as KEYWORD = class, e.g. MALIG = malignant.")
        pairs.append([keyword.strip(), label.strip()])
    if len({label for _, label in pairs}) < 2:
        raise PirlError("Map the header to at least two classes (e.g. MALIG = malignant, BENIGN = benign).")
    return attribute, pairs


def header_label(path: str | Path, attribute: str, pairs: list[list[str]]) -> str | None:
    """The class `pairs` give the file's `attribute` (see `header_rule`), or None. Reads the header only, not
    the pixel data the import reads anyway."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001  (an unreadable file gets no label; the import names why it is skipped)
        return None
    element = ds.get(_header_tag(attribute))
    value = str(element.value if element is not None else "").upper()
    return next((label for keyword, label in pairs if keyword.upper() in value), None) if value else None


def labels_csv(rows) -> bytes:
    """(filename, label, group) rows as the filename,label,group CSV an import takes (a None group: none)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["filename", "label", "group"])
    writer.writerows(rows)
    return out.getvalue().encode()


def header_labels_csv(names: list[str], labels: list[str | None]) -> bytes:
    """The labels read from headers as the CSV an import takes."""
    return labels_csv((n, lab, None) for n, lab in zip(names, labels) if lab is not None)


# -- the positive class ------------------------------------------------------------------------
FINDINGS = ("malignan", "pneumonia", "disease", "abnormal", "cancer", "carcinoma", "tumor", "tumour", "melanoma",
            "fracture", "lesion", "positive", "covid", "effusion", "nodule", "mass", "patholog")
NEGATIONS = ("not", "non", "no", "without", "negative", "benign", "normal", "healthy")


def is_finding(label: str) -> bool:
    """A class named like a finding ("malignant", "pneumonia"), not its absence ("not malignant", "non-tumour")."""
    words = label.lower().replace("-", " ").replace("_", " ").split()
    return any(f in label.lower() for f in FINDINGS) and not any(w in NEGATIONS for w in words)


def positive_class(classes: list[str], chosen: str | None = None) -> str:
    """The class whose sensitivity, PPV, ROC and threshold the figures report: the user's choice; else the one
    class named like a finding; else the second in name order (what earlier releases used)."""
    classes = sorted(classes)
    if chosen in classes:
        return chosen
    findings = [c for c in classes if is_finding(c)]
    return findings[0] if len(findings) == 1 else classes[min(1, len(classes) - 1)]


def class_order(classes, chosen: str | None = None) -> list[str]:
    """Classes in model order: the positive class last (index 1 of two), the rest in name order."""
    positive = positive_class(list(classes), chosen)
    return [c for c in sorted(classes) if c != positive] + [positive]
