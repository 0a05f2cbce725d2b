"""A cosine-similarity index over L2-normalised vectors, through faiss.

Exact (a flat inner-product index) up to `EXACT_UP_TO` vectors; above it an inverted-file index:
k-means cells over a sample (`nlist` ~ 4 sqrt(N), at most 4,096), vectors stored as 16-bit floats
(half the memory of the vectors, scores within about 1e-3 of exact), and `nprobe`, the number of
cells a query visits, chosen at build time as the smallest that reaches `RECALL_TARGET` recall@10
against exact search, 200 of the indexed vectors as queries. The recall is measured, kept with the index and shown,
never assumed. `bench/scale.py` measures the crossover, the latency and the recall.

An index kept on disk carries a fingerprint of the vectors it was built from and this module's
`VERSION`; `load` returns None for a missing, stale or older index, and the caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from ..workspace.atomic import atomic_path

VERSION = 1
EXACT_UP_TO = 50_000  # above this an exact query costs over ~2 ms on 2 cores (bench/scale.py)
RECALL_TARGET = 0.97
MAX_CELLS = 4096
_PROBE_QUERIES = 200
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # the ladder every choice of nprobe climbs


@dataclass
class IndexInfo:
    kind: str  # "exact" or "ivf"
    count: int
    dim: int
    nlist: int = 0
    nprobe: int = 0
    recall_at_10: float = 1.0  # measured against exact search at build time
    fingerprint: str = ""
    version: int = VERSION

    def describe(self) -> str:
        if self.kind == "exact":
            return f"exact search over {self.count:,} vectors"
        return (f"approximate search over {self.count:,} vectors: {self.nprobe} of {self.nlist:,} cells a query, "
                f"{self.recall_at_10:.1%} of the true 10 nearest found (measured when the index was built)")


def fingerprint(vectors: np.ndarray) -> str:
    """What an index depends on: the vectors' shape and every byte of them."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(vectors.shape).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).data)
    return digest.hexdigest()


def _as_array(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    return np.ascontiguousarray(vectors, dtype=np.float32)


class VectorIndex:
    def __init__(self, index: faiss.Index, info: IndexInfo):
        self.index, self.info = index, info

    def __len__(self) -> int:
        return self.info.count

    @classmethod
    def build(cls, vectors: torch.Tensor | np.ndarray, exact_up_to: int | None = None, seed: int = 0) -> VectorIndex:
        """Exact up to `exact_up_to` vectors, IVF above, with nprobe set from measured recall."""
        x = _as_array(vectors)
        n, dim = x.shape
        info = IndexInfo("exact", n, dim)
        if n <= (EXACT_UP_TO if exact_up_to is None else exact_up_to):
            index = faiss.IndexFlatIP(dim)
            index.add(x)
            return cls(index, info)
        rng = np.random.default_rng(seed)
        nlist = int(min(MAX_CELLS, 4 * np.sqrt(n)))
        index = faiss.index_factory(dim, f"IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))])
        for start in range(0, n, 262_144):
            index.add(x[start:start + 262_144])
        info.kind, info.nlist, info.fingerprint = "ivf", nlist, fingerprint(x)  # only an IVF index is kept
        built = cls(index, info)
        built._choose_nprobe(x, rng)
        return built

    def _choose_nprobe(self, x: np.ndarray, rng: np.random.Generator) -> None:
        queries = x[rng.choice(len(x), min(len(x), _PROBE_QUERIES), replace=False)]
        _, truth = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        for nprobe in NPROBES:
            self.index.nprobe = nprobe
            _, found = self.index.search(queries, 10)
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
            if recall >= RECALL_TARGET or nprobe >= self.info.nlist:
                break
        self.info.nprobe, self.info.recall_at_10 = nprobe, recall

    def search(self, queries: torch.Tensor | np.ndarray, k: int,
               exclude: torch.Tensor | np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k cosine similarities and indices of each query (Q, D); `exclude` (Q,) drops one index per
        query (the query itself when it is in the index). Fewer than k hits are padded with index -1."""
        q = _as_array(queries)
        k = max(0, min(k, len(self) - (1 if exclude is not None else 0)))
        if k == 0 or len(q) == 0:
            return torch.zeros((len(q), k)), torch.zeros((len(q), k), dtype=torch.long)
        sims, ids = self.index.search(q, k + (1 if exclude is not None else 0))
        if exclude is not None:
            drop = np.asarray(exclude).reshape(-1, 1)
            hit = ids == drop
            # drop the excluded index where it was found, else the last (k+1-th) hit
            hit[~hit.any(1), -1] = True
            keep = ~hit
            sims = sims[keep].reshape(len(q), k)
            ids = ids[keep].reshape(len(q), k)
        return torch.from_numpy(np.ascontiguousarray(sims)), torch.from_numpy(ids.astype(np.int64))

    def save(self, path: Path) -> None:
        """The index and its info, each written whole (a reader never sees half a file)."""
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        with atomic_path(_info_path(path)) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self.info)))

    @classmethod
    def load(cls, path: Path, vectors: torch.Tensor | np.ndarray) -> tuple[VectorIndex | None, str]:
        """The index kept at `path` if it was built by this version from exactly these vectors; otherwise
        (None, why) so the caller rebuilds it and can say why."""
        if not path.exists() or not _info_path(path).exists():
            return None, "no search index was kept for these vectors yet"
        try:
            info = IndexInfo(**json.loads(_info_path(path).read_text()))
        except (ValueError, TypeError):
            return None, "the kept search index's description is unreadable"
        if info.version != VERSION:
            return None, f"the kept search index was built by an older version (format {info.version}, now {VERSION})"
        if info.fingerprint != fingerprint(_as_array(vectors)):
            return None, "the kept search index was built from other vectors (the run was resumed or retrained)"
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            return None, "the kept search index file is damaged"
        if info.kind == "ivf":
            index.nprobe = info.nprobe
        return cls(index, info), ""


def _info_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
