"""The search index: approximate above a size, with its recall measured; kept on disk and rebuilt when stale."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pirl_core.errors import PirlError
from pirl_core.evaluation import neighbours
from pirl_core.search import index as search_index
from pirl_core.search import vectors
from pirl_core.search.index import VectorIndex


def clustered(n, dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(40, dim, generator=gen)
    return F.normalize(centres[torch.randint(0, 40, (n,), generator=gen)] + 0.7 * torch.randn(n, dim, generator=gen),
                       dim=1)


def test_above_the_crossover_an_ivf_index_finds_the_true_neighbours_at_its_measured_recall():
    x = clustered(4000)
    ivf = VectorIndex.build(x, exact_up_to=1000)
    assert ivf.info.kind == "ivf" and ivf.info.nlist > 1 and 1 <= ivf.info.nprobe <= ivf.info.nlist
    assert ivf.info.recall_at_10 >= search_index.RECALL_TARGET
    queries = x[:100]
    _, truth = VectorIndex.build(x).search(queries, 10)  # exact
    _, found = ivf.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])
    assert recall >= search_index.RECALL_TARGET - 0.03
    assert "approximate search over 4,000 vectors" in ivf.info.describe()


def test_excluding_the_query_drops_itself_even_when_an_exact_copy_ranks_first():
    x = clustered(50)
    x[7] = x[3]
    sims, ids = VectorIndex.build(x).search(x[[3, 5]], 4, exclude=torch.tensor([3, 5]))
    assert 3 not in ids[0].tolist() and 7 in ids[0].tolist() and 5 not in ids[1].tolist()
    assert ids.shape == (2, 4) and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_a_kept_index_is_used_only_for_the_vectors_and_version_it_was_built_from(tmp_path):
    x = clustered(3000)
    path = tmp_path / "index-bank-dataset1.faiss"
    VectorIndex.build(x, exact_up_to=100).save(path)
    kept, why = VectorIndex.load(path, x)
    info = json.loads(path.with_name(path.name + ".json").read_text())
    assert kept is not None and why == "" and kept.info.nprobe == info["nprobe"]
    assert kept.search(x[:1], 1)[1][0, 0] == 0
    moved = x.clone()
    moved[0] = moved[1]  # a resumed run: other vectors
    assert VectorIndex.load(path, moved) == (None, "the kept search index was built from other vectors "
                                                   "(the run was resumed or retrained)")
    path.with_name(path.name + ".json").write_text(json.dumps({**info, "version": 0}))
    kept, why = VectorIndex.load(path, x)
    assert kept is None and "older version" in why


def test_a_space_rebuilds_a_stale_kept_index_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(search_index, "EXACT_UP_TO", 500)
    path = tmp_path / "index-features-dataset1.faiss"
    x = clustered(2000)
    first, note = neighbours._kept_index(path, x)
    assert first.info.kind == "ivf" and path.exists() and note == ""
    y = clustered(2000, seed=1)  # the run was resumed: its vectors moved
    second, note = neighbours._kept_index(path, y)
    assert note == ("Search index rebuilt: the kept search index was built from other vectors "
                    "(the run was resumed or retrained).")
    assert second.search(y[5:6], 1, exclude=None)[1][0, 0] == 5  # right for the new vectors, not the old
    again, note = neighbours._kept_index(path, y)
    assert note == "" and again.info.fingerprint == second.info.fingerprint


def test_near_copies_above_the_crossover_come_from_a_range_search(monkeypatch):
    monkeypatch.setattr(vectors, "NEAR_COPY_EXACT_UP_TO", 500)
    x = clustered(3000, dim=64, seed=2)
    x[2500] = x[10]
    x[1200] = F.normalize(x[7] + 0.01 * torch.randn(64), dim=0)
    pairs = vectors.near_duplicates(x, 0.98)
    assert {(i, j) for i, j, _ in pairs} == {(10, 2500), (7, 1200)}
    monkeypatch.setattr(vectors, "NEAR_COPY_EXACT_UP_TO", 10_000)
    assert {(i, j) for i, j, _ in vectors.near_duplicates(x, 0.98)} == {(10, 2500), (7, 1200)}  # the exact scan


def test_the_map_places_every_point_when_fitted_on_a_sample_and_refuses_tsne_there(monkeypatch):
    monkeypatch.setattr(vectors, "MAP_POINTS", 100)
    x = clustered(400)
    coords = vectors.project(x, "pca")
    assert coords.shape == (400, 2) and np.isfinite(coords).all()
    with pytest.raises(PirlError, match="t-SNE takes minutes above 100 points; this space has 400"):
        vectors.project(x, "tsne")


def test_near_copies_among_many_vectors_are_found_in_a_projection_and_checked_on_the_full_vectors(monkeypatch):
    """Above the exact scan's size: the same pairs and similarities as the exact scan, though the 64-dimensional
    projection alone would also pair images that are merely alike (same cluster)."""
    import faiss

    from pirl_core.search import projected_pairs

    gen = torch.Generator().manual_seed(3)
    x = clustered(3000, dim=256, seed=3)
    x[2000:2300] = F.normalize(x[:300] + 0.02 * torch.randn(300, 256, generator=gen), dim=1)  # 300 planted copies
    exact = vectors.near_duplicates(x, 0.9, max_pairs=10**6)
    assert len(exact) >= 300
    monkeypatch.setattr(vectors, "NEAR_COPY_EXACT_UP_TO", 500)
    found = vectors.near_duplicates(x, 0.9, max_pairs=10**6)
    assert [(i, j) for i, j, _ in found] == [(i, j) for i, j, _ in exact]
    assert np.allclose([s for *_, s in found], [s for *_, s in exact], atol=1e-5)
    assert vectors.near_duplicates(x, 0.9, max_pairs=50) == found[:50]  # the most similar first

    pca = faiss.PCAMatrix(256, projected_pairs.PROJECTED_DIMS)
    pca.train(x.numpy())
    y = pca.apply(x.numpy())
    flat = faiss.IndexFlatL2(y.shape[1])
    flat.add(y)
    lims, _, _ = flat.range_search(y, 2 - 2 * 0.9)
    projected = (int(lims[-1]) - len(y)) // 2  # pairs within the radius in the projection, each once
    assert projected > 2 * len(exact)  # the check on the full vectors is what keeps them out
