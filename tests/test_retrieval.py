import json

import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from pirl_core.data import ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.evaluation import neighbours
from pirl_core.jobs import queue
from pirl_core.search import vectors
from tests.conftest import ROOT, assert_no_exception, uploader, wait_for_app


def test_known_vectors_give_known_neighbours_across_blocks():
    v = F.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.7, 0.7]]), dim=1)
    s, i = vectors.topk(v, v[:1], 3)
    assert i[0].tolist() == [0, 1, 4]
    s, i = vectors.topk(v, v[:1], 2, exclude=torch.tensor([0]))
    assert i[0].tolist() == [1, 4] and s[0, 0] == pytest.approx(float(v[0] @ v[1]))


def test_knn_agreement_on_a_constructed_set():
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.tensor([1.0, 0, 0]) + 0.05 * torch.randn(20, 3, generator=gen), dim=1)
    b = F.normalize(torch.tensor([0, 1.0, 0]) + 0.05 * torch.randn(20, 3, generator=gen), dim=1)
    vecs = torch.cat([a, b])
    assert vectors.knn_agreement(vecs, ["a"] * 20 + ["b"] * 20, k=5) == 1.0
    assert vectors.knn_agreement(vecs, (["a", "b"] * 20), k=5) < 0.7


def test_duplicates_found_without_a_full_matrix_and_straddles_flagged():
    gen = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(300, 64, generator=gen), dim=1)
    v[250] = v[10]  # planted duplicate
    v[120] = F.normalize(v[7] + 0.01 * torch.randn(64, generator=gen), dim=0)
    pairs = vectors.near_duplicates(v, 0.98, block=64)
    assert {(i, j) for i, j, _ in pairs} == {(10, 250), (7, 120)}
    rows = [{"orig_name": f"{n}.png", "split": "train"} for n in range(300)]
    rows[250]["split"] = "test"
    space = neighbours.Space(1, "features", 1, list(range(300)), v, None, 32)
    flagged = {(p["a"], p["b"]): p["leak"] for p in neighbours.duplicate_pairs(space, rows, 0.98)}
    assert flagged == {("10.png", "250.png"): True, ("7.png", "120.png"): False}


@pytest.fixture(scope="module")
def run(demo_dir, tmp_path_factory):
    import shutil

    import numpy as np
    from PIL import Image

    from pirl_core.workspace.folder import Workspace

    root = tmp_path_factory.mktemp("explore")
    data = root / "labeled"
    shutil.copytree(demo_dir / "labeled", data)
    original = sorted((data / "benign").glob("*.png"))[0]
    twin = np.array(Image.open(original))
    twin[0, 0] = 255 - twin[0, 0]  # other bytes, same picture: a planted near-duplicate
    Image.fromarray(twin).save(data / "benign" / "twin.png")
    ws = Workspace(root / "ws")
    ds = ingest.ingest(ws, sources.folder_source(data, check_roots=False), "lab", folder_labels=True).dataset_id
    job = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1, batch_size=8).to_dict(), ds,
                      start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    return ws, job


def test_a_dataset_image_finds_itself_first_and_upload_matches_training_preprocessing(run, demo_dir):
    ws, job = run
    space = neighbours.load_space(ws, job, "features")
    rows = ws.store.images(space.dataset_id)
    target = rows[5]
    data = (demo_dir / "labeled" / target["orig_name"]).read_bytes()
    query = neighbours.embed_image(space, data, target["orig_name"])
    assert torch.allclose(query, space.vectors[5], atol=1e-4)  # same vector as the training-cache path
    hits = neighbours.search(space, query, 3)
    assert hits[0]["image_id"] == target["id"] and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    bank = neighbours.load_space(ws, job, "bank")
    assert bank.vectors.shape == (25, 128)
    assert neighbours.search(bank, 0, 4)[0]["position"] != 0  # the query itself is excluded


