"""ModelService: what loading reports, and what the app reads from a loaded service."""
from __future__ import annotations

import pytest

from app.chat.service import LOAD_STEPS, LoadStep, ModelService


@pytest.fixture(scope="module")
def loaded():
    """The real service, loaded once, with every progress message it sent."""
    messages = []
    service = ModelService(device="cpu")
    service.load(messages.append)
    return service, messages


def test_load_reports_each_step_with_its_place(loaded):
    _, messages = loaded
    steps = [m for m in messages if isinstance(m, LoadStep)]
    assert [s.name for s in steps] == list(LOAD_STEPS)
    assert [s.index for s in steps] == list(range(1, len(LOAD_STEPS) + 1))
    assert {s.total for s in steps} == {len(LOAD_STEPS)}
    assert steps[1] == "loading text encoder ..."  # still a plain message for whoever only prints it
    assert messages[-1] == "ready"
