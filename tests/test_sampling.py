"""Devices, CPU threads and seeds (models/sampling.py)."""
from __future__ import annotations

import pytest
import torch

from models import sampling
from models.sampling import choose_torch_threads, limit_torch_threads


@pytest.mark.parametrize("cores, env, requested, spare, threads", [
    (1, {}, 0, 0, 1),                                 # small machines: one thread
    (2, {}, 0, 0, 1),
    (None, {}, 0, 0, 1),                              # unknown core count: assume a small machine
    (2, {}, 0, 1, 1),                                 # never fewer than one, whatever the window keeps
    (8, {}, 0, 0, None),                              # bigger machines: torch's default...
    (8, {}, 0, 1, 7),                                 # ...or all cores but the window's
    (2, {"FASHIONGAN_THREADS": "2"}, 0, 0, 2),        # the user's choice wins
    (8, {"FASHIONGAN_THREADS": " 3 "}, 0, 1, 3),
    (2, {"FASHIONGAN_THREADS": "0"}, 0, 0, 1),
    (2, {"FASHIONGAN_THREADS": "many"}, 0, 0, 1),     # not a number: ignored (and logged)
    (2, {"FASHIONGAN_THREADS": ""}, 0, 0, 1),
    (2, {"OMP_NUM_THREADS": "2"}, 0, 0, None),        # torch read OMP_NUM_THREADS itself: left alone
    (2, {"OMP_NUM_THREADS": "2", "FASHIONGAN_THREADS": "1"}, 0, 0, 1),
    (2, {"FASHIONGAN_THREADS": "1"}, 4, 0, 4),        # a --threads option beats the environment
])
def test_torch_thread_choice(cores, env, requested, spare, threads):
    assert choose_torch_threads(cores, env, requested, spare) == threads


def test_limit_torch_threads_sets_the_choice(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(sampling.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("FASHIONGAN_THREADS", "3")
    try:
        assert limit_torch_threads() == 3 == torch.get_num_threads()
        monkeypatch.delenv("FASHIONGAN_THREADS")
        assert limit_torch_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
