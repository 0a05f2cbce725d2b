import io
import json
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from pirl_core.data import image_cache, ingest, sources
from pirl_core.data.image_io import decode
from pirl_core.data.splits import assign_splits
from pirl_core.errors import PirlError
from tests.dicom_files import make_dicom


def _png(size=(64, 64), color=(120, 60, 30), noise_seed=None) -> bytes:
    arr = np.full((size[1], size[0], 3), color, np.uint8)
    if noise_seed is not None:
        arr = np.random.default_rng(noise_seed).integers(0, 255, arr.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _png_header_only(width, height) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def bad_corpus(tmp_path):
    """Good images (odd names included) beside one bad file of every kind."""
    d = tmp_path / "corpus"
    d.mkdir()
    for i, name in enumerate(["plain.png", "with space (1).png", "ünïcode_é.png"]):
        (d / name).write_bytes(_png(noise_seed=i))
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (d / "good.jpg").write_bytes(jpeg.getvalue())
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (d / "notes.png").write_text("this is a text file, not an image")
    (d / "empty.png").write_bytes(b"")
    (d / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    (d / "tiny.png").write_bytes(_png(size=(8, 8)))
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1))
    make_dicom(d / "mono1.dcm", ramp, photometric="MONOCHROME1", bits=16)
    make_dicom(d / "mono2_window.dcm", ramp, bits=16, window=(2000, 4000))
    make_dicom(d / "multiframe.dcm", np.stack([ramp, ramp[::-1]]), bits=16, frames=2)
    make_dicom(d / "jpeg2000.dcm", ramp, compressed=True)
    (d / "dup.png").write_bytes((d / "plain.png").read_bytes())
    return d


EXPECTED_REASONS = {
    "truncated.jpg": "truncated",
    "notes.png": "not an image",
    "empty.png": "empty file",
    "bomb.png": "too large",
    "tiny.png": "too small",
    "jpeg2000.dcm": "compressed DICOM",
}


def test_each_bad_file_gets_its_own_reason_and_the_good_ones_are_imported(ws, bad_corpus):
    report = ingest.ingest(ws, sources.folder_source(bad_corpus, check_roots=False), "corpus")
    reasons = {s["name"]: s["reason"] for s in report.skipped}
    assert set(reasons) == set(EXPECTED_REASONS)
    for name, word in EXPECTED_REASONS.items():
        assert word in reasons[name], (name, reasons[name])
    assert report.imported == 7  # 4 good raster images + 3 readable DICOMs
    assert report.duplicates == [{"name": "plain.png", "same_as": "dup.png"}]
    assert any("multiframe.dcm: multi-frame DICOM: first of 2 frames used" in n for n in report.notes)
    names = {im["orig_name"] for im in ws.store.images(report.dataset_id)}
    assert {"with space (1).png", "ünïcode_é.png", "mono1.dcm"} <= names
    assert {s["name"] for s in ws.store.skipped(report.dataset_id)} == set(EXPECTED_REASONS)
    cache = image_cache.dataset_cache(ws, report.dataset_id)
    assert cache.shape == (7, 256, 256, 3)


def test_dicom_monochrome1_is_inverted_and_16_bit_scaled(bad_corpus):
    mono1 = np.asarray(decode((bad_corpus / "mono1.dcm").read_bytes(), "mono1.dcm").image)
    mono2 = np.asarray(decode((bad_corpus / "mono2_window.dcm").read_bytes(), "x.dcm").image)
    assert mono1.shape == (64, 64, 3) and mono1.dtype == np.uint8
    assert mono1[0, 0, 0] > 200 and mono1[0, -1, 0] < 50  # high raw values are dark in MONOCHROME1
    assert mono2[0, 0, 0] < 50 and mono2[0, -1, 0] > 200
    assert (mono1[..., 0] == mono1[..., 2]).all()  # grayscale made 3-channel


def test_reingest_changes_nothing_and_a_name_clash_is_refused(ws, demo_dir):
    files = list(sources.folder_source(demo_dir / "unlabeled", check_roots=False))
    first = ingest.ingest(ws, files, "pool")
    images_before = sorted(p.name for p in ws.images.rglob("*.png"))
    again = ingest.ingest(ws, files, "pool")
    assert again.unchanged and again.dataset_id == first.dataset_id and again.imported == 0
    assert len(ws.store.datasets()) == 1 and len(ws.store.images(first.dataset_id)) == first.imported
    assert sorted(p.name for p in ws.images.rglob("*.png")) == images_before
    with pytest.raises(PirlError, match="already exists with other images"):
        ingest.ingest(ws, files[:5], "pool")


