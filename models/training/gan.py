"""Train the text-conditioned GAN: `python -m models.train --data PACK.npz --steps 20000 --out runs/x`.

Multi-GPU (or multi-process CPU) with the same script: `torchrun --nproc_per_node=N -m models.train ...`.
Each run directory gets config.json, metrics.csv, sample grids at fixed seeds and captions, and
checkpoints; `--resume` continues exactly where the last checkpoint left off.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import GANConfig, TrainConfig
from models.data import CaptionBank, LabelVocab, images_to_tensor, load_table, tensor_to_images
from models.generate import embed_reference, reference_encoder
from models.networks import Discriminator, Generator
from models.sampling import resolve_device, seed_noise
from models.training.augment import diff_augment
from models.training.losses import (
    LOSSES,
    accuracy,
    auxiliary_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mode_seeking_loss,
)
from models.training.runs import append_metrics, progress_state, restore_progress, run_stage, stage_parser

log = logging.getLogger(__name__)

SAMPLE_CAPTIONS = [
    "navy blue shirts, men", "red dresses, women", "black casual shoes", "white tshirts, men",
    "blue jeans", "brown handbags, women", "pink tops, women", "grey sweatshirts",
]
SAMPLE_SEEDS = list(range(8))
METRIC_FIELDS = ["step", "loss_d", "loss_g", "d_acc_real", "d_acc_fake", "aux_type_acc_real",
                 "aux_colour_acc_real", "aux_type_acc_fake", "aux_colour_acc_fake", "img_per_s", "elapsed_s"]


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rank, self.world = _init_distributed()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)  # all sampling draws here
        self._load_data()
        self.gan_cfg = GANConfig(g_width=cfg.g_width, d_width=cfg.d_width, image_dim=self.image_dim,
                                 n_article_types=len(self.vocab.article_types), n_colours=len(self.vocab.colours),
                                 article_types=self.vocab.article_types, colours=self.vocab.colours)
        self.G = Generator(self.gan_cfg).to(self.device)
        self.D = Discriminator(self.gan_cfg).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.step = 0
        self.elapsed = 0.0
        if cfg.init_from:
            self.warm_start(cfg.init_from)
        self.G_train, self.D_train = self.G, self.D
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train, self.D_train = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)

    # ---- data -----------------------------------------------------------------------------------
    def _load_data(self) -> None:
        from models.text_encoder import TextEncoder

        table = load_table(self.cfg.data, self.cfg.data_format, limit=self.cfg.limit or None)
        train = table.split(validation=False) if self.cfg.holdout else table
        if len(train) == 0:
            raise ValueError(f"no training images in {self.cfg.data}")
        self.vocab = LabelVocab.from_rows(train.rows)
        self.bank = CaptionBank(train, TextEncoder(), self.cfg.cache_dir)
        self.images = torch.from_numpy(train.images).to(self.device)  # uint8 NHWC, converted per batch
        self.labels = torch.tensor([self.vocab.encode(r) for r in train.rows], device=self.device)
        self.sample_text = TextEncoder().encode(SAMPLE_CAPTIONS).to(self.device)
        self.image_encoder, self.image_embeddings, self.image_dim = None, None, 0
        self.image_encoder_payload = None
        if self.cfg.image_encoder:
            self._load_image_condition(train.images)
        log.info("training on %d products (%d held out)", len(train), len(table) - len(train))

    def _load_image_condition(self, images) -> None:
        """Embeddings of the grey training photos from a frozen retrieval encoder: the generator learns
        shape and style from them while the caption keeps deciding the colour. The encoder is copied into
        the run (and later the bundled generator), so retraining the search model cannot break it."""
        own_copy = self.out / "image_encoder.pt"
        if not own_copy.exists() and self.rank == 0:
            payload = load_checkpoint(self.cfg.image_encoder)
            save_checkpoint(own_copy, {"state_dict": payload["state_dict"],
                                       "config": {"embedding": payload["config"]["embedding"]}})
        if self.world > 1:
            dist.barrier()
        self.image_encoder_payload = load_checkpoint(own_copy)
        self.image_encoder = reference_encoder(self.image_encoder_payload).to(self.device)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), 512):
                batch = images_to_tensor(images[start : start + 512]).to(self.device)
                chunks.append(embed_reference(self.image_encoder, batch))
        self.image_embeddings = torch.cat(chunks)
        self.image_dim = self.image_embeddings.shape[1]

    def batch(self):
        idx = torch.randint(0, len(self.images), (self.cfg.batch,), generator=self.rng)
        real = self.images[idx.to(self.device)].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        text = self.bank.sample(idx.tolist(), self.rng).to(self.device)
        return real, text, self.labels[idx.to(self.device)], self.image_condition(idx)

    def image_condition(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The image embedding per sample, zeroed ("no image") for a random `image_dropout` share."""
        if self.image_embeddings is None:
            return None
        keep = (torch.rand(len(idx), generator=self.rng) >= self.cfg.image_dropout).float().to(self.device)
        return self.image_embeddings[idx.to(self.device)] * keep[:, None]

    def image_consistency(self, fake: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """1 - cosine between the generated image's grey embedding and its image condition."""
        if image is None:
            return torch.zeros((), device=fake.device)
        given = image.norm(dim=1) > 0
        if not given.any():
            return torch.zeros((), device=fake.device)
        embedded = embed_reference(self.image_encoder, fake[given])
        return (1 - (embedded * image[given]).sum(dim=1)).mean()

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.gan_cfg.z_dim, generator=self.rng).to(self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.augment, self.rng)

    # ---- one step -------------------------------------------------------------------------------
    def d_step(self) -> dict:
        cfg = self.cfg
        real, text, labels, image = self.batch()
        with torch.no_grad():
            fake = self.G_train(self.noise(len(real)), text, image)
        wrong_text = text.roll(1, dims=0)  # another product's caption: matching-aware D
        parts = [self.augment(real), self.augment(fake)]
        if cfg.loss == "wgan-gp":
            eps = torch.rand(len(real), 1, 1, 1, generator=self.rng).to(self.device)
            parts.append((eps * parts[0] + (1 - eps) * parts[1]).requires_grad_(True))
        x = torch.cat(parts)
        scores, wrong, type_logits, colour_logits = self.D_train(x, text.repeat(len(parts), 1), wrong_text)
        n = len(real)
        s_real, s_fake = scores[:n], scores[n : 2 * n]
        loss = discriminator_loss(cfg.loss, s_real, s_fake, wrong, cfg.label_smoothing, cfg.mismatch_weight)
        if cfg.loss == "wgan-gp":
            loss = loss + cfg.gp_weight * gradient_penalty(scores[2 * n :], parts[2])
        t_logits = type_logits[:n] if type_logits is not None else None
        c_logits = colour_logits[:n] if colour_logits is not None else None
        loss = loss + cfg.aux_weight * self.aux_loss(t_logits, c_logits, labels)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"loss_d": loss.item(), "d_acc_real": (s_real > 0).float().mean().item(),
                "d_acc_fake": (s_fake < 0).float().mean().item(),
                "aux_type_acc_real": accuracy(t_logits, labels[:, 0]),
                "aux_colour_acc_real": accuracy(c_logits, labels[:, 1])}

    def g_step(self) -> dict:
        cfg = self.cfg
        _, text, labels, image = self.batch()
        if cfg.mode_seeking:  # pairs of samples with one condition and two seeds
            half = len(text) // 2
            text, labels = text[:half].repeat(2, 1), labels[:half].repeat(2, 1)
            image = image[:half].repeat(2, 1) if image is not None else None
        z = self.noise(len(text))
        fake = self.G_train(z, text, image)
        scores, _, type_logits, colour_logits = self.D_train(self.augment(fake), text)
        loss = generator_loss(cfg.loss, scores)
        if cfg.mode_seeking:
            loss = loss + cfg.mode_seeking * mode_seeking_loss(fake, z)
        loss = loss + cfg.aux_weight_g * self.aux_loss(type_logits, colour_logits, labels)
        loss = loss + cfg.image_weight * self.image_consistency(fake, image)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.update_ema()
        return {"loss_g": loss.item(), "aux_type_acc_fake": accuracy(type_logits, labels[:, 0]),
                "aux_colour_acc_fake": accuracy(colour_logits, labels[:, 1])}

    @staticmethod
    def aux_loss(type_logits, colour_logits, labels) -> torch.Tensor:
        return auxiliary_loss(type_logits, labels[:, 0]) + auxiliary_loss(colour_logits, labels[:, 1])

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # warm-up: early EMA tracks G
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ---- loop -----------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        main = self.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            config = {"train": cfg.to_dict(), "gan": self.gan_cfg.to_dict()}
            (self.out / "config.json").write_text(json.dumps(config, indent=2))
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not main, desc="train", unit="step")
        window_start, window_images = time.perf_counter(), 0
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            for _ in range(cfg.n_critic):
                stats = self.d_step()
            stats.update(self.g_step())
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            window_images += cfg.batch * (cfg.n_critic + 1) * self.world
            bar.update(1)
            if main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                stats["img_per_s"] = window_images / max(time.perf_counter() - window_start, 1e-9)
                window_start, window_images = time.perf_counter(), 0
                self.log_metrics(stats)
                bar.set_postfix(d=f"{stats['loss_d']:.2f}", g=f"{stats['loss_g']:.2f}")
            if main and (self.step % cfg.sample_every == 0 or self.step == cfg.steps):
                self.save_samples()
            if main and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.save()
        bar.close()
        if self.world > 1:
            dist.barrier()

    def log_metrics(self, stats: dict) -> None:
        append_metrics(self.out / "metrics.csv", METRIC_FIELDS, self.step, self.elapsed, stats, digits=4)

    @torch.no_grad()
    def save_samples(self) -> None:
        """Grid: one row per fixed caption, one column per fixed seed, from the EMA generator."""
        from PIL import Image

        n_cap, n_seed = len(SAMPLE_CAPTIONS), len(SAMPLE_SEEDS)
        z = seed_noise(SAMPLE_SEEDS, self.gan_cfg.z_dim).to(self.device).repeat(n_cap, 1)
        text = self.sample_text.repeat_interleave(n_seed, dim=0)
        images = tensor_to_images(self.G_ema(z, text))
        grid = Image.new("RGB", (64 * n_seed, 64 * n_cap), "white")
        for i, img in enumerate(images):
            grid.paste(img, (64 * (i % n_seed), 64 * (i // n_seed)))
        (self.out / "samples").mkdir(exist_ok=True)
        grid.save(self.out / "samples" / f"step{self.step:06d}.png")

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        extra = {"image_encoder": self.image_encoder_payload} if self.image_encoder is not None else {}
        save_checkpoint(self.out / "checkpoint.pt", {**extra,
            "state_dict": {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict()},
            "config": {"gan": self.gan_cfg.to_dict(), "train": self.cfg.to_dict()},
            "optimizer": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            **progress_state(self),
        })

    def warm_start(self, path: str | Path) -> None:
        """Start from another run's weights; layers that run lacked (the image slot) keep their init."""
        state = load_checkpoint(path, map_location=self.device)["state_dict"]
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            missing, unexpected = module.load_state_dict(state[name], strict=False)
            if unexpected or any(not key.startswith("embed.image") for key in missing):
                raise ValueError(f"{path}: {name} does not fit this configuration ({missing + unexpected})")
        log.info("warm start from %s", path)

    def resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            module.load_state_dict(ckpt["state_dict"][name])
        self.opt_g.load_state_dict(ckpt["optimizer"]["G"])
        self.opt_d.load_state_dict(ckpt["optimizer"]["D"])
        restore_progress(self, ckpt)
        log.info("resumed from %s at step %d", path, self.step)
        return True


def _init_distributed() -> tuple[int, int]:
    """Under torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def export_generator(checkpoint: str | Path, out: str | Path, half: bool = True) -> None:
    """Bundle the EMA generator alone (fp16 by default) for the app."""
    ckpt = load_checkpoint(checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() else v)
             for k, v in ckpt["state_dict"]["G_ema"].items()}
    extra = {"image_encoder": ckpt["image_encoder"]} if "image_encoder" in ckpt else {}
    save_checkpoint(out, {"state_dict": state, "config": {"gan": ckpt["config"]["gan"]},
                          "step": ckpt["step"], "train": ckpt["config"]["train"], **extra})


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("fashiongan-train", __doc__, TrainConfig, {"loss": LOSSES}, exported="EMA generator")
    parser.add_argument("--stage", choices=["gan"], default="gan",
                        help="gan: the generator (these options); embed: the search embedding; edit: the "
                             "editing generator (`--stage embed --help` lists its options)")
    return parser


def main(argv: list[str] | None = None) -> int:
    run_stage(build_parser(), argv, TrainConfig, Trainer, export_generator)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
