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


# Robustness tests that found real, still-open bugs (see the closing note of the session that added
# them). They run and report as xfail; the xfail is strict, so a fix makes them fail as XPASS until they
# leave this list.
KNOWN_BUGS: dict[str, str] = {}  # node id (or id prefix before '[') -> the bug


def pytest_collection_modifyitems(config, items):
    for item in items:
        for prefix, reason in KNOWN_BUGS.items():
            if item.nodeid == prefix or item.nodeid.startswith(prefix + "["):
                item.add_marker(pytest.mark.xfail(reason=f"known bug: {reason}", strict=True))
