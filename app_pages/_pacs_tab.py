"""The Data page's "From a PACS" tab: search a configured DICOMweb server, pull studies as a background job."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from app_pages._shared import STATUS_ICON, guarded, plain, show_job_failure, when
from pirl_core.data import labels, pacs, pacs_pull
from pirl_core.jobs import queue
from pirl_core.workspace.folder import Workspace

SETTINGS_EXAMPLE = """[pacs.radiology]
url = "https://pacs.example.org/dicom-web"
username = "pirl"          # or: token = "..."
password = "..."
"""


def _filters(modality: str, dates, body_part: str, description: str, patient_id: str) -> dict[str, str]:
    filters = {"ModalitiesInStudy": modality.strip().upper(), "BodyPartExamined": body_part.strip().upper(),
               "StudyDescription": description.strip(), "PatientID": patient_id.strip()}
    if dates and len(dates) == 2:
        filters["StudyDate"] = f"{dates[0]:%Y%m%d}-{dates[1]:%Y%m%d}"
    return {k: v for k, v in filters.items() if v}


def _studies(n: int) -> str:
    return f"{n:,} study" if n == 1 else f"{n:,} studies"


def search_form(servers: dict[str, pacs.Server]) -> None:
    with st.form("pacs-search"):
        name = st.selectbox("PACS", list(servers), format_func=lambda n: servers[n].label, key="pacs-server")
        c1, c2, c3 = st.columns(3)
        modality = c1.text_input("Modality", placeholder="e.g. US, CR, MG", key="pacs-modality")
        body_part = c2.text_input("Body part", placeholder="e.g. BREAST, CHEST", key="pacs-body-part")
        patient_id = c3.text_input("Patient ID", key="pacs-patient")
        c4, c5 = st.columns(2)
        description = c4.text_input("Study description (* matches anything)", placeholder="e.g. *CHEST*",
                                    key="pacs-description")
        today = dt.date.today()
        dates = c5.date_input("Study dates", value=(), min_value=dt.date(1980, 1, 1), max_value=today,
                              key="pacs-dates", help="Leave empty for any date; pick a first and a last day.")
        show_patients = st.checkbox("Show patient IDs and names in the results", key="pacs-show-patients",
                                    help="Off by default: the study list needs no one's name.")
        submitted = st.form_submit_button("Search", type="primary")
    if submitted:
        filters = _filters(modality, dates, body_part, description, patient_id)
        if not filters:
            st.error("Fill in at least one search field: a whole PACS is not pulled at once.")
            return
        with guarded("Search"), st.spinner(f"Searching {plain(servers[name].label)} ..."):
            st.session_state["pacs-found"] = (name, filters, pacs.search(servers[name], filters, show_patients))


def results(ws: Workspace) -> None:
    """The last search's studies (session state holds a search, never work), and the pull of some or all."""
    if "pacs-found" not in st.session_state:
        return
    name, filters, found = st.session_state["pacs-found"]
    if not found.total:
        st.info("No study matches this search. Widen it: fewer fields, a longer date range, or * in the "
                "description.")
        return
    st.markdown(f"**{_studies(found.total)}** match, holding {sum(s.instances for s in found.studies):,} images"
                + (f" (counting stopped at {pacs.MAX_STUDIES:,}: narrow the search)" if found.truncated else "")
                + ". Select rows to pull only those; with none selected, every match is pulled.")
    table = st.dataframe(pd.DataFrame([s.row() for s in found.studies]), hide_index=True, on_select="rerun",
                         selection_mode="multi-row", key="pacs-table")
    chosen = [found.studies[i].uid for i in table.selection.rows]
    with st.form("pacs-pull", enter_to_submit=False):
        dataset = st.text_input("Into the dataset", key="pacs-dataset", placeholder="e.g. breast-us-2024",
                                help="A new name makes a new dataset. The name of an unlabeled pool not yet "
                                     "pretrained on adds to it: studies it holds already are not pulled again.")
        st.caption("Labels from the header (optional), where your archive records the finding: an attribute, and "
                   "which keyword in it means which class. Images whose attribute holds none stay unlabeled.")
        c1, c2 = st.columns([1, 2])
        attribute = c1.text_input("DICOM attribute", placeholder="e.g. StudyDescription or 0011,1010",
                                  key="pacs-label-attribute")
        label_table = c2.text_input("Keyword = class, comma-separated", key="pacs-label-map",
                                    placeholder="e.g. MALIG = malignant, BENIGN = benign")
        submitted = st.form_submit_button(f"Pull the {_studies(len(chosen))} selected" if chosen else
                                          f"Pull all {_studies(found.total)}", type="primary")
    if submitted:
        with guarded("Pull"):
            everything = not chosen
            attribute, label_map = (labels.header_rule(attribute, label_table) if attribute or label_table
                                    else ("", []))
            cfg = pacs_pull.PullConfig(name, dataset.strip(), studies=[] if everything else chosen,
                                       query=filters if everything else {}, label_attribute=attribute,
                                       label_map=label_map)
            job = pacs_pull.start(ws, cfg)
            st.success(f"Pull #{job} queued: it runs in the background; follow it below.")


@st.fragment(run_every=2)
def pulls(ws: Workspace) -> None:
    jobs = ws.store.jobs("pacs_pull")
    if not jobs:
        return
    st.subheader("Pulls")
    for job in jobs[:5]:
        cfg, out = queue.config_of(job), queue.result_of(job)
        st.markdown(f"{STATUS_ICON.get(job['status'], '')} **Pull #{job['id']}** into **{plain(cfg.dataset)}** · "
                    f"{job['status']} · {when(job['created_at'])}")
        if job["status"] in queue.ACTIVE:
            st.progress(min(1.0, job["progress"] or 0.0), text=plain(job["message"] or "waiting for the worker"))
        elif job["status"] == "failed":
            show_job_failure(job)
        elif job["status"] == "succeeded":
            report = out.report
            st.caption(f"{report.get('imported', 0)} images from {_studies(out.studies)} imported; "
                       f"{len(report.get('skipped', []))} not usable (listed with the dataset); "
                       f"{out.reused} were already here from an earlier try.")
        else:
            st.caption(plain(job["message"] or ""))
        c1, c2, _ = st.columns([1, 1, 4])
        if job["status"] in queue.ACTIVE and c1.button("Cancel", key=f"pacs-cancel-{job['id']}"):
            with guarded("Cancel"):
                queue.cancel(ws, job["id"])
        if job["status"] in queue.RESUMABLE and c2.button("Resume", key=f"pacs-resume-{job['id']}",
                                                          help="Fetches only what is not here yet."):
            with guarded("Resume"):
                queue.resume(ws, job["id"])


def pacs_tab(ws: Workspace) -> None:
    with guarded("Reading the PACS settings"):
        servers = pacs.servers()
        if not servers:
            st.info("No PACS is configured. An administrator adds each DICOMweb server to "
                    "`.streamlit/secrets.toml` (or the file `PIRL_PACS_CONFIG` names) and restarts the app; "
                    "the app reaches no other server. Credentials stay in that file.",
                    icon=":material/lan:")
            st.code(SETTINGS_EXAMPLE, language="toml")
            st.caption("From a terminal: `pirl ingest --dicomweb URL --query 'ModalitiesInStudy=US' --name NAME`.")
        else:
            search_form(servers)
            results(ws)
    pulls(ws)
