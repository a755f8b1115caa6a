"""DiffAugment (Zhao et al. 2020): differentiable augmentation applied to real and fake images alike,
so a discriminator trained on ~30k photos does not memorise them. All randomness comes from `rng`
(a CPU torch.Generator) so that training resumes exactly."""
from __future__ import annotations

import torch
import torch.nn.functional as F

WHITE = 1.0  # product photos sit on white; translation fills with white, not black


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, c, h, w = x.shape
    pad = int(h * ratio + 0.5)
    shift = torch.randint(-pad, pad + 1, (b, 2), generator=rng).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad), value=WHITE)
    rows = (torch.arange(h, device=x.device)[None] + pad + shift[:, :1])  # (b, h)
    cols = (torch.arange(w, device=x.device)[None] + pad + shift[:, 1:])  # (b, w)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    size = int(h * ratio + 0.5)
    corner = torch.randint(0, h - size + 1, (b, 2), generator=rng).to(x.device)
    ys = torch.arange(h, device=x.device)[None]
    xs = torch.arange(w, device=x.device)[None]
    inside_y = (ys >= corner[:, :1]) & (ys < corner[:, :1] + size)
    inside_x = (xs >= corner[:, 1:]) & (xs < corner[:, 1:] + size)
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return x * (~mask)[:, None].to(x.dtype)


def brightness(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, generator=rng).to(x.device) - 0.5) * 0.5


AUGMENTS = {"translation": translation, "cutout": cutout, "brightness": brightness}


def diff_augment(x: torch.Tensor, policy: str, rng: torch.Generator) -> torch.Tensor:
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in AUGMENTS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {sorted(AUGMENTS)}")
        x = AUGMENTS[name](x, rng)
    return x
