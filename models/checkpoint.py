"""Checkpoints are plain dicts `{state_dict, config, version, ...}` of tensors and builtins, written
atomically and read with `torch.load(..., weights_only=True)`: nothing but tensors is ever unpickled.

Before loading, the zip's CRC-32s are checked (torch.load does not: a flipped bit would load as a silently
different model), and so is the file's sha256 where a SHA256SUMS file beside it lists it (the shipped weights).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch

from models.config import CHECKPOINT_VERSION

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS"  # `<sha256>  <file name>` lines (sha256sum's format) beside shipped checkpoints
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format; other files are left to torch.load to accept or refuse


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
    _update_listed_sha256(path)


def load_checkpoint(path: str | Path, map_location="cpu", required=("state_dict", "config")) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()  # read once: the CRC and sha256 checks and torch.load all use these bytes
    _check_zip_crcs(path, data)
    _check_listed_sha256(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, anything torch refuses
        raise CheckpointError(f"checkpoint {path} is damaged or not a checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(required)}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has version {payload.get('version')}, "
                              f"this program reads version {CHECKPOINT_VERSION}")
    return payload


def _check_zip_crcs(path: Path, data: bytes) -> None:
    if not data.startswith(ZIP_MAGIC):
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()  # reads every member: the first whose CRC (or header) is wrong, else None
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, ValueError, zlib.error) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged ({exc}); reinstall or re-download the weights") from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged (CRC mismatch in member {bad}); "
                              "reinstall or re-download the weights")


def _check_listed_sha256(path: Path, data: bytes) -> None:
    sums = path.parent / SUMS_NAME
    expected = _listed_digests(sums).get(path.name)
    if expected is None:
        return  # not a shipped file (training runs, temp copies): the CRCs are its check
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} does not match {sums}: sha256 {actual}, expected {expected}; reinstall or "
            f"re-download the weights (or, if you replaced the file on purpose, update its line in {SUMS_NAME})")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_digests(sums: Path) -> dict[str, str]:
    """{file name: sha256} from a SHA256SUMS file; {} when there is none (or it cannot be read: logged)."""
    try:
        text = sums.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s (%s): checkpoint sha256s not checked", sums, exc)
        return {}
    digests = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition(" ")
        if digest and name:
            digests[name.strip().removeprefix("*")] = digest.lower()  # "*name": sha256sum's binary mode
    return digests


def _update_listed_sha256(path: Path) -> None:
    """A checkpoint written over a listed one (an export into weights/) gets its new sha256 listed, so that the
    next load does not refuse it as damaged."""
    sums = path.parent / SUMS_NAME
    if path.name not in _listed_digests(sums):
        return
    digest = file_sha256(path)
    lines = []
    for line in sums.read_text(encoding="utf-8").splitlines():
        _, _, name = line.strip().partition(" ")
        lines.append(f"{digest}  {path.name}" if name.strip().removeprefix("*") == path.name else line)
    fd, tmp = tempfile.mkstemp(dir=sums.parent, prefix=f".{SUMS_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, sums)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("%s: sha256 of %s updated", sums, path.name)
