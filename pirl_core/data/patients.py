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


def pseudonyms(ws_salt: bytes, patient: str | None, study: str | None) -> tuple[str | None, str | None]:
    """What an import keeps of an image's DICOM PatientID and StudyInstanceUID: their pseudonyms (None where the
    header has none). Hashing preserves which images share a patient or a study, all `group` needs."""
    return (hashed(ws_salt, "id:" + patient) if patient else None,
            hashed(ws_salt, "study:" + study) if study else None)


def anonymised(distinct_patients: int, distinct_studies: int) -> bool:
    """One patient id for the images of several studies: the id was anonymised to one value for the whole set."""
    return distinct_patients == 1 and distinct_studies > 1


def group(patient: str | None, study: str | None, anonymised_ids: bool) -> str | None:
    """One image's group from its pseudonyms: its patient, or its study where the patient id is missing or
    anonymised; None for an image with neither (a PNG)."""
    return study if (anonymised_ids or not patient) else patient


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
