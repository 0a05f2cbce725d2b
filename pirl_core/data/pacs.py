"""A PACS over DICOMweb: the servers a team configured, study search (QIDO-RS), instance retrieval (WADO-RS).

Through `dicomweb-client` (a maintained client: multipart parsing, URL prefixes, retries), on a `requests`
session that carries the credentials. Servers come from `[pacs.NAME]` sections of a TOML file: `PIRL_PACS_CONFIG`,
else `.streamlit/secrets.toml` in the working folder, else `~/.streamlit/secrets.toml` (where Streamlit keeps its
secrets; read here with tomllib, so the library never imports streamlit)::

    [pacs.radiology]
    url = "https://pacs.example.org/dicom-web"
    username = "pirl"        # basic authentication, or
    token = "..."            # a bearer token
    qido_prefix = ""         # optional URL prefixes (empty = none)
    wado_prefix = ""
    timeout_s = 30

Credentials stay in that file and in memory: a job record, the database, the audit log and the pages carry the
server's name (or its URL) only. Every failure comes back as a `PacsError` that says what is wrong and what to do.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import PacsError

PAGE_SIZE = 500  # studies a search asks for at once; the total is counted by paging before anything is pulled
MAX_STUDIES = 100_000  # a search stops counting past this many and says so
DEFAULT_TIMEOUT_S = 30.0
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STUDY_FIELDS = ["StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "StudyDescription",
                "NumberOfStudyRelatedInstances"]
# Search fields a user may filter on (the form and `--query`); QIDO-RS study-level attributes.
FILTERS = {"ModalitiesInStudy", "StudyDate", "StudyDescription", "PatientID", "BodyPartExamined", "AccessionNumber",
           "StudyInstanceUID", "ReferringPhysicianName", "StudyID"}

# SOP classes that hold no picture a backbone can learn from, named in the report and never downloaded.
UNUSABLE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report (text, no picture)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state (display settings, no picture)",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform (ECG or audio, no picture)",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document (PDF or CDA, no picture)",
    "1.2.840.10008.5.1.4.1.1.66": "raw data, a registration or a segmentation (no picture)",
    "1.2.840.10008.5.1.4.1.1.481.": "a radiotherapy object (no picture)",
    "1.2.840.10008.5.1.4.1.1.2.1": "a 3-D volume (enhanced multi-frame CT): 2-D images only",
    "1.2.840.10008.5.1.4.1.1.4.1": "a 3-D volume (enhanced multi-frame MR): 2-D images only",
    "1.2.840.10008.5.1.4.1.1.130": "a 3-D volume (enhanced PET): 2-D images only",
    "1.2.840.10008.5.1.4.1.1.13.1.": "a 3-D volume (breast tomosynthesis or X-ray 3-D): 2-D images only",
}


@dataclass
class Server:
    name: str  # its [pacs.NAME]; "" for a URL typed at the command line
    url: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    qido_prefix: str | None = None
    wado_prefix: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def label(self) -> str:
        """How pages, reports and job records name it: never with credentials."""
        parts = urlsplit(self.url)
        bare = f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        return f"{self.name} ({bare})" if self.name else bare


def _config_file() -> Path | None:
    if os.environ.get("PIRL_PACS_CONFIG"):
        return Path(os.environ["PIRL_PACS_CONFIG"]).expanduser()
    for path in (Path.cwd() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"):
        if path.is_file():
            return path
    return None


def _normalised(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"{url!r} is not a DICOMweb address: it should look like https://pacs.example.org/dicom-web.")
    if parts.username or parts.password:
        raise PacsError("Put the user name and password in the server's settings, not in the address.")
    return url.rstrip("/")


def _prefix(value) -> str | None:
    value = (value or "").strip().strip("/")
    return value or None  # an empty prefix is no prefix (dicomweb-client refuses "")


def servers() -> dict[str, Server]:
    """The configured PACS servers by name (none: an empty dict)."""
    path = _config_file()
    if path is None or not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PacsError(f"The PACS settings in {path} cannot be read ({exc}). Fix the file and restart.") from None
    out = {}
    for name, entry in (data.get("pacs") or {}).items():
        if not isinstance(entry, dict) or not entry.get("url"):
            raise PacsError(f"[pacs.{name}] in {path} needs a url.")
        out[name] = Server(name, _normalised(entry["url"]), entry.get("username"), entry.get("password"),
                           entry.get("token"), _prefix(entry.get("qido_prefix")), _prefix(entry.get("wado_prefix")),
                           float(entry.get("timeout_s", DEFAULT_TIMEOUT_S)))
    return out


def server(name_or_url: str, allow_any_url: bool = False) -> Server:
    """A configured server by name; a URL only where `allow_any_url` (the command line): from the browser, the
    app reaches no host that an administrator did not configure. A URL takes a configured server's credentials
    when it is that server's, else PIRL_PACS_USER / PIRL_PACS_PASSWORD or PIRL_PACS_TOKEN."""
    known = servers()
    if name_or_url in known:
        return known[name_or_url]
    if "://" not in name_or_url:
        raise PacsError(f"No PACS named {name_or_url!r} is configured"
                        + (f" (configured: {', '.join(known)})." if known else
                           ". Add a [pacs.NAME] section to .streamlit/secrets.toml."))
    url = _normalised(name_or_url)
    for entry in known.values():
        if entry.url == url:
            return entry
    if not allow_any_url:
        raise PacsError("Only the PACS servers configured in .streamlit/secrets.toml can be searched from the app.")
    return Server("", url, os.environ.get("PIRL_PACS_USER"), os.environ.get("PIRL_PACS_PASSWORD"),
                  os.environ.get("PIRL_PACS_TOKEN"))


