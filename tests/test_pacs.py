"""From a PACS: DICOMweb search and pull against a real Orthanc, patient-aware splits, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pirl_core.data import ingest, pacs, pacs_pull, sources
from pirl_core.errors import PirlError
from pirl_core.jobs import queue
from tests.dicom_files import make_dicom
from tests.orthanc import PASSWORD, USER, picture


@pytest.fixture
def configured(orthanc, tmp_path, monkeypatch):
    """The test Orthanc configured as [pacs.test], as a team server would have it."""
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path)))
    return pacs.server("test")


def test_search_pages_through_every_match_and_counts_them_before_anything_is_pulled(configured, orthanc):
    everything = pacs.search(configured, {"StudyDate": "20000101-20301231"}, page_size=2)  # 3 pages of 2
    assert everything.total == len(orthanc.expected["studies"]) == 5
    assert len({s.uid for s in everything.studies}) == 5
    ultrasound = pacs.search(configured, {"ModalitiesInStudy": "US"})
    assert ultrasound.total == 2 and all("US" in s.modalities for s in ultrasound.studies)
    assert pacs.search(configured, {"StudyDate": "20240101-20241231"}).total == 3
    assert pacs.search(configured, {"PatientID": "P1"}).total == 2
    assert pacs.search(configured, {"StudyDescription": "*chest*"}).total == 3  # matched here: Orthanc finds none
    assert pacs.search(configured, {"StudyDescription": "BREAST US", "ModalitiesInStudy": "US"}).total == 2
    assert pacs.search(configured, {"StudyDescription": "*knee*"}, page_size=2).total == 0
    row = ultrasound.studies[0].row()
    assert set(row) == {"study date", "modality", "description", "images"}  # no patient unless asked
    assert row["study date"] == "2023-06-10"
    shown = pacs.search(configured, {"ModalitiesInStudy": "US"}, show_patients=True).studies[0].row()
    assert shown["patient"].startswith(("P2", "P4")) and "Doe^" in shown["patient"]
    capped = pacs.search(configured, {"StudyDate": "20000101-20301231"}, page_size=2, max_studies=3)
    assert capped.truncated and capped.total == 3


def test_a_pull_imports_every_picture_names_the_rest_and_groups_images_by_patient(configured, orthanc, ws):
    job = pacs_pull.start(ws, pacs_pull.PullConfig("test", "pacs-pool", query={"StudyDate": "20000101-20301231"}))
    queue.run_worker(ws, idle_exit_s=0)
    row = ws.store.job(job)
    assert row["status"] == "succeeded", row["message"]
    outcome = queue.result_of(row)
    assert (outcome.studies, outcome.instances, outcome.downloaded) == (5, orthanc.expected["downloaded"], 12)
    ds = ws.store.dataset("pacs-pool")
    images = ws.store.images(ds["id"])
    assert len(images) == orthanc.expected["imported"]
    reasons = {s["reason"] for s in ws.store.skipped(ds["id"])}
    assert any("structured report" in r for r in reasons) and any("cannot be decoded" in r for r in reasons)
    assert any("first of 3 frames" in n for n in outcome.report["notes"])
    groups = [im["group_id"] for im in images]
    assert all(g and g.startswith("patient-") for g in groups) and len(set(groups)) == orthanc.expected["patients"]
    # Neither the patient ids, nor UIDs, nor credentials are stored anywhere in the workspace's database.
    db = (ws.root / "pirl.db").read_bytes()
    study_uid = orthanc.expected["studies"]["p1a"].encode()
    assert b"Doe^P1" not in db and study_uid not in db and PASSWORD.encode() not in db
    assert not any(im["orig_name"].count(".") > 1 for im in images)  # pseudonyms, not dotted UIDs
    assert not (queue.job_folder(ws, job) / "staged").exists()  # the staged copies are gone


def test_the_app_reaches_only_configured_servers_and_credentials_come_from_settings(configured, orthanc):
    with pytest.raises(pacs.PacsError, match="Only the PACS servers configured"):
        pacs.server("http://127.0.0.1:9/dicom-web")
    assert pacs.server(orthanc.url + "/").password == PASSWORD  # the configured server, by its URL
    assert "pacs-secret" not in configured.label and "test" in configured.label
    with pytest.raises(pacs.PacsError, match="No PACS named 'nope'"):
        pacs.server("nope")


def test_wrong_credentials_an_unreachable_server_and_an_empty_search_each_say_what_is_wrong(orthanc, tmp_path,
                                                                                         monkeypatch):
    wrong = pacs.Server("", orthanc.url, USER, "not-the-password")
    with pytest.raises(pacs.PacsError, match="refused the user name or password"):
        pacs.search(wrong, {"ModalitiesInStudy": "US"})
    with pytest.raises(pacs.PacsError, match="Cannot reach the PACS"):
        pacs.search(pacs.Server("", "http://127.0.0.1:9/dicom-web"), {})
    srv = pacs.Server("", orthanc.url, USER, PASSWORD)
    assert pacs.search(srv, {"ModalitiesInStudy": "MR"}).total == 0
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path)))
    from pirl_core.workspace.folder import Workspace

    with pytest.raises(pacs.PacsError, match="matches no study"):
        pacs_pull.pull(Workspace(tmp_path / "w"), pacs_pull.PullConfig("test", "mr", query={"ModalitiesInStudy": "MR"}),
                       tmp_path / "job")
    with pytest.raises(pacs.PacsError, match="Unknown search field"):
        pacs.parse_query("Modality=US&PatientsName=x")
    with pytest.raises(pacs.PacsError, match="not a DICOMweb address"):
        pacs.server("ftp://host/dicom-web", allow_any_url=True)


def test_a_trailing_slash_and_empty_url_prefixes_reach_the_same_service(orthanc, tmp_path, monkeypatch):
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path, url=orthanc.url + "/",
                                                                    qido_prefix="", wado_prefix="")))
    srv = pacs.server("test")
    assert srv.url == orthanc.url and srv.qido_prefix is None and srv.wado_prefix is None
    found = pacs.search(srv, {"ModalitiesInStudy": "US"})
    client = pacs.connect(srv)
    inst = pacs.instances(srv, client, found.studies[0].uid)[0]
    assert pacs.retrieve(srv, client, inst)[:4] in (b"\x02\x00\x02\x00", b"\x08\x00\x05\x00")


def test_a_server_that_stalls_mid_study_fails_clearly_and_the_resumed_pull_fetches_only_the_rest(orthanc, tmp_path,
                                                                                               ws, monkeypatch):
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path, timeout_s=1)))
    cfg = pacs_pull.PullConfig("test", "stalled", query={"StudyDate": "20240101-20241231"}, workers=1)
    folder, seen = tmp_path / "job", []

    def progress(fraction, message):
        seen.append(message)
        if " of " in message and message.startswith("3 of"):
            os.kill(orthanc.proc.pid, signal.SIGSTOP)  # the PACS stops answering after the third image

    try:
        with pytest.raises(pacs.PacsError, match="did not answer .* within 1 s"):
            pacs_pull.pull(ws, cfg, folder, progress)
    finally:
        os.kill(orthanc.proc.pid, signal.SIGCONT)
    staged = list((folder / "staged").rglob("*.dcm"))
    # 3 done when the PACS stopped; a 4th may have been answered already (one request is always in flight)
    assert 3 <= len(staged) <= 4 and ws.store.dataset("stalled") is None
    outcome = pacs_pull.pull(ws, cfg, folder)
    assert outcome.reused == len(staged) and outcome.downloaded == outcome.instances - len(staged)
    assert ws.store.dataset("stalled")["n_images"] == 7  # the 2024 studies: 2 + 2 + 3 chest images


def test_an_image_that_stops_arriving_partway_says_the_pacs_did_not_answer_not_that_it_cannot_be_reached():
    """The PACS sends the headers and the start of an image, then stalls: a slow server, not a wrong address (the
    stalled-pull test above met this race on a busy machine)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_then_stall():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b"
                     b"\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\nDICM")
        time.sleep(5)
        conn.close()

    threading.Thread(target=answer_then_stall, daemon=True).start()
    srv = pacs.Server("slow", f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web", timeout_s=1)
    inst = pacs.Instance("1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.7", "OT")
    with pytest.raises(pacs.PacsError, match="did not answer retrieving an image within 1 s"):
        pacs.retrieve(srv, pacs.connect(srv), inst)
    listener.close()


def test_pirl_ingest_dicomweb_killed_halfway_and_run_again_has_every_instance_once(orthanc, tmp_path):
    from pydicom.uid import generate_uid

    study = generate_uid()
    extra = [make_dicom(None, picture(1000 + i), patient="P9", study=study, modality="MG") for i in range(40)]
    for ds in extra:
        ds.StudyDate = "19990101"  # outside the dates the other tests search
    orthanc.store(extra)
    env = {**os.environ, "PIRL_PACS_USER": USER, "PIRL_PACS_PASSWORD": PASSWORD}
    env.pop("PIRL_PACS_CONFIG", None)
    cmd = [sys.executable, "-m", "pirl_core.cli", "-w", str(tmp_path / "w"), "ingest", "--dicomweb", orthanc.url,
           "--query", f"StudyInstanceUID={study}", "--name", "mammo", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staged = tmp_path / "w" / "uploads"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(staged.rglob("*.dcm"))) < 10:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(list(staged.rglob("*.dcm")))
    assert 10 <= first < 40, "the pull finished before it could be killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["instances"] == 40 and report["reused"] >= first and report["downloaded"] + report["reused"] == 40
    assert report["imported"] == 40 and not report["duplicates"]


def test_dicom_files_without_a_preamble_are_read_as_dicom(tmp_path, ws):
    folder = tmp_path / "old-modality"
    folder.mkdir()
    make_dicom(folder / "IM000001", picture(1), patient="A", preamble=False)
    make_dicom(folder / "IM000002", picture(2), patient="B")
    data = (folder / "IM000001").read_bytes()
    assert data[128:132] != b"DICM" and data[:2] == b"\x08\x00"
    report = ingest.ingest(ws, sources.folder_source(folder, check_roots=False), "old")
    assert report.imported == 2 and not report.skipped


def _labeled_dicom_folder(folder, patient_of):
    """Class sub-folders of DICOM files, several per patient."""
    for i, (label, patient, study) in enumerate(patient_of):
        (folder / label).mkdir(parents=True, exist_ok=True)
        make_dicom(folder / label / f"img{i:03d}.dcm", picture(i), patient=patient, study=study)


def test_patients_never_straddle_a_split_and_an_anonymised_patient_id_falls_back_to_the_study(tmp_path, ws):
    from pydicom.uid import generate_uid

    rows = [("benign" if p % 2 else "malignant", f"PAT{p}", None) for p in range(12) for _ in range(4)]
    _labeled_dicom_folder(tmp_path / "by-patient", rows)
    ingest.ingest(ws, sources.folder_source(tmp_path / "by-patient", check_roots=False), "by-patient",
                  folder_labels=True)
    images = ws.store.images(ws.store.dataset("by-patient")["id"])
    split_of: dict[str, set] = {}
    for im in images:
        split_of.setdefault(im["group_id"], set()).add(im["split"])
    assert len(split_of) == 12 and all(len(s) == 1 for s in split_of.values())
    assert {im["split"] for im in images} == {"train", "val", "test"}
    studies = [generate_uid() for _ in range(10)]
    _labeled_dicom_folder(tmp_path / "anon", [("a" if k % 2 else "b", "ANONYMOUS", studies[k]) for k in range(10)
                                              for _ in range(2)])
    ingest.ingest(ws, sources.folder_source(tmp_path / "anon", check_roots=False), "anon", folder_labels=True)
    groups = [im["group_id"] for im in ws.store.images(ws.store.dataset("anon")["id"])]
    assert len(set(groups)) == 10  # one group a study, not one for the whole set


def test_a_csv_group_wins_over_the_dicom_patient(tmp_path, ws):
    folder = tmp_path / "csv"
    folder.mkdir()
    for i in range(8):
        make_dicom(folder / f"x{i}.dcm", picture(i), patient=f"P{i}")
    csv = "filename,label,group\n" + "".join(f"x{i}.dcm,{'a' if i % 2 else 'b'},lesion{i // 4}\n" for i in range(8))
    ingest.ingest(ws, sources.folder_source(folder, check_roots=False), "csv", labels_csv=csv.encode())
    assert {im["group_id"] for im in ws.store.images(ws.store.dataset("csv")["id"])} == {"lesion0", "lesion1"}


def test_the_patient_count_warns_when_one_patient_holds_over_a_tenth_of_the_images():
    from pirl_core.data import patients

    many = patients.count([f"patient-{i}" for i in range(20)])
    assert many.patients == 20 and many.warning is None
    lopsided = patients.count(["patient-a"] * 5 + [f"patient-{i}" for i in range(15)] + [None, "lesion1"])
    assert lopsided.patients == 16 and "5 of the 20 images (25%)" in lopsided.warning
    assert patients.count(["lesion1", None]).patients == 0


def test_the_workspace_salt_makes_patient_groups_stable_within_and_different_across_workspaces(tmp_path):
    from pirl_core.data import patients
    from pirl_core.workspace.folder import Workspace

    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")

    def groups(ws):
        return [patients.group(*patients.pseudonyms(patients.salt(ws), p, s), False)
                for p, s in (("P1", "s1"), ("P2", "s2"))]

    first = groups(a)
    assert groups(a) == first and first[0] != first[1]
    assert groups(b) != first
    assert all("P1" not in g for g in first)
    assert patients.pseudonyms(patients.salt(a), None, None) == (None, None)


def test_a_pull_config_without_studies_or_a_search_is_refused():
    with pytest.raises(PirlError, match="Choose the studies"):
        pacs_pull.PullConfig("test", "x").validate()
    np.testing.assert_equal(len(pacs.parse_query("ModalitiesInStudy=US&StudyDate=20240101-20241231")), 2)


# -- the Data page's "From a PACS" tab ---------------------------------------------------------
def _data_page():
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    return AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60)


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def test_the_data_page_searches_the_pacs_pulls_the_matches_and_counts_the_patients(configured, orthanc, ws):
    at = _data_page().run()
    assert not at.exception
    _button(at, "Search").click().run()
    assert any("at least one search field" in e.value for e in at.error)  # never the whole PACS by accident
    at.text_input(key="pacs-modality").input("us")
    _button(at, "Search").click().run()
    assert not at.exception, at.exception
    assert any("**2 studies** match" in m.value for m in at.markdown)
    table = next(d for d in at.dataframe if "study date" in d.value.columns)
    assert "patient" not in table.value.columns and set(table.value["modality"]) <= {"US", "SR\\US", "US\\SR"}
    at.text_input(key="pacs-dataset").input("breast-us")
    _button(at, "Pull all 2 studies").click().run()
    assert not at.exception, at.exception
    assert any("queued" in s.value for s in at.success)
    job = ws.store.jobs("pacs_pull")[0]
    assert queue.config_of(job).query == {"ModalitiesInStudy": "US"} and PASSWORD not in json.dumps(job["config"])
    queue.run_worker(ws, idle_exit_s=0)
    at.run()
    at.selectbox(key="dataset").set_value("breast-us").run()
    assert not at.exception, at.exception
    assert ws.store.dataset("breast-us")["n_images"] == 4  # P2: 1 and the multi-frame; P4: 2 (and one cut short)
    assert any("**2 patients**" in m.value for m in at.markdown)
    assert any("One patient holds" in w.value for w in at.warning)  # 2 patients: each holds over a tenth
    assert any("images from 2 studies imported" in c.value for c in at.caption)


