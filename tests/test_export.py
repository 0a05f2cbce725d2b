import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch
from streamlit.testing.v1 import AppTest

from pirl_core.data.preprocess import model_input
from pirl_core.errors import PirlError
from pirl_core.evaluation import compare
from pirl_core.models import export
from tests.conftest import ROOT, assert_no_exception, compared_workspace, wait_for_app


@pytest.fixture(scope="module")
def finished(demo_dir, tmp_path_factory):
    ws, run, _, arms = compared_workspace(tmp_path_factory.mktemp("export") / "ws", demo_dir, folds=0, epochs=2)
    return ws, arms[1]["job_id"], run


def test_round_trip_predict_in_a_fresh_process_matches_the_workspace_model(finished, demo_dir, tmp_path):
    ws, job_id, _ = finished
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = export.export_finetune(ws, job_id, tmp_path / "bundle.zip")
    # the exporters torch supports (the dynamo ONNX exporter), not the deprecated TorchScript-based one
    deprecated = [str(w.message)[:120] for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))
                  and "torch" in w.filename]
    assert deprecated == []
    assert info["max_abs_prob_diff_onnx"] < 1e-4 and info["max_abs_prob_diff_torchscript"] < 1e-4
    files = sorted((demo_dir / "labeled").rglob("*.png"))[:6]
    env = {**os.environ, "PIRL_HOME": str(tmp_path / "other-workspace")}
    subprocess.run([sys.executable, "-m", "pirl_core.cli", "predict", "--model", str(tmp_path / "bundle.zip"),
                    *map(str, files), "--out", str(tmp_path / "p.csv")], check=True, env=env, cwd=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    model, state = export.load_classifier(ws.store.job(job_id)["result"]["model"])
    with torch.no_grad():
        for f, row in zip(files, rows):
            expected = torch.softmax(model(model_input(f.read_bytes(), f.name, state["image_size"])), 1)[0]
            got = [float(row[f"p_{c}"]) for c in state["classes"]]
            assert got == pytest.approx(expected.tolist(), abs=1e-5)  # stated tolerance: 1e-5 in probability
    assert ws.store.exports()[0]["path"] == str(tmp_path / "bundle.zip")


def test_bundle_holds_no_image_data_or_source_paths(finished, demo_dir, tmp_path):
    ws, job_id, _ = finished
    export.export_finetune(ws, job_id, tmp_path / "b.zip")
    names = [im["orig_name"] for im in ws.store.images(ws.store.dataset("lab")["id"])]
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert sorted(zf.namelist()) == sorted([*export.MEMBERS, "manifest.json", export.SIGNATURE])
        for member in zf.namelist():
            data = zf.read(member)
            assert not data.startswith((b"\x89PNG", b"\xff\xd8\xff"))
            for needle in [str(demo_dir), str(ws.root), sys.prefix, str(ROOT), *names[:10]]:
                assert needle.encode() not in data, (member, needle)  # nor the build's paths
        with zipfile.ZipFile(io.BytesIO(zf.read("model.ts"))) as ts:  # nor the image it was traced with
            assert not [n for n in ts.namelist() if "traced_inputs" in n or n.endswith(".debug_pkl")]
        card = json.loads(zf.read("model_card.json"))
    assert card["task"]["classes"] == ["benign", "malignant"] and "not a medical device" in card["intended_use"].lower()
    # the threshold chosen on the model's validation predictions, stated in the card
    assert card["decision_threshold"] == compare.decision_threshold(ws, job_id) is not None
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        md = zf.read("model_card.md").decode()
    assert f"at least {card['decision_threshold']['value']:.2f} (chosen on out-of-fold predictions" in md
    assert "{" not in md.split("## Use it")[0] and "[" not in md.split("## Use it")[0]  # no Python reprs
    assert "classes, in output order: benign, malignant" in md and "PIRL Studio " in md
    assert card["test_metrics"]["auc"] == card["test_metrics"]["auc"] and card["training_data"]["dataset_content_hash"]
    assert card["test_metrics"]["on"].startswith("its own test part (the fixed test split)")
    assert "images this model never trained on" in md and "| Positive class | malignant" in md
    assert card["training_data"]["labels"] == {"source": "imported with the images (class folders or a labels CSV)"}


def test_without_a_threshold_the_card_says_the_most_probable_class_decides(finished, tmp_path, monkeypatch):
    ws, job_id, _ = finished
    monkeypatch.setattr(export, "decision_threshold", lambda ws, job_id: None)  # too few validation images
    export.export_finetune(ws, job_id, tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert json.loads(zf.read("model_card.json"))["decision_threshold"] is None
        assert "| Decision | the most probable class |" in zf.read("model_card.md").decode()


def test_tampered_or_truncated_bundles_are_clear_errors(finished, tmp_path):
    ws, job_id, _ = finished
    good = tmp_path / "good.zip"
    export.export_finetune(ws, job_id, good)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PirlError, match="not a complete PIRL Studio bundle"):
        export.open_bundle(truncated)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "state_dict.pt":
                buf = io.BytesIO()
                state = torch.load(io.BytesIO(data), weights_only=True)
                state["state_dict"]["head.bias"] += 1
                torch.save(state, buf)
                data = buf.getvalue()
            dst.writestr(name, data)
    with pytest.raises(PirlError, match="state_dict.pt does not match the bundle's manifest"):
        export.open_bundle(tampered)


def _rewrite(src_zip, dst_zip, change):
    """Copy a bundle, letting `change(name, data)` return new bytes (or None to leave a member out)."""
    with zipfile.ZipFile(src_zip) as src, zipfile.ZipFile(dst_zip, "w") as dst:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
    return dst_zip


def _rehashed(name, data, members):
    """The manifest re-hashed over the changed members: what a deliberate tamperer does."""
    if name != "manifest.json":
        return members.get(name, data)
    manifest = json.loads(data)
    manifest["sha256"].update({k: hashlib.sha256(v).hexdigest() for k, v in members.items()})
    return json.dumps(manifest).encode()


def test_every_member_is_checked_and_a_missing_one_refused(finished, tmp_path):
    ws, job_id, _ = finished
    good = tmp_path / "good.zip"
    export.export_finetune(ws, job_id, good)
    flipped = _rewrite(good, tmp_path / "ts.zip", lambda n, d: d[:-10] + bytes(10) if n == "model.ts" else d)
    with pytest.raises(PirlError, match="model.ts does not match"):
        export.open_bundle(flipped)
    onnx = _rewrite(good, tmp_path / "onnx.zip", lambda n, d: d[:-5] + b"xxxxx" if n == "model.onnx" else d)
    with pytest.raises(PirlError, match="model.onnx does not match"):
        export.open_bundle(onnx)
    gone = _rewrite(good, tmp_path / "gone.zip", lambda n, d: None if n == "model.onnx" else d)
    with pytest.raises(PirlError, match="incomplete: missing model.onnx"):
        export.open_bundle(gone)


def test_a_signature_detects_a_rehashed_change_that_hashes_cannot(finished, tmp_path):
    from pirl_core.models import signing

    ws, job_id, _ = finished
    good = tmp_path / "good.zip"
    info = export.export_finetune(ws, job_id, good)
    key = info["public_key"]
    assert export.open_bundle(good, key)[1]["signature"].startswith("signed by the trusted key SHA256:")
    card = json.loads(zipfile.ZipFile(good).read("model_card.json"))
    card["test_metrics"]["auc"] = 0.99  # a better figure, re-hashed into the manifest
    changed = {"model_card.json": json.dumps(card).encode()}
    forged = _rewrite(good, tmp_path / "forged.zip", lambda n, d: _rehashed(n, d, changed))
    assert "integrity only" in export.open_bundle(forged)[1]["signature"]  # hashes alone cannot tell
    with pytest.raises(PirlError, match="signature does not match the trusted key"):
        export.open_bundle(forged, key)
    unsigned = _rewrite(good, tmp_path / "unsigned.zip", lambda n, d: None if n == export.SIGNATURE else d)
    with pytest.raises(PirlError, match="not signed"):
        export.open_bundle(unsigned, key)
    assert (ws.root / "keys" / signing.PRIVATE).stat().st_mode & 0o077 == 0  # the private key: owner only


def test_a_pickle_payload_or_a_wrong_class_count_is_a_clear_error(finished, tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    ws, job_id, _ = finished
    good = tmp_path / "good.zip"
    export.export_finetune(ws, job_id, good)
    buf = io.BytesIO()
    torch.save({"state_dict": Payload(), "classes": ["a", "b"], "backbone": "resnet18", "image_size": 32}, buf,
               pickle_module=pickle)
    evil = _rewrite(good, tmp_path / "evil.zip", lambda n, d: _rehashed(n, d, {"state_dict.pt": buf.getvalue()}))
    with pytest.raises(PirlError, match="other than tensors; refused"):
        export.open_bundle(evil)
    state = torch.load(io.BytesIO(zipfile.ZipFile(good).read("state_dict.pt")), weights_only=True)
    state["classes"] = ["a", "b", "c"]  # three names, a two-output head
    buf = io.BytesIO()
    torch.save(state, buf)
    wrong = _rewrite(good, tmp_path / "wrong.zip", lambda n, d: _rehashed(n, d, {"state_dict.pt": buf.getvalue()}))
    with pytest.raises(PirlError, match="weights do not fit the model"):
        export.open_bundle(wrong)


def test_backbone_export_is_a_torchvision_state_dict(finished, tmp_path):
    import torchvision

    ws, _, run = finished
    path = export.export_backbone(ws, run, tmp_path / "backbone.pth")
    state = torch.load(path, weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected


def test_the_predict_page_checks_a_bundles_signature_against_the_keys_the_workspace_trusts(finished, tmp_path,
                                                                                         monkeypatch):
    ws, job_id, _ = finished
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    bundle = tmp_path / "served.zip"
    export.export_finetune(ws, job_id, bundle)
    original = tmp_path / "original.zip"
    original.write_bytes(bundle.read_bytes())

    def predict_page():
        at = AppTest.from_file(str(ROOT / "app_pages/predict.py"), default_timeout=120)
        at.session_state["pr-model"] = f"bundle:{bundle}"
        return at.run()

    at = predict_page()
    assert not at.exception and not at.warning
    assert any("signed by a key this workspace trusts" in c.value for c in at.caption)
    card = json.loads(zipfile.ZipFile(bundle).read("model_card.json"))
    card["test_metrics"]["auc"] = 0.99  # changed on the server's disk, re-hashed into the manifest
    _rewrite(original, bundle, lambda n, d: _rehashed(n, d, {"model_card.json": json.dumps(card).encode()}))
    at = predict_page()
    assert not at.exception and any("does not trust, or changed after signing" in w.value for w in at.warning)
    _rewrite(original, bundle, lambda n, d: None if n == export.SIGNATURE else d)
    at = predict_page()
    assert any("not signed" in w.value for w in at.warning)


def test_export_page_builds_a_bundle(finished, monkeypatch):
    ws, job_id, _ = finished
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    at = AppTest.from_file(str(ROOT / "app_pages/export.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert "test AUC (95% CI)" in table.columns
    n_train = ws.store.job(job_id)["result"]["runs"][0]["n_train"]
    assert table.loc[table["job"] == job_id, "trained on"].item() == f"fixed split, {n_train} images"
    assert not any("torchvision-style" in e.label for e in at.expander)  # plain words
    at.selectbox(key="export-job").set_value(job_id)
    at.button(key="export-build").click().run()
    assert not at.exception
    assert any("Bundle ready" in s.value for s in at.success)


def test_visiting_the_export_page_does_not_send_the_bundle(finished, monkeypatch):
    """The bundle is read when Download is clicked, never on a visit (each visit once left a stuck download)."""
    from pathlib import Path

    ws, job_id, _ = finished
    bundle = Path(export.export_finetune(ws, job_id)["path"])
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    for _ in range(3):
        at = AppTest.from_file(str(ROOT / "app_pages/export.py"), default_timeout=120).run()
        assert not at.exception, at.exception
    assert bundle not in reads


@pytest.mark.browser
def test_download_button_delivers_a_zip_that_opens(finished, app_server, page, tmp_path):
    ws, job_id, _ = finished
    export.export_finetune(ws, job_id)
    server = app_server(ws.root)
    page.goto(server.url + "/export")
    wait_for_app(page)
    with page.expect_download(timeout=120_000) as dl:
        page.get_by_role("button", name="Download finetune-").click()
    target = tmp_path / "downloaded.zip"
    dl.value.save_as(target)
    with zipfile.ZipFile(target) as zf:
        assert "model_card.md" in zf.namelist() and zf.testzip() is None
    assert_no_exception(page)


def test_predictions_csv_cannot_carry_a_spreadsheet_formula(finished, demo_dir, tmp_path, monkeypatch):
    import shutil

    from pirl_core.cli import main

    ws, job_id, _ = finished
    bundle = export.export_finetune(ws, job_id, tmp_path / "bundle.zip")["path"]
    evil = tmp_path / "=HYPERLINK(1).png"
    shutil.copy(sorted((demo_dir / "labeled").rglob("*.png"))[0], evil)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", bundle, evil.name, "--out", "p.csv"]) == 0
    row = next(csv.DictReader(open(tmp_path / "p.csv")))
    assert row["file"] == "'=HYPERLINK(1).png"  # shown as text by a spreadsheet, never run
