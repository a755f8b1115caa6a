"""The bundled weights are the ones the model card describes, and load safely."""
from __future__ import annotations

import hashlib

import torch

from models.checkpoint import load_checkpoint
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