def test_cancelled_ingest_leaves_nothing_behind(ws, demo_dir):
    files = sources.folder_source(demo_dir / "unlabeled", check_roots=False)
    calls = []
    with pytest.raises(ingest.Cancelled):
        ingest.ingest(ws, files, "pool", should_stop=lambda: calls.append(1) or len(calls) > 10)
    assert ws.store.datasets() == []
    assert list(ws.images.rglob("*.*")) == [] and list(ws.cache.glob("*")) == []


def test_crash_mid_ingest_leaves_no_half_dataset(ws, demo_dir, monkeypatch):
    files = sources.folder_source(demo_dir / "unlabeled", check_roots=False)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest.CacheWriter, "finish", boom)  # the last step inside the transaction
    with pytest.raises(RuntimeError):
        ingest.ingest(ws, files, "pool")
    assert ws.store.datasets() == [] and ws.store.db["images"].count == 0


def test_zip_unsafe_entries_refused_and_zip_bomb_rejected(ws, tmp_path):
    z = tmp_path / "set.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("scans/a.png", _png(noise_seed=1))
        zf.writestr("../evil.png", _png(noise_seed=2))
        zf.writestr("/abs/evil2.png", _png(noise_seed=3))
        zf.writestr("__MACOSX/._a.png", b"junk")
    files, refused = sources.zip_source(z)
    assert [f.name for f in files] == ["scans/a.png"]
    reasons = {r["name"]: r["reason"] for r in refused}
    assert set(reasons) == {"../evil.png", "/abs/evil2.png", "__MACOSX/._a.png"}
    assert "unsafe path" in reasons["../evil.png"] and "unsafe path" in reasons["/abs/evil2.png"]
    assert "hidden" in reasons["__MACOSX/._a.png"]  # listed, not left out in silence
    report = ingest.ingest(ws, files, "zipped", pre_skipped=refused)
    assert report.imported == 1 and len(report.skipped) == 3

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", b"\0" * 5_000_000)
    assert bomb.stat().st_size < 50_000
    with pytest.raises(PirlError, match="over the limit"):
        sources.zip_source(bomb, max_bytes=1_000_000)
    with pytest.raises(PirlError, match="files, over the limit"):
        sources.zip_source(z, max_files=2)


def test_server_folders_outside_the_allowed_roots_are_refused(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    monkeypatch.setenv("PIRL_DATA_ROOTS", str(tmp_path / "ok"))
    assert list(sources.folder_source(tmp_path / "ok")) == []
    with pytest.raises(PirlError, match="outside the folders"):
        sources.folder_source("/etc")
    with pytest.raises(PirlError, match="outside the folders"):
        sources.folder_source(tmp_path / "ok" / ".." / "..")


def test_folder_labels_give_a_stratified_fixed_split(ws, demo_dir):
    report = ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab",
                           folder_labels=True)
    assert report.labels == {"benign": 12, "malignant": 12}
    rows = ws.store.images(report.dataset_id)
    for label in ("benign", "malignant"):
        splits = [r["split"] for r in rows if r["label"] == label]
        assert {s: splits.count(s) for s in set(splits)} == {"train": 8, "val": 2, "test": 2}
    assert ws.store.dataset("lab")["kind"] == "labeled"