def test_the_pacs_tab_without_settings_says_how_to_configure_and_a_wrong_password_is_a_message(orthanc, ws, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(tmp_path / "none.toml"))
    at = _data_page().run()
    assert not at.exception
    assert any("No PACS is configured" in i.value for i in at.info)
    assert any("[pacs.radiology]" in c.value for c in at.code)
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path, password="wrong")))
    at = _data_page().run()
    at.text_input(key="pacs-modality").input("CR")
    _button(at, "Search").click().run()
    assert not at.exception
    assert any("refused the user name or password" in e.value for e in at.error)


def test_labels_from_a_header_attribute_make_a_labeled_set_split_by_patient(configured, orthanc, ws, tmp_path):
    from pirl_core.data import labels

    attribute, table = labels.header_rule("StudyDescription", "chest = chest x-ray, BREAST = breast ultrasound")
    cfg = pacs_pull.PullConfig("test", "by-description", query={"StudyDate": "20000101-20301231"},
                               label_attribute=attribute, label_map=table)
    outcome = pacs_pull.pull(ws, cfg, tmp_path / "job")
    assert outcome.report["labels"] == {"breast ultrasound": 4, "chest x-ray": 7}
    images = ws.store.images(ws.store.dataset("by-description")["id"])
    assert ws.store.dataset("by-description")["kind"] == "labeled"
    sides: dict[str, set] = {}
    for im in images:
        sides.setdefault(im["group_id"], set()).add(im["split"])
    assert len(sides) == 4 and all(len(s) == 1 for s in sides.values())
    with pytest.raises(PirlError, match="neither a DICOM keyword"):
        labels.header_rule("StudyDescriptionn", "a = b, c = d")
    with pytest.raises(PirlError, match="KEYWORD = class"):
        labels.header_rule("0011,1010", "malignant, BENIGN = benign")
    with pytest.raises(PirlError, match="at least two classes"):
        labels.header_rule("BodyPartExamined", "BREAST = breast")


