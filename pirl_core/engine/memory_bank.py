"""The memory bank: one L2-normalised vector per training image, updated with momentum.

Negatives are drawn without replacement, never the positive, at most N - 1 per sample.
One shared draw of K + 1 indices serves the whole batch: for each sample the column equal to
its own index (if drawn) is dropped, else the spare last column is, so every row keeps K
distinct negatives that exclude its positive. Works for N = 10 and for N = 10^6 alike.

Near-copies (`copies`: a cluster id per image, duplicates.clusters) are not negatives of each other:
a re-exported scan is the same image, and pushing it away from its twin teaches the network to tell
copies apart by their noise. A row then keeps its K draws less its copies.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Negatives(NamedTuple):
    """K + 1 candidate bank indices shared by the batch, and which K of them each row keeps."""

    candidates: torch.Tensor  # (K + 1,)
    keep: torch.Tensor  # (B, K + 1) bool, exactly K True per row (fewer where near-copies were drawn)

    def indices(self) -> torch.Tensor:
        """(B, K) bank indices of each row's negatives (a bank without near-copies)."""
        b = self.keep.shape[0]
        return self.candidates.expand(b, -1)[self.keep].view(b, -1)


class MemoryBank:
    def __init__(self, vectors: torch.Tensor, ids: list, momentum: float = 0.5, normalized: bool = False,
                 copies: list[int] | torch.Tensor | None = None):
        if vectors.shape[0] != len(ids):
            raise ValueError(f"{vectors.shape[0]} bank vectors for {len(ids)} image ids")
        if copies is not None and len(copies) != len(ids):
            raise ValueError(f"{len(copies)} copy clusters for {len(ids)} image ids")
        self.vectors = vectors.float() if normalized else F.normalize(vectors.float(), dim=1)
        self.ids = list(ids)
        self.momentum = momentum
        self.copies = None if copies is None else torch.as_tensor(copies, dtype=torch.long)

    @classmethod
    def random(cls, n: int, dim: int, ids: list, gen: torch.Generator | None = None, momentum: float = 0.5):
        return cls(torch.randn(n, dim, generator=gen), ids, momentum)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def to(self, device) -> MemoryBank:
        self.vectors = self.vectors.to(device)
        return self

    @torch.no_grad()
    def update(self, index: torch.Tensor, embeddings: torch.Tensor) -> None:
        """m_i <- normalise(momentum * m_i + (1 - momentum) * f(v_i)) for the batch's images."""
        mixed = self.momentum * self.vectors[index] + (1 - self.momentum) * embeddings.detach().float()
        self.vectors[index] = F.normalize(mixed, dim=1)

    def sample_negatives(self, index: torch.Tensor, k: int, gen: torch.Generator | None = None) -> Negatives:
        """k negatives for each row of `index`: distinct within a row, never the row's own index (nor, with
        `copies`, one of its near-copies)."""
        n = len(self)
        if not 1 <= k <= n - 1:
            raise ValueError(f"negatives must be between 1 and N - 1 = {n - 1}, got {k}")
        if n <= 4 * (k + 1):
            drawn = torch.randperm(n, generator=gen)[: k + 1]
        else:  # sample with replacement and de-duplicate: no O(N) permutation for huge banks
            drawn = torch.empty(0, dtype=torch.long)
            while drawn.numel() < k + 1:
                extra = torch.randint(0, n, (2 * (k + 1),), generator=gen)
                drawn = torch.unique(torch.cat([drawn, extra]))
            drawn = drawn[torch.randperm(drawn.numel(), generator=gen)[: k + 1]]
        drawn = drawn.to(index.device)
        keep = drawn[None, :] != index[:, None]  # (B, k+1): False where the positive was drawn
        keep[:, -1] &= ~keep[:, :-1].all(dim=1)  # rows that kept all k+1: drop the spare
        if self.copies is not None:
            copies = self.copies.to(index.device)
            keep &= copies[drawn][None, :] != copies[index][:, None]
        return Negatives(drawn, keep)

    def state_dict(self) -> dict:
        return {"vectors": self.vectors.cpu(), "ids": list(self.ids), "momentum": self.momentum,
                "copies": None if self.copies is None else self.copies.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> MemoryBank:
        return cls(state["vectors"], state["ids"], state["momentum"], normalized=True, copies=state.get("copies"))
