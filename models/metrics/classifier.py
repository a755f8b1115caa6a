"""The GAN-test classifier: a small CNN that names the item type and the colour of a 64x64 photo.

Trained once on the real training-split photos (the ones the GAN learned from), seeded, and cached
as a checkpoint keyed by the data and its settings. `models.metrics.evaluate` scores generated images with it
(GAN-test accuracy) and uses its penultimate features for a fast FID/KID.
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.data import LabelVocab, ProductTable

log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    width: int = 32  # base channels: width-2w-4w-8w; features are 8 * width wide
    steps: int = 1200  # optimiser steps (1200 x 64 images ~ 2.6 epochs of the dev pack's training split)
    batch: int = 64
    lr: float = 3e-3  # peak of a one-cycle schedule (AdamW)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    shift: int = 4  # augmentation: random translation (pixels, white fill) and horizontal flips
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _conv(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(2)] if pool else [])


class ProductClassifier(nn.Module):
    """64 -> 32 (strided stem) -> 16 -> 8 px, global average pool, two linear heads."""

    def __init__(self, n_types: int, n_colours: int, width: int = 32):
        super().__init__()
        w = width
        stem = [nn.Conv2d(3, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*stem, *_conv(w, 2 * w, True), *_conv(2 * w, 4 * w, True),
                                  *_conv(4 * w, 8 * w, False))
        self.feature_dim = 8 * w
        self.type_head = nn.Linear(self.feature_dim, n_types)
        self.colour_head = nn.Linear(self.feature_dim, n_colours)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor):
        h = self.features(x)
        return self.type_head(h), self.colour_head(h)


def uint8_to_input(images: np.ndarray | torch.Tensor, device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] on `device`."""
    x = torch.as_tensor(images).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation by up to `shift` px; the border is white (+1)."""
    n = len(x)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift:
        padded = F.pad(x, [shift] * 4, value=1.0)
        dx, dy = torch.randint(0, 2 * shift + 1, (2, n), generator=gen).tolist()
        size = x.shape[-1]
        x = torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])
    return x


def fingerprint(table: ProductTable, cfg: ClassifierConfig) -> str:
    """Changes when the training photos, their labels or the classifier settings change."""
    text = "\n".join(f"{r['id']}|{r['articleType']}|{r['baseColour']}" for r in table.rows)
    text += f"\n{len(table)}\n{sorted(asdict(cfg).items())}"
    return f"{zlib.crc32(text.encode()) & 0xFFFFFFFF:08x}"


def train_classifier(table: ProductTable, cfg: ClassifierConfig,
                     device) -> tuple[ProductClassifier, LabelVocab, dict]:
    """Seeded training on `table` (the training split); returns the model (eval mode), vocab and stats."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = LabelVocab.from_rows(table.rows)
    labels = torch.tensor([vocab.encode(r) for r in table.rows])
    model = ProductClassifier(len(vocab.article_types), len(vocab.colours), cfg.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 2))
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(table), (cfg.batch,), generator=gen)
        x = augment(uint8_to_input(table.images[idx.numpy()], device), cfg.shift, gen)
        y = labels[idx].to(device)
        type_logits, colour_logits = model(x)
        kw = {"ignore_index": -1, "label_smoothing": cfg.label_smoothing}  # -1: unknown label
        loss = F.cross_entropy(type_logits, y[:, 0], **kw) + F.cross_entropy(colour_logits, y[:, 1], **kw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log.info("classifier step %d/%d loss %.3f", step + 1, cfg.steps, float(np.mean(losses[-100:])))
    stats = {"train_seconds": round(time.perf_counter() - start, 1), "n_train": len(table),
             "final_loss": float(np.mean(losses[-50:])) if losses else float("nan")}
    return model.eval(), vocab, stats


def save_classifier(path: str | Path, model: ProductClassifier, vocab: LabelVocab, cfg: ClassifierConfig,
                    fp: str, stats: dict) -> None:
    save_checkpoint(path, {"state_dict": model.state_dict(), "fingerprint": fp, "stats": stats,
                           "config": {"classifier": asdict(cfg), "article_types": vocab.article_types,
                                      "colours": vocab.colours}})


def load_classifier(path: str | Path, device="cpu") -> tuple[ProductClassifier, LabelVocab, dict]:
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        cfg = ClassifierConfig.from_dict(ckpt["config"]["classifier"])
        vocab = LabelVocab(ckpt["config"]["article_types"], ckpt["config"]["colours"])
        model = ProductClassifier(len(vocab.article_types), len(vocab.colours), cfg.width)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a GAN-test classifier checkpoint ({exc})") from exc
    info = {"fingerprint": ckpt.get("fingerprint"), **ckpt.get("stats", {}), "config": asdict(cfg)}
    return model.to(device).eval(), vocab, info


def load_or_train(path: str | Path | None, table: ProductTable, cfg: ClassifierConfig, device,
                  cache_dir: str | Path = "data_cache", retrain: bool = False):
    """The cached classifier for this training table and settings, trained and saved if missing.
    Returns (model, vocab, info); info says where it lives and whether it was trained now."""
    fp = fingerprint(table, cfg)
    path = Path(path) if path else Path(cache_dir) / f"gan-test-classifier-{fp}.pt"
    if path.exists() and not retrain:
        model, vocab, info = load_classifier(path, device)
        if info.get("fingerprint") != fp:
            raise CheckpointError(f"{path} was trained on other data or settings (fingerprint "
                                  f"{info.get('fingerprint')}, expected {fp}); pass --retrain-classifier")
        return model, vocab, {**info, "path": str(path), "trained_now": False}
    log.info("training the GAN-test classifier on %d real photos (%d steps)", len(table), cfg.steps)
    model, vocab, stats = train_classifier(table, cfg, device)
    save_classifier(path, model, vocab, cfg, fp, stats)
    info = {"fingerprint": fp, **stats, "config": asdict(cfg), "path": str(path), "trained_now": True}
    return model, vocab, info


@torch.inference_mode()
def classify(model: ProductClassifier, images: np.ndarray, device, batch: int = 256):
    """uint8 NHWC images -> (type index, colour index, features) as numpy arrays."""
    types, colours, feats = [], [], []
    for i in range(0, len(images), batch):
        h = model.features(uint8_to_input(images[i : i + batch], device))
        types.append(model.type_head(h).argmax(1).cpu())
        colours.append(model.colour_head(h).argmax(1).cpu())
        feats.append(h.float().cpu())
    if not feats:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, model.feature_dim), np.float32)
    return torch.cat(types).numpy(), torch.cat(colours).numpy(), torch.cat(feats).numpy()
