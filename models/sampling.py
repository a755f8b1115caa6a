"""Devices, CPU threads and seeds: the same seed gives the same image on any machine."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

log = logging.getLogger(__name__)

THREADS_ENV = "FASHIONGAN_THREADS"  # torch CPU threads the user asks for (a positive integer)
SMALL_MACHINE_CORES = 2             # at most this many cores: torch gets one thread


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def choose_torch_threads(cpu_count: int | None, env: Mapping[str, str], requested: int = 0,
                         spare_cores: int = 0) -> int | None:
    """torch's CPU thread count for this machine, or None to leave torch's own. The user's choice wins: a
    --threads option (`requested` > 0), then FASHIONGAN_THREADS, then OMP_NUM_THREADS (torch read that one
    itself). Otherwise one thread on a machine of <= 2 cores: torch's default of one per core made a request
    20-50x slower while another program held a core, its threads waiting on each other. On bigger machines all
    cores but `spare_cores` (the window keeps one), or torch's default when that is 0."""
    if requested > 0:
        return requested
    wanted = env.get(THREADS_ENV, "").strip()
    if wanted:
        try:
            return max(1, int(wanted))
        except ValueError:
            log.warning("%s=%r is not a number of threads: ignored", THREADS_ENV, wanted)
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    cores = cpu_count or 1
    if cores <= SMALL_MACHINE_CORES:
        return 1
    return cores - spare_cores if spare_cores else None


def limit_torch_threads(requested: int = 0, spare_cores: int = 0) -> int:
    """Set torch's CPU threads as choose_torch_threads decides for this machine and environment, before the
    models run; returns the count torch uses."""
    threads = choose_torch_threads(os.cpu_count(), os.environ, requested, spare_cores)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    log.info("torch uses %d CPU thread(s)", torch.get_num_threads())
    return torch.get_num_threads()


def seed_noise(seeds: list[int], z_dim: int, draw: int = 0) -> torch.Tensor:
    """One z per seed, always drawn on the CPU so that GPU and CPU runs agree. `draw` > 0 takes the
    draw-th further vector from the same seed's stream: a fresh z that still belongs to that seed."""
    return torch.stack([_nth_normal(int(s), z_dim, draw) for s in seeds])


def _nth_normal(seed: int, size: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n + 1) * size, generator=generator)[n * size :]