def test_csv_labels_with_groups_keep_each_group_in_one_split(ws, demo_dir, tmp_path):
    files = sources.folder_source(demo_dir / "unlabeled", check_roots=False)
    rng = np.random.default_rng(0)
    lines = ["filename,label,group"]
    for i, f in enumerate(files):
        lines.append(f"{f.name},{'malignant' if i % 3 == 0 else 'benign'},patient{rng.integers(12)}")
    lines.append("ghost.png,benign,patient99")
    report = ingest.ingest(ws, files, "grouped", labels_csv="\n".join(lines))
    assert any("1 file name(s) in the CSV match no imported image: ghost.png" in w for w in report.warnings)
    rows = ws.store.images(report.dataset_id)
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_stratification_holds_class_ratios():
    labels = ["a"] * 700 + ["b"] * 300
    splits = assign_splits(labels, [None] * 1000, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    for split, size in (("train", 700), ("val", 150), ("test", 150)):
        members = [lab for lab, s in zip(labels, splits) if s == split]
        assert abs(len(members) - size) <= 2
        assert abs(members.count("b") / len(members) - 0.3) < 0.02
    assert splits == assign_splits(labels, [None] * 1000, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)


def test_label_problems_are_clear_errors(ws, demo_dir):
    files = sources.folder_source(demo_dir / "unlabeled", check_roots=False)
    one_class = "filename,label\n" + "\n".join(f"{f.name},benign" for f in files)
    with pytest.raises(PirlError, match="at least 2 classes; found 1"):
        ingest.ingest(ws, files, "x", labels_csv=one_class)
    too_few = "filename,label\n" + "\n".join(f"{f.name},{'rare' if i < 2 else 'common'}" for i, f in enumerate(files))
    with pytest.raises(PirlError, match="rare has 2"):
        ingest.ingest(ws, files, "y", labels_csv=too_few)
    with pytest.raises(PirlError, match="columns filename,label"):
        ingest.ingest(ws, files, "z", labels_csv="name,class\na.png,b")
    assert ws.store.datasets() == []


def test_attach_labels_to_an_ingested_dataset_then_the_split_is_fixed(ws, demo_dir):
    files = list(sources.folder_source(demo_dir / "unlabeled", check_roots=False))
    ingest.ingest(ws, files, "pool")
    csv_text = "filename,label\n" + "\n".join(f"{f.name},{'m' if i % 2 else 'b'}" for i, f in enumerate(files[:40]))
    report = ingest.attach_labels(ws, "pool", csv_text)
    assert report.labels == {"b": 20, "m": 20}
    assert any("8 image(s) have no label" in w for w in report.warnings)
    with pytest.raises(PirlError, match="fixed split"):
        ingest.attach_labels(ws, "pool", csv_text)


def test_cli_ingest_prints_a_json_report_and_datasets_lists_it(ws, demo_dir, tmp_path, capsys):
    from pirl_core.cli import main

    data = tmp_path / "d"
    shutil.copytree(demo_dir / "labeled", data)
    (data / "benign" / "bad.png").write_text("nope")
    assert main(["--workspace", str(ws.root), "ingest", str(data), "--name", "lab", "--folder-labels"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == 24 and report["skipped"][0]["name"] == "benign/bad.png"
    assert main(["--workspace", str(ws.root), "datasets"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing[0]["name"] == "lab" and listing[0]["classes"] == {"benign": 12, "malignant": 12}
    assert listing[0]["skipped"] == 1


def test_cli_progress_in_a_log_file_is_a_few_plain_lines(ws, demo_dir):
    """stderr redirected to a file: no carriage-return bar per image, one line per interval and the last."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pirl_core.cli", "--workspace", str(ws.root), "ingest",
                             str(demo_dir / "unlabeled"), "--name", "pool"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("100.0% 48/48 images"), lines


def test_cache_writer_streams_rows_into_one_file_and_cleans_up_when_abandoned(tmp_path):
    from pirl_core.data.image_cache import CacheWriter, open_cache

    rows = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    with CacheWriter(tmp_path / "c.pngs", 8) as writer:
        for row in rows:
            writer.append(row)
        writer.finish()
    assert np.array_equal(open_cache(tmp_path / "c.pngs"), rows)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pngs"]

    with pytest.raises(ValueError, match="uint8"):
        with CacheWriter(tmp_path / "d.pngs", 8) as writer:
            writer.append(rows[0])
            writer.append(rows[0].astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pngs"]


def _scan(i: int) -> Image.Image:
    """A grey scan-like image: a smooth field with a bright blob and speckle, 300 x 220."""
    y, x = np.mgrid[0:220, 0:300]
    blob = np.exp(-((x - 100 - 9 * i) ** 2 + (y - 110) ** 2) / 900)
    field = 90 + 60 * np.sin(x / (25 + i)) * np.cos(y / 31) + 80 * blob
    speckle = np.random.default_rng(i).normal(0, 6, field.shape)
    return Image.fromarray(np.clip(field + speckle, 0, 255).astype(np.uint8))


def test_the_cache_keeps_every_pixel_in_a_fraction_of_the_bytes_and_older_array_caches_still_read(ws, tmp_path):
    from pirl_core.data import datasets

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(6):
        _scan(i).save(folder / f"scan_{i}.png")
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(folder / "rgb.png")
    report = ingest.ingest(ws, sources.folder_source(folder, check_roots=False), "scans")
    rows = ws.store.images(report.dataset_id)
    expected = np.stack([image_cache.square_resize(Image.open(folder / r["orig_name"]), 256) for r in rows])
    cache = image_cache.dataset_cache(ws, report.dataset_id)
    assert cache.shape == (7, 256, 256, 3)
    assert np.array_equal(np.asarray(cache), expected)  # lossless, colour rows too
    assert np.array_equal(cache[[4, 0]], expected[[4, 0]]) and np.array_equal(cache[1:3], expected[1:3])
    assert np.array_equal(cache[-1], expected[-1]) and np.array_equal(next(iter(cache)), expected[0])
    grey_bytes = datasets.disk_usage(ws, report.dataset_id)["caches"]
    assert grey_bytes < 0.5 * expected.nbytes  # the array format held 196,608 bytes an image
    with pytest.raises(IndexError):
        cache[7]

    # a workspace from before this format: its .npy caches are read, and adding images rewrites them
    for path in image_cache.cache_files(ws, report.dataset_id):
        path.unlink()
    np.save(ws.cache / f"dataset-{report.dataset_id}-256.npy", expected)
    assert np.array_equal(image_cache.dataset_cache(ws, report.dataset_id, 64)[2],
                          image_cache.resize_row(expected[2], 64))
    (tmp_path / "more").mkdir()
    _scan(7).save(tmp_path / "more" / "scan_7.png")
    ingest.add_to(ws, "scans", sources.folder_source(tmp_path / "more", check_roots=False))
    assert [p.name for p in image_cache.cache_files(ws, report.dataset_id)] == [f"dataset-{report.dataset_id}-256.pngs"]
    cache = image_cache.dataset_cache(ws, report.dataset_id)
    assert np.array_equal(cache[:7], expected) and cache.shape[0] == 8


def test_each_stage_of_an_ingest_works_alone(ws, demo_dir):
    """sources -> decoded images -> stored files -> labels and groups -> splits, each called on its own."""
    from pirl_core.data import sources

    files = list(sources.folder_source(demo_dir / "labeled", check_roots=False))
    first = files[0].read()
    files += sources.upload_source([("bad.png", b"not an image"), ("again.png", first)])
    report = ingest.Report("stages")
    decoded = list(ingest.decode_all(files, report))
    assert len(decoded) == 24 and decoded[0].row.shape == (image_cache.CACHE_SIZE, image_cache.CACHE_SIZE, 3)
    assert [s["name"] for s in report.skipped] == ["bad.png"]
    assert report.duplicates == [{"name": "again.png", "same_as": files[0].name}]

    stored = ingest.FileStore(ws)
    for d in decoded:
        stored.add(d)
    rows = list(stored.rows())
    paths = [ws.root / r["path"] for r in rows]
    assert len(stored) == 24 and all(p.exists() for p in paths)
    stored.close()  # never committed: what it wrote, and its staging, are gone again
    assert not any(p.exists() for p in paths) and list(ws.cache.iterdir()) == []

    names = [r["orig_name"] for r in rows]
    labels, groups = ingest.labels_and_groups(names, True, None, report)
    assert labels == [n.split("/")[0] for n in names] and groups == [None] * 24
    signatures = np.stack([ingest.duplicates.signature(d.row) for d in decoded])
    splits = ingest.split(labels, groups, signatures, names, 0, report)
    assert set(splits) == {"train", "val", "test"} and report.labels == {"benign": 12, "malignant": 12}


def _bytes_held_at_the_commit(ws, folder, name, monkeypatch) -> int:
    """Python memory an import holds once it has read every file (the rows wait for the one commit); the few rows
    still being encoded (a bounded number, but how many depends on the machine's load) written first."""
    import gc
    import tracemalloc

    held, commit = [], ingest.commit

    def measured(ws, report, stored, *rest):
        stored.writer.flush()
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
        return commit(ws, report, stored, *rest)

    monkeypatch.setattr(ingest, "commit", measured)
    tracemalloc.start()
    try:
        ingest.ingest(ws, sources.folder_source(folder, check_roots=False), name)
        return held[0]
    finally:
        tracemalloc.stop()


def test_an_archive_import_holds_nothing_in_memory_per_image(ws, tmp_path, monkeypatch):
    """Memory independent of the archive's size: the folder is listed as it is read and the rows wait on disk
    for the one commit (the listing and rows of a 10^7-file archive once needed 23 GB)."""
    sizes = {"small": 100, "large": 500}
    for label, n in sizes.items():
        for i in range(n):
            folder = tmp_path / label / f"{i // 50:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"scan_from_a_long_archive_path_{i:07d}.png").write_bytes(
                _png(size=(32, 32), color=(i % 256, i // 256, 7)))
    _bytes_held_at_the_commit(ws, tmp_path / "small", "warm-up", monkeypatch)  # what is made once, made
    held = {label: _bytes_held_at_the_commit(ws, tmp_path / label, label, monkeypatch) for label in sizes}
    per_image = (held["large"] - held["small"]) / (sizes["large"] - sizes["small"])
    assert per_image < 100, f"{per_image:.0f} bytes more an image"  # the rows held in memory: 3,292
    assert sorted(d["n_images"] for d in ws.store.datasets()) == [100, 100, 500]


def test_a_stored_file_removed_while_an_import_ran_is_read_again_from_its_folder(ws, demo_dir, monkeypatch):
    """Nothing of the listing is kept: a copy another (failed) import removed meanwhile is read from a new one."""
    import hashlib

    rows = ingest.FileStore.rows

    def meanwhile(self):
        for path in ws.images.rglob("*.*"):
            path.unlink()
        return rows(self)

    monkeypatch.setattr(ingest.FileStore, "rows", meanwhile)
    report = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    images = ws.store.images(report.dataset_id)
    assert report.imported == len(images) > 0
    assert all(hashlib.sha256((ws.root / im["path"]).read_bytes()).hexdigest() == im["content_hash"] for im in images)
