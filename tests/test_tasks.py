import csv
import json

import pytest
from streamlit.testing.v1 import AppTest

from pirl_core.cli import main
from pirl_core.data import demo_data, ingest, sources, tasks
from pirl_core.errors import PirlError
from tests.conftest import ROOT


@pytest.fixture
def three_classes(ws, tmp_path):
    """A labeled set of 3 classes, 10 images each, two images a patient (the CSV's group)."""
    demo_data.generate(tmp_path / "demo", n=30, classes=3, unlabeled=0, size=48)
    files = sources.folder_source(tmp_path / "demo" / "labeled", check_roots=False)
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label", "group"])
        for i, src in enumerate(sorted(files, key=lambda s: s.name)):
            w.writerow([src.name, src.name.split("/")[0], f"patient-{i // 2}"])
    ingest.ingest(ws, files, "lesions", labels_csv=table)
    return ws


def test_one_class_against_the_rest_is_a_labeled_set_of_its_own_on_the_same_images(three_classes):
    ws = three_classes
    source = ws.store.dataset("lesions")
    before = {im["orig_name"]: (im["label"], im["split"]) for im in ws.store.images(source["id"])}
    stored = sorted(p.name for p in (ws.root / "images").rglob("*") if p.is_file())

    report = tasks.one_vs_rest(ws, "lesions", "malignant")

    made = ws.store.dataset("lesions · malignant vs rest")
    assert report.dataset_id == made["id"] and made["kind"] == "labeled"
    assert ws.store.class_counts(made["id"]) == {"malignant": 10, "not malignant": 20}
    assert made["info"]["positive"] == "malignant"
    assert made["info"]["task"]["rest"] == ["atypical", "benign"]
    images = ws.store.images(made["id"])
    assert {im["orig_name"]: im["label"] for im in images} == {
        name: "malignant" if label == "malignant" else "not malignant" for name, (label, _) in before.items()}
    by_patient = {}
    for im in images:  # a patient's two images share a split in the new set too
        by_patient.setdefault(im["group_id"], set()).add(im["split"])
    assert len(by_patient) == 15 and all(len(s) == 1 for s in by_patient.values())
    assert sorted(p.name for p in (ws.root / "images").rglob("*") if p.is_file()) == stored  # nothing copied
    assert {im["orig_name"]: (im["label"], im["split"]) for im in ws.store.images(source["id"])} == before


def test_a_two_class_task_refuses_what_cannot_be_asked(three_classes):
    ws = three_classes
    with pytest.raises(PirlError, match="'cancer' is not a class of 'lesions' \\(atypical, benign, malignant\\)"):
        tasks.one_vs_rest(ws, "lesions", "cancer")
    tasks.one_vs_rest(ws, "lesions", "benign")
    with pytest.raises(PirlError, match="exists already"):
        tasks.one_vs_rest(ws, "lesions", "benign")
    with pytest.raises(PirlError, match="two classes already: choose its positive class"):
        tasks.one_vs_rest(ws, "lesions · benign vs rest", "benign")
    assert tasks.rest_label("x", ["x", "not x"]) == "other than x"


def test_the_cli_sets_the_positive_class_or_makes_the_one_vs_rest_set(three_classes, capsys):
    assert main(["task", "--dataset", "lesions", "--positive", "atypical", "--vs-rest"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "lesions · atypical vs rest"
    assert report["labels"] == {"atypical": 10, "not atypical": 20}
    assert main(["task", "--dataset", "lesions · atypical vs rest", "--positive", "not atypical"]) == 0
    assert three_classes.store.dataset("lesions · atypical vs rest")["info"]["positive"] == "not atypical"
    assert main(["task", "--dataset", "lesions", "--positive", "nope", "--vs-rest"]) != 0
    assert "'nope' is not a class of 'lesions'" in capsys.readouterr().err


def test_the_data_page_makes_the_two_class_set_from_three_class_folders(three_classes):
    at = AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    dataset_id = three_classes.store.dataset("lesions")["id"]
    at.selectbox(key=f"vs-rest-class-{dataset_id}").set_value("malignant")
    next(b for b in at.button if b.label == "Make the two-class set").click().run()
    assert not at.exception, at.exception
    flash = " ".join(s.value.replace("\\", "") for s in at.success)  # user text is escaped Markdown
    assert "Made lesions · malignant vs rest: malignant (10 images), not malignant (20 images)" in flash, flash
    assert at.selectbox(key="dataset").value == "lesions · malignant vs rest"
    assert not [b for b in at.button if b.label == "Make the two-class set"]  # two classes: nothing to make
