"""Adversarial losses: BCE with one-sided label smoothing, WGAN-GP and hinge."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "wgan-gp", "hinge")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, wrong: torch.Tensor | None,
                       smoothing: float = 0.9, mismatch_weight: float = 0.5) -> torch.Tensor:
    """`wrong` are scores of real images with mismatched captions: they count as fake."""
    if kind == "bce":
        loss = F.binary_cross_entropy_with_logits(real, torch.full_like(real, smoothing))
        loss = loss + _bce_fake(fake)
    elif kind == "hinge":
        loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    elif kind == "wgan-gp":
        loss = fake.mean() - real.mean()
    else:
        raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")
    if wrong is not None and mismatch_weight:
        loss = loss + mismatch_weight * _fake_term(kind, wrong, real)
    return loss


def _bce_fake(scores: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(scores, torch.zeros_like(scores))


def _fake_term(kind: str, scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The loss term for scores that should read "fake" (used for mismatched captions)."""
    if kind == "bce":
        return _bce_fake(scores)
    if kind == "hinge":
        return F.relu(1 + scores).mean()
    return scores.mean() - real[: len(scores)].mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # non-saturating
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad_x D(x)|| - 1)^2 at points between real and fake images."""
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def auxiliary_loss(logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on item type or colour; label -1 (unknown) is ignored."""
    if logits is None or (labels < 0).all():
        return torch.zeros((), device=labels.device)
    return F.cross_entropy(logits, labels, ignore_index=-1)


def accuracy(logits: torch.Tensor | None, labels: torch.Tensor) -> float:
    if logits is None:
        return float("nan")
    known = labels >= 0
    if not known.any():
        return float("nan")
    return (logits[known].argmax(1) == labels[known]).float().mean().item()


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN (Mao et al. 2019): the first and second halves of the batch share their conditions;
    penalise image distance that is small for the noise distance, so the seed is not ignored."""
    half = len(fake) // 2
    image_dist = (fake[:half] - fake[half : 2 * half]).abs().mean()
    noise_dist = (z[:half] - z[half : 2 * half]).abs().mean()
    return 1 / (image_dist / noise_dist + eps)


def bounded_diversity_loss(a: torch.Tensor, b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                           ceiling: float) -> torch.Tensor:
    """DSGAN (Yang et al. 2019): reward image distance per unit of noise distance, up to `ceiling`, so
    two seeds of one condition differ, but only as much as a faithful variant may (and the term stays
    bounded while the noise still has no effect)."""
    image_dist = (a - b).abs().mean(dim=(1, 2, 3))
    noise_dist = (z_a - z_b).abs().mean(dim=1)
    return -(image_dist / noise_dist).clamp(max=ceiling).mean()
