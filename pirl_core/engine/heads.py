"""PIRL's projection heads. Outputs are L2-normalised 128-d embeddings.

* image_head f: Linear(d, 128) on the pooled features of the whole image.
* patch_head g: Linear(d, 128) on each of the 9 patches (shared weights), the 9 results
  concatenated in the (shuffled) order they arrive (1152) -> Linear(1152, 128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 128


class ImageHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = EMBED_DIM):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(features), dim=1)


class PatchHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = EMBED_DIM, n_patches: int = 9):
        super().__init__()
        self.n_patches = n_patches
        self.per_patch = nn.Linear(in_dim, out_dim)
        self.combine = nn.Linear(n_patches * out_dim, out_dim)

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        """patch_features: (B * 9, d), patches of one image consecutive."""
        per_patch = self.per_patch(patch_features).reshape(-1, self.n_patches * self.per_patch.out_features)
        return F.normalize(self.combine(per_patch), dim=1)
