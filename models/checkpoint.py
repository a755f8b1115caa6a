"""Checkpoints are plain dicts `{state_dict, config, version, ...}` of tensors and builtins, written
atomically and read with `torch.load(..., weights_only=True)`: nothing but tensors is ever unpickled."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from models.config import CHECKPOINT_VERSION


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, tampered with or of another version."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shipped and shared
        os.replace(tmp, path)  # atomic: a crash leaves the previous checkpoint intact
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | Path, map_location="cpu", required=("state_dict", "config")) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, anything torch refuses
        raise CheckpointError(f"checkpoint {path} is damaged or not a checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(required)}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has version {payload.get('version')}, "
                              f"this program reads version {CHECKPOINT_VERSION}")
    return payload