def connect(srv: Server):
    """A dicomweb-client for the server, its session carrying the credentials and retrying 429/503/504."""
    import requests
    from dicomweb_client.api import DICOMwebClient
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    session = requests.Session()
    retries = Retry(total=3, backoff_factor=0.5, status_forcelist=(429, 503, 504), allowed_methods=("GET",))
    session.mount("http://", HTTPAdapter(max_retries=retries))
    session.mount("https://", HTTPAdapter(max_retries=retries))
    if srv.token:
        session.headers["Authorization"] = f"Bearer {srv.token}"
    elif srv.username:
        session.auth = (srv.username, srv.password or "")
    client = DICOMwebClient(srv.url, session=session, qido_url_prefix=srv.qido_prefix,
                            wado_url_prefix=srv.wado_prefix, timeout=(min(10.0, srv.timeout_s), srv.timeout_s))
    client.set_http_retry_params(retry=False)  # the session's adapter retries; twice would be 9 attempts
    client.session = session  # for `retrieve`
    return client


@contextmanager
def asking(srv: Server, what: str):
    """Translate what `requests` and dicomweb-client raise into a PacsError a person can act on."""
    import requests

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise PacsError(f"The PACS {srv.label} refused the user name or password"
                            + (" (or this user may not read these studies)" if status == 403 else "")
                            + ". Check the credentials in its [pacs] settings.") from None
        if status == 404:
            raise PacsError(f"{srv.label} has no DICOMweb service at that address ({what}: not found). Check "
                            "the URL and its QIDO/WADO prefixes.") from None
        raise PacsError(f"The PACS {srv.label} answered {status} to {what}. Try again; if it persists, ask "
                        "its administrator.") from None
    except (requests.Timeout, requests.ConnectionError) as exc:
        if not isinstance(exc, requests.Timeout) and not _timed_out(exc):
            raise PacsError(f"Cannot reach the PACS at {srv.label}. Check the address, the port and that the "
                            "server is running.") from None
        raise PacsError(f"The PACS {srv.label} did not answer {what} within {srv.timeout_s:g} s. It may be busy: "
                        "try again (a pull resumes where it stopped), or raise timeout_s.") from None
    except (requests.RequestException, ValueError) as exc:
        raise PacsError(f"{what} on {srv.label} failed ({type(exc).__name__}: {exc}).") from None


def _timed_out(exc) -> bool:
    """A read that timed out reaches requests as a ConnectionError around urllib3's timeout: around the retries'
    last error when the answer never began, or bare when it stopped partway through the body."""
    from urllib3.exceptions import ReadTimeoutError

    cause = exc.args[0] if exc.args else None
    return isinstance(cause, ReadTimeoutError) or isinstance(getattr(cause, "reason", None), ReadTimeoutError)


def parse_query(text: str) -> dict[str, str]:
    """`ModalitiesInStudy=US&StudyDate=20240101-20241231` as search filters; an unknown field is refused by name."""
    filters = dict(parse_qsl(text.strip().lstrip("?"), keep_blank_values=False))
    unknown = sorted(set(filters) - FILTERS)
    if unknown:
        raise PacsError(f"Unknown search field(s): {', '.join(unknown)}. Known: {', '.join(sorted(FILTERS))}.")
    return filters


def _value(item: dict, keyword: str, default=None):
    from pydicom.datadict import tag_for_keyword

    entry = item.get(f"{tag_for_keyword(keyword):08X}", {})
    values = entry.get("Value") or []
    if not values:
        return default
    value = values[0]
    if isinstance(value, dict):  # a person name
        return value.get("Alphabetic", default)
    return "\\".join(map(str, values)) if len(values) > 1 else value


