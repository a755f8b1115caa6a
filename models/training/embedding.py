"""Train the search embedding: `python -m models.training.embedding --data PACK.npz --out runs/embed`.

Images and captions of the training split (the validation split, `models.data.is_validation`, stays
out) go into one space with triplet losses mined in the batch: label level (same item type and
colour = positive, images and captions together) and product level (an image and its own title),
plus cross-entropy on item type, colour and gender heads. Batches are P x K class balanced.

The run directory gets config.json, metrics.csv (losses, throughput and validation retrieval
numbers) and checkpoint.pt; `--resume` continues exactly. `--export PATH` writes the model alone
(fp16) for the app, e.g. `--export weights/embedding.pt`.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import CaptionBank, LabelVocab, load_table
from models.sampling import resolve_device
from models.search.embedding import (
    MINING,
    EmbeddingConfig,
    EmbeddingModel,
    class_balanced_batch,
    label_masks,
    product_masks,
    triplet_loss,
)
from models.training.augment import translation
from models.training.losses import accuracy, auxiliary_loss
from models.training.runs import append_metrics, progress_state, restore_progress, run_stage, stage_parser

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "loss", "loss_label", "loss_product", "loss_aux", "type_acc", "colour_acc", "lr",
                 "img_per_s", "elapsed_s", "val_type_acc", "val_colour_acc", "val_prompt_p10_type",
                 "val_prompt_p10_colour", "val_title_r10"]


@dataclass
class EmbedTrainConfig:
    data: str = "../shared/data/fpi64/dev.npz"  # pack .npz or Kaggle folder (see models.data.load_table)
    data_format: str = "auto"  # auto | pack | kaggle
    limit: int = 0  # use only the first N products (0 = all)
    dim: int = 128  # embedding size
    width: int = 32  # image encoder base width
    cells: int = 48  # P: (item type, colour) cells per batch
    per_cell: int = 4  # K: products per cell; batch = cells * per_cell
    steps: int = 3000  # optimiser steps
    lr: float = 2e-3  # AdamW peak learning rate (warm-up, then cosine to 5%)
    warmup: int = 100
    weight_decay: float = 1e-4
    margin: float = 0.2  # label-level triplet margin (cosine similarity)
    product_margin: float = 0.1  # image <-> own-title triplet margin
    mining: str = "semi-hard"  # semi-hard | batch-hard (collapsed here at lr 2e-3) | batch-all (small batches only)
    product_weight: float = 0.5  # weight of the product-level triplet loss
    aux_weight: float = 0.5  # weight of the item type / colour / gender cross-entropy
    cell_power: float = 0.5  # cells drawn with probability ~ size ** power (0 uniform, 1 natural)
    augment: bool = True  # horizontal flip and +-4 px translation on white
    precision: str = "bf16"  # bf16: convolutions under autocast, ~2x faster on CPUs with AVX512-BF16 | fp32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch CPU threads (0 = torch default); 1 leaves room for other jobs
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 25
    out: str = "runs/embed"
    cache_dir: str = "data_cache"

    def to_dict(self) -> dict:
        return asdict(self)


class EmbeddingTrainer:
    def __init__(self, cfg: EmbedTrainConfig):
        if cfg.mining not in MINING:
            raise ValueError(f"--mining must be one of {MINING}")
        if cfg.precision not in ("bf16", "fp32"):
            raise ValueError("--precision must be bf16 or fp32")
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)  # all batch sampling draws here
        self.out = Path(cfg.out)
        self._load_data()
        self.model = EmbeddingModel(self.model_cfg).to(self.device, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.elapsed = 0, 0.0
        self.last_val: dict = {}

    # ---- data -----------------------------------------------------------------------------------
    def _load_data(self) -> None:
        from models.text_encoder import TextEncoder

        cfg = self.cfg
        table = load_table(cfg.data, cfg.data_format, limit=cfg.limit or None)
        train, val = table.split(validation=False), table.split(validation=True)
        if len(train) == 0:
            raise ValueError(f"no training products in {cfg.data}")
        vocab = LabelVocab.from_rows(train.rows)
        genders = sorted({r.get("gender", "") for r in train.rows} - {""})
        self.model_cfg = EmbeddingConfig(dim=cfg.dim, width=cfg.width, article_types=vocab.article_types,
                                         colours=vocab.colours, genders=genders)
        encoder = TextEncoder()
        self.bank = CaptionBank(train, encoder, cfg.cache_dir)
        self.images = torch.from_numpy(train.images)  # uint8 NHWC, kept on the CPU
        self.labels = torch.tensor([(*vocab.encode(r), genders.index(r["gender"]) if r.get("gender") in genders else -1)
                                    for r in train.rows])
        texts = {i: t for t, i in self.bank.index.items()}
        self.title_ids = [ids[-1] for ids in self.bank.rows_to_ids]  # the title (or the full caption)
        self.title_texts = [texts[i] for i in self.title_ids]
        groups = defaultdict(list)
        for i, (t, c, _) in enumerate(self.labels.tolist()):
            groups[(t, c)].append(i)
        self.cells = list(groups.values())
        self.cell_weights = torch.tensor([len(m) ** cfg.cell_power for m in self.cells], dtype=torch.float)
        self._load_validation(val, vocab, genders, encoder)
        log.info("training on %d products in %d cells; %d validation products", len(train), len(self.cells), len(val))

    def _load_validation(self, val, vocab, genders, encoder) -> None:
        """Validation images, labels, one "<colour> <item>" prompt per well-stocked cell, and titles
        (caption embeddings cached on disk like the training ones)."""
        self.val_images = torch.from_numpy(val.images)
        self.val_labels = torch.tensor([vocab.encode(r) for r in val.rows])
        cells = Counter(tuple(x) for x in self.val_labels.tolist() if min(x) >= 0)
        self.val_prompt_cells = [c for c, n in cells.items() if n >= 10]
        if len(val) == 0:
            return
        bank = CaptionBank(val, encoder, self.cfg.cache_dir)
        by_cell = {tuple(lab): i for i, lab in enumerate(self.val_labels.tolist())}
        self.val_prompt_emb = bank.embeddings[[bank.rows_to_ids[by_cell[c]][1] for c in self.val_prompt_cells]]
        self.val_title_emb = bank.embeddings[[ids[-1] for ids in bank.rows_to_ids]]

    def batch(self):
        rows = class_balanced_batch(self.cells, self.cell_weights, self.cfg.cells, self.cfg.per_cell, self.rng)
        x = self.images[rows].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        if self.cfg.augment:
            flip = torch.rand(len(rows), generator=self.rng) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            x = translation(x, self.rng, ratio=0.0625)
        captions = self.bank.sample(rows, self.rng)
        titles = self.bank.embeddings[[self.title_ids[r] for r in rows]]
        return rows, x, captions, titles

    # ---- one step -------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> dict:
        cfg, dev = self.cfg, self.device
        rows, x, captions, titles = self.batch()
        labels = self.labels[rows].to(dev)
        products = torch.tensor(rows, device=dev)
        self.model.train()
        x = x.to(dev).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            img, t_logits, c_logits, g_logits = self.model.image.forward_with_logits(x)
        cap = self.model.text(captions.to(dev))
        title = self.model.text(titles.to(dev))
        both = torch.cat([img, cap])
        pos, neg = label_masks(labels[:, 0].repeat(2), labels[:, 1].repeat(2), products.repeat(2))
        loss_label = triplet_loss(both, both, pos, neg, cfg.margin, cfg.mining)
        ppos, pneg = product_masks(products, [self.title_texts[r] for r in rows])
        loss_product = 0.5 * (triplet_loss(img, title, ppos, pneg, cfg.product_margin, cfg.mining)
                              + triplet_loss(title, img, ppos.T, pneg.T, cfg.product_margin, cfg.mining))
        loss_aux = (auxiliary_loss(t_logits, labels[:, 0]) + auxiliary_loss(c_logits, labels[:, 1])
                    + 0.5 * auxiliary_loss(g_logits, labels[:, 2]))
        loss = loss_label + cfg.product_weight * loss_product + cfg.aux_weight * loss_aux
        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "loss_label": loss_label.item(), "loss_product": loss_product.item(),
                "loss_aux": loss_aux.item(), "type_acc": accuracy(t_logits, labels[:, 0]),
                "colour_acc": accuracy(c_logits, labels[:, 1]), "lr": lr}

    # ---- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out numbers: head accuracy, "<colour> <item>" prompt P@10, title -> product R@10."""
        if len(self.val_images) == 0:
            return {}
        self.model.eval()
        embs, t_pred, c_pred = [], [], []
        for i in range(0, len(self.val_images), 512):
            x = self.val_images[i : i + 512].permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
            e, t, c, _ = self.model.image.forward_with_logits(x)
            embs.append(e.cpu())
            t_pred.append(t.argmax(1).cpu())
            c_pred.append(c.argmax(1).cpu())
        emb, t_pred, c_pred = torch.cat(embs), torch.cat(t_pred), torch.cat(c_pred)
        types, colours = self.val_labels[:, 0], self.val_labels[:, 1]
        out = {"val_type_acc": _masked_mean(t_pred == types, types >= 0),
               "val_colour_acc": _masked_mean(c_pred == colours, colours >= 0)}
        if len(self.val_prompt_cells):
            q = self.model.text(self.val_prompt_emb.to(self.device)).cpu()
            top = (q @ emb.T).topk(min(10, len(emb)), dim=1).indices
            want = torch.tensor(self.val_prompt_cells)
            out["val_prompt_p10_type"] = (types[top] == want[:, :1]).float().mean().item()
            out["val_prompt_p10_colour"] = (colours[top] == want[:, 1:]).float().mean().item()
        q = self.model.text(self.val_title_emb.to(self.device)).cpu()
        top = (q @ emb.T).topk(min(10, len(emb)), dim=1).indices
        out["val_title_r10"] = (top == torch.arange(len(emb))[:, None]).any(1).float().mean().item()
        return out

    # ---- loop -----------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        config = {"train": cfg.to_dict(), "embedding": self.model_cfg.to_dict()}
        (self.out / "config.json").write_text(json.dumps(config, indent=2))
        bar = tqdm(total=cfg.steps, initial=self.step, desc="embedding", unit="step")
        window_start, window_images = time.perf_counter(), 0
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            stats = self.train_step()
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            window_images += cfg.cells * cfg.per_cell
            bar.update(1)
            last = self.step == cfg.steps
            if self.step % cfg.eval_every == 0 or last:
                self.last_val = self.validate()
                stats.update(self.last_val)
            if self.step % cfg.log_every == 0 or last or self.step % cfg.eval_every == 0:
                stats["img_per_s"] = window_images / max(time.perf_counter() - window_start, 1e-9)
                window_start, window_images = time.perf_counter(), 0
                self.log_metrics(stats)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", type=f"{stats['type_acc']:.2f}",
                                colour=f"{stats['colour_acc']:.2f}")
            if self.step % cfg.checkpoint_every == 0 or last:
                self.save()
        bar.close()

    def log_metrics(self, stats: dict) -> None:
        append_metrics(self.out / "metrics.csv", METRIC_FIELDS, self.step, self.elapsed, stats, digits=5)

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        save_checkpoint(self.out / "checkpoint.pt", {
            "state_dict": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "config": {"embedding": self.model_cfg.to_dict(), "train": self.cfg.to_dict()},
            "validation": self.last_val, **progress_state(self),
        })

    def resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["config"]["embedding"] != self.model_cfg.to_dict():
            raise ValueError(f"{path} was trained with another model configuration or label set")
        self.model.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(ckpt["optimizer"])
        restore_progress(self, ckpt)
        self.last_val = dict(ckpt.get("validation", {}))
        log.info("resumed from %s at step %d", path, self.step)
        return True


def _masked_mean(hits: torch.Tensor, mask: torch.Tensor) -> float:
    return hits[mask].float().mean().item() if mask.any() else float("nan")


def export_embedding(checkpoint: str | Path, out: str | Path, half: bool = True) -> None:
    """The model alone for the app (fp16 weights; BatchNorm statistics stay fp32)."""
    ckpt = load_checkpoint(checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() and "running_" not in k else v)
             for k, v in ckpt["state_dict"].items()}
    save_checkpoint(out, {"state_dict": state, "config": {"embedding": ckpt["config"]["embedding"]},
                          "train": ckpt["config"]["train"], "step": ckpt["step"],
                          "elapsed_s": ckpt["elapsed_s"], "validation": ckpt.get("validation", {})})


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("fashiongan-train --stage embed", __doc__, EmbedTrainConfig, {"mining": MINING})
    run_stage(parser, argv, EmbedTrainConfig, EmbeddingTrainer, export_embedding)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