def test_a_second_pull_into_a_pool_adds_only_the_studies_it_lacks(configured, orthanc, ws, tmp_path):
    from pirl_core.data.image_cache import dataset_cache

    first = pacs_pull.pull(ws, pacs_pull.PullConfig("test", "pool", query={"ModalitiesInStudy": "US"}),
                           tmp_path / "job1")
    assert ws.store.dataset("pool")["n_images"] == 4 and first.studies == 2
    small_before = dataset_cache(ws, first.dataset_id, 32).shape[0]  # a derived cache, made again after adding
    second = pacs_pull.pull(ws, pacs_pull.PullConfig("test", "pool", query={"StudyDate": "20000101-20301231"}),
                            tmp_path / "job2")
    assert second.studies == 3 and second.downloaded == 7  # the two US studies were not pulled again
    pool = ws.store.dataset("pool")
    assert pool["n_images"] == 11 == len(ws.store.images(pool["id"]))
    assert dataset_cache(ws, pool["id"]).shape[0] == 11 and dataset_cache(ws, pool["id"], 32).shape[0] == 11
    assert small_before == 4
    again = pacs_pull.pull(ws, pacs_pull.PullConfig("test", "pool", query={"StudyDate": "20000101-20301231"}),
                           tmp_path / "job3")
    assert again.downloaded == 0 and again.report["unchanged"]
    from pirl_core.engine.config import PretrainConfig

    queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1).to_dict(), pool["id"], start_worker=False)
    with pytest.raises(PirlError, match="has been pretrained on or labeled"):
        ingest.add_to(ws, "pool", [])
    with pytest.raises(PirlError, match="has been pretrained on or labeled"):  # before anything is fetched
        pacs_pull.pull(ws, pacs_pull.PullConfig("test", "pool", query={"ModalitiesInStudy": "MR"}), tmp_path / "j4")