@dataclass
class Study:
    uid: str
    date: str
    modalities: str
    description: str
    instances: int
    patient: str | None = None  # only when the user asked to see patients

    def row(self) -> dict:
        date = f"{self.date[:4]}-{self.date[4:6]}-{self.date[6:8]}" if len(self.date) == 8 else self.date
        row = {"study date": date, "modality": self.modalities, "description": self.description,
               "images": self.instances}
        return {**row, "patient": self.patient} if self.patient is not None else row


@dataclass
class Search:
    studies: list[Study]
    truncated: bool = False  # more than MAX_STUDIES matched

    @property
    def total(self) -> int:
        return len(self.studies)


def search(srv: Server, filters: dict[str, str], show_patients: bool = False, page_size: int = PAGE_SIZE,
           max_studies: int = MAX_STUDIES, on_page=None) -> Search:
    """Every study matching `filters`, page by page (so 50,000 matches are counted before anything is pulled).
    The study description is matched here, on what the server returns (`*` for anything, case ignored): Orthanc's
    DICOMweb plugin (1.7, with Orthanc 1.10) answers a StudyDescription filter with no study, even an exact one."""
    client = connect(srv)
    fields = STUDY_FIELDS + (["PatientID", "PatientName"] if show_patients else [])
    described = filters.get("StudyDescription")
    asked = {k: v for k, v in filters.items() if k != "StudyDescription"}
    studies: list[Study] = []
    offset = 0
    with asking(srv, "the study search"):
        while len(studies) < max_studies:
            page = client.search_for_studies(offset=offset, limit=page_size, fields=fields, search_filters=asked)
            offset += len(page)
            for item in page:
                description = str(_value(item, "StudyDescription", ""))
                if described and not fnmatch.fnmatchcase(description.upper(), described.upper()):
                    continue
                patient = None
                if show_patients:
                    patient = " · ".join(str(v) for v in (_value(item, "PatientID"), _value(item, "PatientName"))
                                         if v) or "(none)"
                studies.append(Study(_value(item, "StudyInstanceUID", ""), str(_value(item, "StudyDate", "")),
                                     str(_value(item, "ModalitiesInStudy", "")), description,
                                     int(_value(item, "NumberOfStudyRelatedInstances", 0) or 0), patient))
            if on_page:
                on_page(len(studies))
            if len(page) < page_size:
                return Search(studies)
    return Search(studies[:max_studies], truncated=True)


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    sop_class: str
    modality: str

    @property
    def unusable(self) -> str | None:
        """Why this instance cannot be used, from its SOP class alone (nothing downloaded), or None."""
        return next((why for prefix, why in UNUSABLE_CLASSES.items() if self.sop_class.startswith(prefix)), None)


def instances(srv: Server, client, study_uid: str) -> list[Instance]:
    """The instances of one study, with their series, class and modality."""
    with asking(srv, "the instance list"):
        rows = client.search_for_instances(study_instance_uid=study_uid, get_remaining=True,
                                           fields=["SeriesInstanceUID", "SOPClassUID", "Modality"])
    return [Instance(study_uid, _value(r, "SeriesInstanceUID", ""), _value(r, "SOPInstanceUID", ""),
                     _value(r, "SOPClassUID", ""), _value(r, "Modality", "") or "OT") for r in rows]


def retrieve(srv: Server, client, inst: Instance) -> bytes:
    """One instance's file as the PACS stores it (a compressed transfer syntax stays compressed, and is decoded
    or named at import). Not dicomweb-client's `retrieve_instance`: it parses every part with a strict dcmread,
    which refuses an instance stored without the 128-byte preamble (its own `store_instances` writes them so, and
    Orthanc serves them byte for byte), then the dataset would be written again. The client's session (its
    credentials, and urllib3's retries) GETs the WADO-RS URL; requests-toolbelt splits the multipart answer."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    wado = f"/{srv.wado_prefix}" if srv.wado_prefix else ""
    url = f"{srv.url}{wado}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
    with asking(srv, "retrieving an image"):
        response = client.session.get(url, headers={"Accept": RETRIEVE_ACCEPT},
                                      timeout=(min(10.0, srv.timeout_s), srv.timeout_s))
        response.raise_for_status()
        parts = MultipartDecoder.from_response(response).parts
    if len(parts) != 1 or not parts[0].content:
        raise PacsError(f"The PACS {srv.label} sent {len(parts)} parts for one image.")
    return parts[0].content
