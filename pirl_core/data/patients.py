"""Patients as split groups: no patient on two sides of a split or fold.

Several images of one patient in both training and test inflate every AUC. For DICOM images the header says
who the patient is: PatientID, or the StudyInstanceUID where PatientID is empty or anonymised to one value for
the whole set. What is stored is a salted hash (`patient-1a2b3c4d5e6f`): enough to group, not to identify. The
salt is the workspace's own (a file in it), so the same patient hashes alike across imports of one workspace
and differently in another. A CSV `group` column still wins over the header.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass

from ..workspace.folder import Workspace

SALT_FILE = "patient-salt"
LARGEST_SHARE_WARNING = 0.10  # one patient holding more than a tenth of the images is worth a warning
PREFIX = "patient-"


def salt(ws: Workspace) -> bytes:
    """This workspace's salt, made once (exclusive create, so two imports at once agree on it)."""
    path = ws.root / SALT_FILE
    try:
        with open(path, "x") as f:
            f.write(secrets.token_hex(16))
    except FileExistsError:
        pass
    return bytes.fromhex(path.read_text().strip())


def hashed(ws_salt: bytes, value: str, prefix: str = PREFIX) -> str:
    """A pseudonym for `value` in this workspace: the same value, the same pseudonym; no way back."""
    return prefix + hashlib.sha256(ws_salt + value.encode()).hexdigest()[:12]


def groups(ws: Workspace, patients: list[str | None], studies: list[str | None]) -> list[str | None]:
    """One group per image: its hashed patient, or its hashed study where the patient id is missing or the
    same for every image of several studies (anonymised to one value); None for an image with neither (a PNG)."""
    distinct_patients = {p for p in patients if p}
    distinct_studies = {s for s in studies if s}
    anonymised = len(distinct_patients) == 1 and len(distinct_studies) > 1
    if not distinct_patients and not distinct_studies:
        return [None] * len(patients)
    key = salt(ws)
    out: list[str | None] = []
    for patient, study in zip(patients, studies):
        who = study if (anonymised or not patient) else patient
        out.append(hashed(key, ("study:" if who == study else "id:") + who) if who else None)
    return out


@dataclass
class PatientCount:
    """How many patients a set of images holds, and the largest one's share (for the Data page)."""

    patients: int
    images_with_patient: int
    largest: int

    @property
    def largest_share(self) -> float:
        return self.largest / self.images_with_patient if self.images_with_patient else 0.0

    @property
    def warning(self) -> str | None:
        if self.patients and self.largest_share > LARGEST_SHARE_WARNING:
            return (f"One patient holds {self.largest} of the {self.images_with_patient} images "
                    f"({self.largest_share:.0%}): results lean on that patient. Splits keep each patient on one "
                    "side, so the test set may hold few patients.")
        return None


def count(group_ids: list[str | None]) -> PatientCount:
    counts = Counter(g for g in group_ids if g and g.startswith(PREFIX))
    return PatientCount(len(counts), sum(counts.values()), max(counts.values(), default=0))