def test_cli_search_and_duplicates(run, demo_dir, capsys):
    from pirl_core.cli import main

    ws, job = run
    target = ws.store.images(ws.store.job(job)["dataset_id"])[3]
    assert main(["-w", str(ws.root), "search", str(demo_dir / "labeled" / target["orig_name"]), "--pretrain",
                 str(job), "-k", "3", "--space", "features"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["file"] == target["orig_name"] and len(hits) == 3
    assert main(["-w", str(ws.root), "duplicates", "--pretrain", str(job), "--threshold", "0.999"]) == 0
    pairs = json.loads(capsys.readouterr().out)
    assert [{p["a"], p["b"]} for p in pairs] == [{"benign/benign_00000.png", "benign/twin.png"}]


def test_explore_page_pick_an_image_and_see_neighbours(run, monkeypatch):
    ws, job = run
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    at = AppTest.from_file(str(ROOT / "app_pages/explore.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.metric[0].label == "kNN agreement (k = 10)"
    first = ws.store.images(ws.store.job(job)["dataset_id"])[0]
    at.button(key=f"ex-q-{first['id']}").click().run()
    assert not at.exception
    from app_pages._shared import plain

    assert any(plain(first["orig_name"]) in c.value for c in at.caption)  # Markdown-escaped, shown as typed
    assert any("Cosine similarity" in c.value for c in at.caption)
    # neighbour tiles name their file; near-copies show side by side with their similarity
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    tiles = [c for c in captions if c.startswith("#1 ·")]
    assert tiles and "png" in tiles[0], captions
    assert "what PIRL remembered of each image" in at.radio(key="ex-space").options
    at.radio(key="ex-space").set_value("features").run()
    at.session_state["ex-tab"] = "Near-duplicates"
    at.run()
    at.slider(key="ex-dup-threshold").set_value(0.9).run()
    assert not at.exception and any(m.label == "similarity" for m in at.metric)


def test_explore_lists_the_pixel_copies_the_data_page_counts_whatever_the_representation_finds(run, monkeypatch):
    ws, job = run
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    dataset_id = ws.store.job(job)["dataset_id"]
    rows = ws.store.images(dataset_id)
    copies = neighbours.pixel_copy_pairs(ws, dataset_id, rows)
    assert {"twin.png"} <= {rows[p["position_a"]]["orig_name"].split("/")[-1] for p in copies} | {
        rows[p["position_b"]]["orig_name"].split("/")[-1] for p in copies}
    assert not any(p["leak"] for p in copies)  # the splits keep copies together
    at = AppTest.from_file(str(ROOT / "app_pages/explore.py"), default_timeout=120).run()
    assert not [s for s in at.slider if s.key == "ex-dup-threshold"]  # a hidden tab is not drawn
    at.session_state["ex-tab"] = "Near-duplicates"  # the visitor opens the tab
    at.run()
    at.slider(key="ex-dup-threshold").set_value(1.0).run()  # nothing is that alike in the representation
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**Copies in the pixels**: " + f"{len(copies)} pair(s)") for t in texts), texts
    assert [m.label for m in at.metric].count("pixel likeness") == min(12, len(copies))
    assert any("Why the two lists differ" in c.value for c in at.caption)


def test_explore_says_when_neighbours_come_from_an_approximate_index(run, monkeypatch):
    from pathlib import Path

    from pirl_core.search import index as search_index

    ws, job = run
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    monkeypatch.setattr(search_index, "EXACT_UP_TO", 10)
    neighbours._cache.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app_pages/explore.py"), default_timeout=120).run()
        assert not at.exception and not at.error
        assert any("Neighbours come from an approximate search over 25 vectors" in c.value for c in at.caption)
    finally:
        for kept in Path(ws.store.job(job)["checkpoint"]).parent.glob("index-*"):
            kept.unlink()
        neighbours._cache.clear()


@pytest.mark.browser
def test_explore_in_the_browser_pick_and_upload(run, app_server, page, tmp_path, demo_dir):
    ws, job = run
    server = app_server(ws.root)
    page.goto(server.url + "/explore")
    wait_for_app(page)
    page.get_by_role("button", name="Neighbours").first.click()
    page.get_by_text("Cosine similarity").wait_for(timeout=60_000)
    page.get_by_text("Upload an image").click()
    target = ws.store.images(ws.store.job(job)["dataset_id"])[7]
    uploader(page, "An image (PNG").set_input_files(
        str(demo_dir / "labeled" / target["orig_name"]))
    wait_for_app(page)
    page.get_by_text("Cosine similarity").wait_for(timeout=60_000)
    page.get_by_text("(uploaded)").wait_for()  # the uploaded query is shown
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)


@pytest.mark.browser
def test_clicking_a_point_on_the_map_makes_it_the_query(run, app_server, page):
    ws, job = run
    server = app_server(ws.root)
    page.goto(server.url + "/explore")
    wait_for_app(page)
    page.get_by_role("tab", name="Embedding map").click()
    point = page.locator(".js-plotly-plot .scatterlayer .point").first
    point.wait_for(timeout=60_000)
    point.scroll_into_view_if_needed()  # a point below the window's edge takes no click
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_for_app(page)
    page.get_by_text("Cosine similarity").wait_for(timeout=60_000)
    assert_no_exception(page)
    page.get_by_role("tab", name="Near-duplicates").click()
    page.get_by_text("Similarity at least").wait_for(timeout=10_000)
    assert_no_exception(page)


def test_a_run_whose_checkpoint_was_deleted_is_not_explores_default_and_is_named(run, monkeypatch, tmp_path):
    ws, job = run
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    source = ws.store.job(job)
    newer = ws.store.add_job("pretrain", source["config"], source["dataset_id"])  # newer: the default if usable
    ws.store.update_job(newer, status="succeeded", checkpoint=str(tmp_path / "deleted.pt"), result=source["result"])
    try:
        at = AppTest.from_file(str(ROOT / "app_pages/explore.py"), default_timeout=120).run()
        assert not at.exception and not at.error
        assert at.selectbox(key="ex-run").value == job and f"#{newer}" not in at.selectbox(key="ex-run").options
        assert any(f"#{newer}, whose checkpoint file was deleted" in c.value for c in at.caption)
    finally:
        ws.store.db.execute("DELETE FROM jobs WHERE id = ?", [newer])
