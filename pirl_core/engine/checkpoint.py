"""Checkpoints: written atomically (temp file + rename), read safely (weights_only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import PirlError


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write `state` next to `path` under a temporary name, fsync, then rename over `path`.

    A crash mid-write leaves the previous checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
