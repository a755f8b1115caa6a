"""Devices and seeds: the same seed gives the same image on any machine."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def seed_noise(seeds: list[int], z_dim: int, draw: int = 0) -> torch.Tensor:
    """One z per seed, always drawn on the CPU so that GPU and CPU runs agree. `draw` > 0 takes the
    draw-th further vector from the same seed's stream: a fresh z that still belongs to that seed."""
    return torch.stack([_nth_normal(int(s), z_dim, draw) for s in seeds])


def _nth_normal(seed: int, size: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n + 1) * size, generator=generator)[n * size :]
