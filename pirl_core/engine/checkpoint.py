"""Checkpoints: written atomically (temp file + rename), read safely (weights_only)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import PirlError
from ..workspace.atomic import atomic_path

FORMAT = 1  # the version of what save_atomic's callers write; load() refuses files without one


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically: a crash mid-write leaves the previous checkpoint untouched."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PirlError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise PirlError(
            f"Checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {str(exc)[:200]}). "
            f"It was left as it is: move it away to start the run afresh.") from exc
    if not isinstance(state, dict) or "format" not in state:
        raise PirlError(f"{path} is not a PIRL Studio checkpoint.")
    return state
