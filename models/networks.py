"""Conditional generator and projection discriminator for 64x64 product photos."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from models.config import GANConfig


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift come from the condition (FiLM), so text reaches every scale."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond).chunk(2, dim=1)
        return self.bn(x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
        self.norm = ConditionalBatchNorm(c_out, cond_dim)

    def forward(self, x, cond):
        return torch.relu(self.norm(self.conv(x), cond))


class ConditionEmbedding(nn.Module):
    """Learned projection of the frozen text embedding (plus the optional image embedding)."""

    def __init__(self, cfg: GANConfig, with_image: bool = True):
        super().__init__()
        self.text = nn.Sequential(nn.Linear(cfg.text_dim, cfg.cond_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(cfg.cond_dim, cfg.cond_dim))
        # No bias and zero init: "no image" (None or a zero vector) leaves the text condition unchanged,
        # so the slot can be added to a trained text-only generator without changing its images.
        self.image = nn.Linear(cfg.image_dim, cfg.cond_dim, bias=False) if cfg.image_dim and with_image else None
        if self.image is not None:
            nn.init.zeros_(self.image.weight)

    def forward(self, text_emb, image_emb=None):
        cond = self.text(text_emb)
        if self.image is not None and image_emb is not None:
            cond = cond + self.image(image_emb)
        return cond


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.g_width
        self.embed = ConditionEmbedding(cfg)
        style_dim = cfg.z_dim + cfg.cond_dim
        self.stem = nn.Linear(style_dim, 8 * w * 4 * 4)
        self.stem_norm = ConditionalBatchNorm(8 * w, style_dim)
        self.blocks = nn.ModuleList([UpBlock(8 * w, 4 * w, style_dim), UpBlock(4 * w, 2 * w, style_dim),
                                     UpBlock(2 * w, w, style_dim)])
        self.to_rgb = nn.ConvTranspose2d(w, 3, 4, 2, 1)

    def forward(self, z: torch.Tensor, text_emb: torch.Tensor, image_emb=None) -> torch.Tensor:
        style = torch.cat([z, self.embed(text_emb, image_emb)], dim=1)
        x = self.stem(style).view(z.shape[0], -1, 4, 4)
        x = torch.relu(self.stem_norm(x, style))
        for block in self.blocks:
            x = block(x, style)
        return torch.tanh(self.to_rgb(x))


class Discriminator(nn.Module):
    """Convolutions with LeakyReLU and spectral norm; the text enters by projection
    (Miyato & Koyama 2018); auxiliary heads classify item type and colour."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        w = cfg.d_width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        layers = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        feat_dim = 8 * w
        self.out = spectral_norm(nn.Linear(feat_dim, 1))
        self.embed = ConditionEmbedding(cfg, with_image=False)
        self.project = spectral_norm(nn.Linear(cfg.cond_dim, feat_dim, bias=False))
        self.type_head = nn.Linear(feat_dim, cfg.n_article_types) if cfg.n_article_types else None
        self.colour_head = nn.Linear(feat_dim, cfg.n_colours) if cfg.n_colours else None

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).sum(dim=(2, 3))  # global sum pooling

    def score(self, h: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Unconditional term + projection of the condition onto the image features."""
        cond = self.project(self.embed(text_emb))
        return self.out(h).squeeze(1) + (cond * h).sum(dim=1)

    def classify(self, h: torch.Tensor):
        types = self.type_head(h) if self.type_head is not None else None
        colours = self.colour_head(h) if self.colour_head is not None else None
        return types, colours

    def forward(self, x, text_emb, wrong_text_emb=None):
        """Scores for (x, text); also for the first rows of x paired with `wrong_text_emb`
        (the matching-aware term) and the auxiliary logits. One call, so DDP syncs it all."""
        h = self.phi(x)
        wrong = self.score(h[: len(wrong_text_emb)], wrong_text_emb) if wrong_text_emb is not None else None
        return self.score(h, text_emb), wrong, *self.classify(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
