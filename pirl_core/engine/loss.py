"""The PIRL loss: InfoNCE of each view's embedding against the memory bank.

    L = lambda * NCE(m_I, g(v_It)) + (1 - lambda) * NCE(m_I, f(v_I)),   lambda = 0.5

NCE is the softmax (InfoNCE) form: the positive is the image's bank vector m_I, the negatives
are other bank vectors, temperature 0.07. Both views share the same negatives, and all logits
come from one batched matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor, keep: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Per-sample InfoNCE for V views at once.

    queries (V, B, D); positives (B, D); candidates (C, D): bank vectors shared by the batch;
    keep (B, C) bool: the row's negatives.
    Returns (V, B): -log softmax of the positive among [positive, its negatives].
    """
    pos = (queries * positives).sum(-1)  # (V, B)
    neg = (queries @ candidates.T).masked_fill(~keep, float("-inf"))  # one matmul; other columns weigh nothing
    logits = torch.cat([pos[..., None], neg], dim=-1) / temperature
    return -F.log_softmax(logits, dim=-1)[..., 0]


def pirl_loss(views: dict[str, torch.Tensor], weights: dict[str, float], positives: torch.Tensor,
              candidates: torch.Tensor, keep: torch.Tensor,
              temperature: float = 0.07) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of one InfoNCE term per view. views: name -> (B, D) embeddings.

    Returns the total (a scalar) and each term's batch mean (for logging).
    """
    names = list(views)
    per_view = info_nce(torch.stack([views[n] for n in names]), positives.detach(), candidates.detach(),
                        keep, temperature).mean(dim=1)
    terms = dict(zip(names, per_view))
    total = sum(weights[n] * terms[n] for n in names)
    return total, terms
