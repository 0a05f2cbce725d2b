"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, on a free loopback port, with a
temporary storage folder and a user/password. Under CI a missing Orthanc fails, never skips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from tests.dicom_files import make_dicom, make_report

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "pirl", "pacs-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, folder: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/dicom-web"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "PIRL-TEST", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "Plugins": [PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}, "StableAge": 1}))
        self.log = folder / "orthanc.log"
        self.proc = subprocess.Popen([ORTHANC, str(config)], stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     cwd=folder)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited early:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
            except urllib.error.HTTPError:  # 401: up, and asking for the password
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer in 60 s")

    def client(self):
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session_from_user_pass

        return DICOMwebClient(self.url, session=create_session_from_user_pass(USER, PASSWORD))

    def store(self, datasets) -> None:
        """STOW-RS, the way a modality or another PACS sends images."""
        self.client().store_instances(list(datasets))

    def config_file(self, folder: Path, **entry) -> Path:
        """A PACS settings file naming this server `test` (what .streamlit/secrets.toml holds on a team server)."""
        fields = {"url": self.url, "username": USER, "password": PASSWORD, **entry}
        path = folder / "pacs.toml"
        path.write_text("[pacs.test]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
        return path

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def picture(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - rng.uniform(16, size - 16)) ** 2 + (xx - rng.uniform(16, size - 16)) ** 2) / 120)
    return (blob * 3000 + rng.uniform(0, 600, (size, size))).astype(np.uint16)


def archive() -> tuple[list, dict]:
    """Four patients, two modalities (CR, US), five studies: one patient with two studies, a multi-frame
    ultrasound, a structured report and an instance whose pixel data is cut short. Returns the datasets and
    what the tests expect of them."""
    out, seed = [], 0

    def image(patient, study, modality, **kw):
        nonlocal seed
        seed += 1
        ds = make_dicom(None, picture(seed), patient=patient, study=study, modality=modality, **kw)
        ds.StudyDate = "20240315" if modality == "CR" else "20230610"
        ds.StudyDescription = "CHEST PA" if modality == "CR" else "BREAST US"
        return ds

    studies = {name: generate_uid() for name in ("p1a", "p1b", "p2", "p3", "p4")}
    for name, patient, modality, n in (("p1a", "P1", "CR", 2), ("p1b", "P1", "CR", 2), ("p2", "P2", "US", 1),
                                       ("p3", "P3", "CR", 3), ("p4", "P4", "US", 2)):
        out += [image(patient, studies[name], modality) for _ in range(n)]
    out.append(image("P2", studies["p2"], "US", frames=3))  # 3 frames, stored as (3, 64, 64)
    out[-1].PixelData = np.stack([picture(99)] * 3).tobytes()
    report = make_report(None, patient="P3", study=studies["p3"])
    report.StudyDate, report.StudyDescription = "20240315", "CHEST PA"
    out.append(report)
    broken = image("P4", studies["p4"], "US")
    broken.PixelData = broken.PixelData[:100]  # cut short: cannot be decoded
    out.append(broken)
    return out, {"studies": studies, "downloaded": 12, "imported": 11, "patients": 4}