@pytest.mark.browser
def test_search_select_one_study_and_pull_it_in_chromium(orthanc, app_server, page, tmp_path, monkeypatch):
    from tests.conftest import assert_no_exception, wait_for_app

    monkeypatch.setenv("PIRL_PACS_CONFIG", str(orthanc.config_file(tmp_path)))  # the server and its worker read it
    server = app_server(tmp_path / "ws")
    page.goto(server.url + "/data")
    wait_for_app(page)
    page.get_by_role("tab", name="From a PACS").click()
    page.get_by_role("textbox", name="Modality").fill("CR")
    page.get_by_role("button", name="Search").click()
    page.get_by_text("3 studies match").wait_for(timeout=60_000)
    wait_for_app(page)
    grid = page.get_by_test_id("stDataFrame").filter(has_text="study date").first
    grid.wait_for()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 18)  # the first row's selection box
    page.get_by_role("button", name="Pull the 1 study selected").wait_for(timeout=30_000)
    page.get_by_role("textbox", name="Into the dataset").fill("one-study")
    page.get_by_role("button", name="Pull the 1 study selected").click()
    page.get_by_text("images from 1 study imported", exact=False).wait_for(timeout=120_000)
    assert_no_exception(page)
    assert page.get_by_text("pacs-secret").count() == 0
    assert page.js_errors == []


def test_a_bearer_token_travels_as_an_authorization_header_and_never_in_the_label(tmp_path, monkeypatch):
    path = tmp_path / "secrets.toml"
    path.write_text('[pacs.cloud]\nurl = "https://pacs.example.org/dicom-web/"\ntoken = "tok-123"\n'
                    'wado_prefix = "/wado/"\n')
    monkeypatch.setenv("PIRL_PACS_CONFIG", str(path))
    srv = pacs.server("cloud")
    assert srv.wado_prefix == "wado" and srv.url == "https://pacs.example.org/dicom-web"
    client = pacs.connect(srv)
    assert client.session.headers["Authorization"] == "Bearer tok-123" and client.session.auth is None
    assert "tok-123" not in srv.label and "tok-123" not in repr(srv)
    path.write_text('[pacs.broken]\nusername = "x"\n')
    with pytest.raises(PirlError, match=r"\[pacs.broken\] .* needs a url"):
        pacs.servers()
    path.write_text('[pacs.creds]\nurl = "https://user:pw@pacs.example.org/"\n')
    with pytest.raises(PirlError, match="not in the address"):
        pacs.servers()
