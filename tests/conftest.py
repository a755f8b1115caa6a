"""Shared fixtures: the small committed data sets and a cached text encoder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pack_path() -> Path:
    return FIXTURES / "pack" / "mini.npz"


@pytest.fixture(scope="session")
def text_encoder():
    from models.text_encoder import get_text_encoder

    return get_text_encoder()
