"""Editing generator: a product photo plus the caption of the wanted item -> a 64x64 variant of that photo.

A U-Net: a convolutional encoder of the photo whose features at 64, 32, 16 and 8 px reach the decoder
through skip connections, so shape, print and details survive; the caption (a frozen MiniLM embedding)
and a small noise vector modulate every decoder layer (FiLM after instance norm), so the text decides
colour and the seed decides shade and texture. The output is blended with the photo through a predicted
mask (as GANimation does), so what the caption does not touch, the white background above all, stays.

Trained without paired data (StarGAN / ManiGAN style) by `python -m models.train --stage edit`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint
from models.colour import WHITE_LEVEL, foreground
from models.data import images_to_tensor, square_on_white, tensor_to_uint8
from models.resources import EDITOR_WEIGHTS
from models.sampling import resolve_device, seed_noise
from models.shades import ShadeTable, apply_shade, item_weight


@dataclass
class EditConfig:
    text_dim: int = 384  # input caption embedding (all-MiniLM-L6-v2)
    cond_dim: int = 128  # learned projection of the caption
    z_dim: int = 16  # noise: the seed's share of a variant (shade, texture)
    width: int = 16  # base channels: w-2w-4w-8w at 64-32-16-8 px, 8w at the 4 px bottleneck
    article_types: list[str] = field(default_factory=list)  # label names of the training data
    colours: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> EditConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.InstanceNorm2d(c_out, affine=True), nn.LeakyReLU(0.2))


class FiLMConv(nn.Module):
    """3x3 convolution, instance norm, then scale and shift from the style vector."""

    def __init__(self, c_in: int, c_out: int, style_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm = nn.InstanceNorm2d(c_out, affine=False)
        self.film = nn.Linear(style_dim, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(style).chunk(2, dim=1)
        h = self.norm(self.conv(x)) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return F.leaky_relu(h, 0.2)


class EditGenerator(nn.Module):
    def __init__(self, cfg: EditConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        # the wanted caption and its difference from the photo's own: zero for "the photo as it is", and
        # mostly the change itself (another colour) otherwise, which one layer can pick out
        self.text = nn.Sequential(nn.Linear(2 * cfg.text_dim, cfg.cond_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(cfg.cond_dim, cfg.cond_dim))
        style = cfg.cond_dim + cfg.z_dim
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), nn.LeakyReLU(0.2))  # 64 px
        self.downs = nn.ModuleList([_down(w, 2 * w), _down(2 * w, 4 * w), _down(4 * w, 8 * w),
                                    _down(8 * w, 8 * w)])  # 32, 16, 8, 4 px
        self.bottleneck = FiLMConv(8 * w, 8 * w, style)
        skips = [8 * w, 4 * w, 2 * w, w]  # channels of the encoder features at 8, 16, 32, 64 px
        outs = [8 * w, 4 * w, 2 * w, w]
        ins = [8 * w] + outs[:-1]
        self.ups = nn.ModuleList([FiLMConv(c_in + c_skip, c_out, style)
                                  for c_in, c_skip, c_out in zip(ins, skips, outs)])
        self.to_rgb = nn.Conv2d(w, 3, 3, 1, 1)
        self.to_mask = nn.Conv2d(w, 1, 3, 1, 1)

    def style(self, wanted: torch.Tensor, own: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            z = torch.zeros(len(wanted), self.cfg.z_dim, device=wanted.device)
        return torch.cat([self.text(torch.cat([wanted, wanted - own], dim=1)), z], dim=1)

    def forward(self, photo: torch.Tensor, wanted: torch.Tensor, own: torch.Tensor, z: torch.Tensor | None = None,
                return_mask: bool = False):
        """photo: NCHW in [-1, 1]; wanted, own: (N, 384) caption embeddings of the wanted item and of what
        the photo shows; z: (N, z_dim) or None (no noise: the photo's own look)."""
        style = self.style(wanted, own, z)
        feats = [self.stem(photo)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        h = self.bottleneck(feats[-1], style)
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = up(torch.cat([h, skip], dim=1), style)
        mask = torch.sigmoid(self.to_mask(h))
        out = mask * torch.tanh(self.to_rgb(h)) + (1 - mask) * photo
        return (out, mask) if return_mask else out


def strength_condition(own: torch.Tensor, wanted: torch.Tensor, z: torch.Tensor, strength):
    """How far a variant may move from the photo, as img2img's denoising strength: 0 gives the photo
    back (its own caption, no noise), 1 the full edit; between, the caption embedding is interpolated
    on the unit sphere's chord and the noise scaled with it. `strength`: one number, or one per row."""
    s = torch.as_tensor(strength, dtype=own.dtype, device=own.device).clamp(0.0, 1.0).reshape(-1, 1)
    text = F.normalize((1 - s) * own + s * wanted, dim=-1)
    return text, z * s


# ---- is this a photo the model can edit? --------------------------------------------------------

MIN_FOREGROUND = 0.015  # share of the 64x64 photo the item must cover (real products: >= 2%)


class NotEditable(ValueError):
    """The photo shows no product the editing generator can work on."""


def foreground_share(pixels: np.ndarray) -> float:
    """uint8 HWC (64x64, square on white) -> the share of non-background pixels."""
    return float(foreground(pixels).mean())


MIN_CONTRAST = 4.0  # spatial standard deviation (0-255, of the liveliest channel) of a flat-colour photo


def check_editable(pixels: np.ndarray) -> None:
    """Raise NotEditable, with a message for the shopper, when there is nothing to edit: a photo that is
    (almost) all white background, or one flat colour."""
    share = foreground_share(pixels)
    if share < MIN_FOREGROUND:
        raise NotEditable(f"the photo shows no item to edit (only {share:.0%} of it is not plain background); "
                          "use a product photo with the item filling the frame")
    if float(pixels.reshape(-1, 3).astype(np.float32).std(axis=0).max()) < MIN_CONTRAST:
        raise NotEditable("the photo is one flat colour, with no item to edit; use a product photo")


# ---- the app's editor -----------------------------------------------------------------------------

# How far a variant moves by default (1 = the full edit). Chosen among 0.6-1.0 on 150 held-out photos
# (evaluate_variants --seed 1): 1.0 changed the colour 1.49x as often as real photos show it but kept the
# item type 0.72x; 0.7 gave 0.93x and 0.82x, both above 0.8x, and identity 1.0.
DEFAULT_STRENGTH = 0.7
# "More like this" on a variant: how far from the clicked seed's noise and shade (0.3: in the shades'
# space a variation lies nearest the clicked one of four cards 96% of the time; 0.5: 84%)
VARIATION_AMOUNT = 0.3
# How far a seed's shade may move from the editor's colour, in standard deviations of real products' shades
# of that colour (models.shades), at full strength. Chosen on 60 held-out photos (evaluate_variants picks,
# --seed 1) among 0-1: 0.75 put a median colour difference of 6.2 (CIE76 on the item) between two variants
# of a request (0.5: 4.3; the noise alone: 1.4, under the 2.3 that people just notice) and cost 9% of the
# colour-changed rate (1.0: 16%).
SHADE_AMOUNT = 0.75
SHADE_MASK_FULL = 0.5  # the editor's blend mask from which a pixel takes the whole shade (below: that share)


BACKGROUND_MARGIN = 2  # px around the item where the editor may still draw (edges, shadows)
# The decoder blurs fine detail (print, seams, folds, the weave): a variant's luminance finer than this
# (Gaussian sigma, px) is the photo's own. Colour and the coarser light and shade stay the editor's.
# Chosen on the --variety-seed 1 prompt cells among 1.0-2.0: classifier-feature FID of exemplar drawings
# 2.08x the real floor without, 1.77x at 1.0, 1.72x at 1.5, 1.71x at 2.0 (1.5: the finest within noise).
DETAIL_SIGMA = 1.5
# Raised whenever the same weights and seed come to draw another image (saved chats then say so instead of
# redrawing them differently): 2 = the photo's fine detail kept.
DRAWING_VERSION = 2


def open_background(photo: torch.Tensor) -> torch.Tensor:
    """NCHW photos in [-1, 1] -> bool (N, 1, H, W): white background farther than BACKGROUND_MARGIN from
    the item, where a variant keeps the photo's own pixels (the net paints faint ghosts there)."""
    item = (photo.min(dim=1, keepdim=True).values <= WHITE_LEVEL / 127.5 - 1).float()
    size = 2 * BACKGROUND_MARGIN + 1
    return F.max_pool2d(item, size, stride=1, padding=BACKGROUND_MARGIN) == 0


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """float (n, H, W) -> each image blurred with a Gaussian of `sigma` px, edges replicated."""
    r = math.ceil(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return t[:, 0].numpy()


def keep_detail(drawn: np.ndarray, photos: np.ndarray, where: np.ndarray, sigma: float = DETAIL_SIGMA) -> np.ndarray:
    """uint8 (n, H, W, 3) variants and the photos they were drawn from -> the variants with the photos'
    luminance detail finer than `sigma` px in place of their own (added to all three channels alike), on
    the pixels of bool (n, H, W) `where`."""
    def fine(images: np.ndarray) -> np.ndarray:
        lum = images.astype(np.float32).mean(axis=-1)
        return lum - gaussian_blur(lum, sigma)

    detail = np.where(where, fine(photos) - fine(drawn), 0.0)
    return np.clip(np.round(drawn + detail[..., None]), 0, 255).astype(np.uint8)


class PhotoEditor:
    """Loads the bundled editing generator once; photo + captions + seeds -> 64x64 PIL variants, each seed
    in its own shade of the colour (models.shades), with the photo's fine detail (keep_detail; None: the
    network's own)."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", shades: ShadeTable | None = None,
                 shade_amount: float = SHADE_AMOUNT, detail_sigma: float | None = DETAIL_SIGMA):
        self.path = Path(weights) if weights else EDITOR_WEIGHTS
        self.device = resolve_device(device)
        ckpt = load_checkpoint(self.path, map_location="cpu")
        try:
            self.config = EditConfig.from_dict(ckpt["config"]["edit"])
            self.net = EditGenerator(self.config)
            self.net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        except (KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{self.path} does not hold an editing generator this program can load "
                                  f"({exc})") from exc
        self.net.to(self.device).eval()
        self.step = int(ckpt.get("step", 0))
        self.shades = shades if shades is not None else ShadeTable.load()
        self.shade_amount = shade_amount
        self.detail_sigma = detail_sigma

    def photo_tensor(self, image) -> torch.Tensor:
        """A PIL photo (any size) -> the 64x64 square-on-white input, or NotEditable."""
        pixels = np.asarray(square_on_white(image))
        check_editable(pixels)
        return images_to_tensor(pixels[None]).to(self.device)

    @torch.inference_mode()
    def variants(self, image, own: torch.Tensor, wanted: torch.Tensor, seeds: list[int],
                 strength: float = DEFAULT_STRENGTH, colour: str | None = None) -> list:
        """One variant per seed of the photo as the `wanted` caption embedding says; `own` is the
        embedding of what the photo shows (its described caption), `colour` the variants' catalogue colour
        (whose real shades the seeds spread over)."""
        z = seed_noise(list(seeds), self.config.z_dim)
        shades = self.shades.offsets(colour, list(seeds), amount=self.shade_amount)
        return self._draw(self.photo_tensor(image), own, wanted, z, shades, strength)

    @torch.inference_mode()
    def variations(self, image, own: torch.Tensor, wanted: torch.Tensor, seed: int, variation_seeds: list[int],
                   strength: float = DEFAULT_STRENGTH, amount: float = VARIATION_AMOUNT,
                   colour: str | None = None, shade_amount: float | None = None) -> list:
        """Variants near one seed's: its noise and shade moved `amount` of the way towards each variation
        seed's (both stay standard normal), so they stay closer to the clicked variant than to other seeds'."""
        base = seed_noise([seed], self.config.z_dim)
        moves = seed_noise(list(variation_seeds), self.config.z_dim)
        z = math.sqrt(1 - amount**2) * base + amount * moves
        spread = self.shade_amount if shade_amount is None else shade_amount
        shades = self.shades.offsets(colour, list(variation_seeds), spread, around=seed, closeness=amount)
        return self._draw(self.photo_tensor(image), own, wanted, z, shades, strength)

    @torch.inference_mode()
    def edit_many(self, photos: np.ndarray, own: torch.Tensor, wanted: torch.Tensor, seeds: list[int],
                  strength: float = DEFAULT_STRENGTH, colour: str | None = None,
                  shade_amount: float | None = None) -> list:
        """One variant per row: photo i (uint8 (n, 64, 64, 3), square on white) edited from caption
        embedding own[i] to wanted[i] with seed i, in one batch; `shade_amount` replaces the editor's."""
        z = seed_noise(list(seeds), self.config.z_dim)
        amount = self.shade_amount if shade_amount is None else shade_amount
        shades = self.shades.offsets(colour, list(seeds), amount=amount)
        return self._draw(images_to_tensor(photos).to(self.device), own, wanted, z, shades, strength)

    def _draw(self, photo: torch.Tensor, own, wanted, z, shades: np.ndarray, strength: float) -> list:
        """`shades`: (n, 3) Lab offsets at full strength."""
        n = len(z)
        photo = photo.expand(n, -1, -1, -1) if len(photo) == 1 else photo
        own = own.reshape(-1, own.shape[-1]).to(self.device).expand(n, -1)
        wanted = wanted.reshape(-1, wanted.shape[-1]).to(self.device).expand(n, -1)
        s = float(min(max(strength, 0.0), 1.0))
        text, z = strength_condition(own, wanted, z.to(self.device), s)
        out, mask = self.net(photo, text, own, z, return_mask=True)
        background = open_background(photo)
        out = torch.where(background, photo, out)
        pixels = tensor_to_uint8(out)
        # the shade goes where the editor draws the item: its mask, full from SHADE_MASK_FULL up
        weight = np.clip(mask[:, 0].float().cpu().numpy() / SHADE_MASK_FULL, 0, 1) * item_weight(pixels)
        offsets = shades * s  # the shade moves as far as the edit does
        pixels = np.stack([apply_shade(p, w, o) for p, w, o in zip(pixels, weight, offsets)])
        if self.detail_sigma:
            pixels = keep_detail(pixels, tensor_to_uint8(photo), ~background[:, 0].cpu().numpy(), self.detail_sigma)
        return [Image.fromarray(p) for p in pixels]
