"""The bundled weights are the ones the model card describes, and load safely; damage is found on load."""
from __future__ import annotations

import hashlib
import struct
import zipfile

import pytest
import torch

from models.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from models.resources import WEIGHTS_DIR


def test_sha256sums_match_the_bundled_files():
    lines = (WEIGHTS_DIR / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split()) for line in lines if line.strip())
    assert set(listed) == {p.name for p in WEIGHTS_DIR.glob("*.pt")}
    for name, digest in listed.items():
        assert hashlib.sha256((WEIGHTS_DIR / name).read_bytes()).hexdigest() == digest, name


def test_model_card_names_every_weights_file():
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    for path in WEIGHTS_DIR.glob("*.pt"):
        assert f"`{path.name}`" in card


def test_generator_checkpoint_is_plain_data_with_config():
    ckpt = load_checkpoint(WEIGHTS_DIR / "generator.pt")
    assert ckpt["config"]["gan"]["image_dim"] > 0 and "image_encoder" in ckpt
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------- integrity checks on load


def small_checkpoint(path, value: float = 1.0):
    save_checkpoint(path, {"state_dict": {"w": torch.full((256,), value)}, "config": {}})
    return path


def test_a_flipped_bit_in_tensor_data_names_the_member(tmp_path):
    path = small_checkpoint(tmp_path / "g.pt")
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename)
    data = bytearray(path.read_bytes())
    # The member's data starts after its local header: 30 bytes, then its name and extra field.
    name_len, extra_len = struct.unpack_from("<HH", data, member.header_offset + 26)
    data[member.header_offset + 30 + name_len + extra_len] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"g.pt is damaged \\(CRC mismatch in member {member.filename}\\)"):
        load_checkpoint(path)


def test_sha256_listed_beside_the_checkpoint_is_checked(tmp_path):
    path = small_checkpoint(tmp_path / "g.pt")
    other = small_checkpoint(tmp_path / "unlisted.pt")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  g.pt\n")
    with pytest.raises(CheckpointError, match=f"g.pt does not match .*SHA256SUMS: sha256 {file_sha256(path)}, "
                                              f"expected {'0' * 64}"):
        load_checkpoint(path)
    assert load_checkpoint(other)["state_dict"]["w"][0] == 1  # not listed: only the CRCs are checked
    (tmp_path / "SHA256SUMS").write_text(f"{file_sha256(path)} *g.pt\n")  # sha256sum's binary-mode line
    assert load_checkpoint(path)["state_dict"]["w"][0] == 1


def test_saving_over_a_listed_checkpoint_updates_its_line(tmp_path):
    path = small_checkpoint(tmp_path / "g.pt")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{file_sha256(path)}  g.pt\n{'a' * 64}  other.pt\n")
    small_checkpoint(path, value=2.0)  # e.g. a new export into weights/
    assert load_checkpoint(path)["state_dict"]["w"][0] == 2
    assert sums.read_text() == f"{file_sha256(path)}  g.pt\n{'a' * 64}  other.pt\n"
