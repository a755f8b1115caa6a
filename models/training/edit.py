"""Train the editing generator: `python -m models.train --stage edit --data PACK.npz --out runs/edit`.

No paired data (StarGAN, ManiGAN): each training photo is
- reconstructed from its own caption and no noise (L1 + a grey-feature loss: the photo back as it is);
- edited to another colour of its item type (a caption it does not match), and that edit judged by a
  matching-aware projection discriminator with auxiliary type/colour heads and by the frozen search
  encoder's colour head, while its grey features stay the photo's (the shape, print and details that
  the caption does not name);
- edited back with its own caption (the cycle: the photo again);
- edited twice with two noise vectors that must give two different images (mode seeking).
The run directory gets config.json, metrics.csv, sample grids (reference | reconstruction | edits at
fixed seeds) and checkpoint.pt; `--resume` continues exactly; `--export PATH` writes the EMA generator.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.captions import canonical_caption
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import GANConfig
from models.data import CaptionBank, LabelVocab, load_table, tensor_to_images, to_grayscale
from models.editing import EditConfig, EditGenerator
from models.networks import Discriminator
from models.resources import WEIGHTS_DIR
from models.sampling import resolve_device, seed_noise
from models.training.augment import diff_augment
from models.training.losses import accuracy, auxiliary_loss, bounded_diversity_loss, discriminator_loss, generator_loss
from models.training.runs import append_metrics, progress_state, restore_progress, run_stage, stage_parser

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "loss_d", "loss_g", "rec_l1", "cycle_l1", "structure", "judge_colour", "diversity",
                 "mask_mean", "background_l1",
                 "d_acc_real", "d_acc_fake", "aux_colour_acc_real", "aux_colour_acc_edit",
                 "aux_type_acc_edit", "img_per_s", "elapsed_s"]
SAMPLE_COLOURS = ["Blue", "Red", "Black", "Green"]  # the grid's target colours, two seeds for the first two
SAMPLE_PHOTOS = 8  # fixed held-out photos (training photos when the data has no held-out split)


@dataclass
class EditTrainConfig:
    data: str = "../shared/data/fpi64/dev.npz"  # pack .npz or Kaggle folder (see models.data.load_table)
    data_format: str = "auto"  # auto | pack | kaggle
    limit: int = 0  # use only the first N products (0 = all)
    holdout: bool = True  # keep the validation split out of training
    width: int = 16  # generator base width (models.editing.EditConfig)
    z_dim: int = 16
    d_width: int = 32  # discriminator base width
    batch: int = 32
    steps: int = 8000  # generator updates
    lr_g: float = 5e-4  # two-time-scale update rule
    lr_d: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99
    rec_weight: float = 10.0  # L1 of the reconstruction and of the cycle
    cycle_weight: float = 10.0
    structure_weight: float = 2.0  # grey-feature distance of reconstructions (and edits) to the photo
    edit_structure: float = 0.25  # the edits' share of it: a new colour changes the grey image's lightness too
    aux_weight: float = 1.0  # auxiliary type / colour heads (D on real photos, G on edits)
    judge_weight: float = 5.0  # the frozen search encoder's colour head on edits (see FrozenJudge)
    mismatch_weight: float = 0.5  # real photo + another colour's caption counts as fake
    diversity_weight: float = 1.0  # two seeds of one edit must differ (bounded: see diversity_ceiling)
    diversity_ceiling: float = 0.06  # mean |pixel difference| per unit of noise distance worth rewarding
    mask_weight: float = 0.0  # > 0 keeps the mask to what the edit must change
    background_weight: float = 10.0  # L1 of the edit to the photo where the photo is white background
    augment: str = "translation,cutout"  # DiffAugment for D; no colour jitter (colour is the condition)
    ema_decay: float = 0.999
    feature_encoder: str = str(WEIGHTS_DIR / "embedding.pt")  # frozen search encoder (FrozenJudge)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch default)
    sample_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 50
    out: str = "runs/edit"
    cache_dir: str = "data_cache"

    def to_dict(self) -> dict:
        return asdict(self)


BACKGROUND_LEVEL = 0.84  # [-1, 1] scale: every channel above it (235 of 255) counts as white background


def background_l1(edit: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Mean |edit - photo| over the photo's white background: a recolour leaves it white."""
    background = (photo.min(dim=1, keepdim=True).values > BACKGROUND_LEVEL).float()
    return ((edit - photo).abs() * background).sum() / (3 * background.sum()).clamp(min=1)


class FrozenJudge(torch.nn.Module):
    """The frozen search encoder, trained on real photos, in two roles: its 16 px feature maps of the grey
    image (shape, print and texture without colour), so an edit can change colour and still be held to
    the photo's structure; and its colour head, a judge that knows real colours from the first step
    (the jointly trained D's heads take thousands of steps to get there)."""

    def __init__(self, path: str | Path, colours: list[str]):
        super().__init__()
        from models.generate import reference_encoder

        payload = load_checkpoint(path)
        self.encoder = reference_encoder(payload)
        self.structure_layers = self.encoder.features[:5]  # through the 16 px block
        own = payload["config"]["embedding"]["colours"]
        # the trainer's colour index -> the encoder's (-1: a colour the encoder does not know)
        self.register_buffer("colour_index", torch.tensor([own.index(c) if c in own else -1 for c in colours]))
        self.requires_grad_(False).eval()

    def structure(self, x: torch.Tensor) -> torch.Tensor:
        return self.structure_layers(to_grayscale(x))

    def colour_loss(self, x: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        _, _, logits, _ = self.encoder.forward_with_logits(x)
        return auxiliary_loss(logits, self.colour_index[colours.clamp(min=0)].where(colours >= 0, -1))

    def train(self, mode: bool = True):  # always in eval mode (BatchNorm statistics frozen)
        return super().train(False)


class TargetSampler:
    """Another colour for a photo's item type, drawn with weight sqrt(count) among the colours that
    type has in the training data, so rare types still get edits their catalogue could hold."""

    def __init__(self, rows: list[dict], vocab: LabelVocab):
        counts: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            if r["articleType"] and r["baseColour"]:
                counts[r["articleType"]][r["baseColour"]] += 1
        overall = Counter(r["baseColour"] for r in rows if r["baseColour"])
        self.common = [c for c, _ in overall.most_common(12)]
        self.options = {t: (list(c), torch.tensor([math.sqrt(n) for n in c.values()])) for t, c in counts.items()}

    def colour(self, article_type: str, current: str, rng: torch.Generator) -> str:
        colours, weights = self.options.get(article_type, (self.common, torch.ones(len(self.common))))
        keep = [i for i, c in enumerate(colours) if c != current]
        if not keep:
            colours, keep, weights = self.common, [i for i, c in enumerate(self.common) if c != current], \
                torch.ones(len(self.common))
        pick = torch.multinomial(weights[keep], 1, generator=rng).item()
        return colours[keep[pick]]


class EditTrainer:
    def __init__(self, cfg: EditTrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rng = torch.Generator().manual_seed(cfg.seed)  # all sampling draws from here
        self._load_data()
        self.edit_cfg = EditConfig(width=cfg.width, z_dim=cfg.z_dim, article_types=self.vocab.article_types,
                                   colours=self.vocab.colours)
        self.d_cfg = GANConfig(d_width=cfg.d_width, n_article_types=len(self.vocab.article_types),
                               n_colours=len(self.vocab.colours))
        self.G = EditGenerator(self.edit_cfg).to(self.device)
        self.D = Discriminator(self.d_cfg).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.judge = FrozenJudge(cfg.feature_encoder, self.vocab.colours).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.step, self.elapsed = 0, 0.0

    # ---- data -----------------------------------------------------------------------------------
    def _load_data(self) -> None:
        from models.text_encoder import TextEncoder

        table = load_table(self.cfg.data, self.cfg.data_format, limit=self.cfg.limit or None)
        train = table.split(validation=False) if self.cfg.holdout else table
        if len(train) == 0:
            raise ValueError(f"no training images in {self.cfg.data}")
        held_out = table.split(validation=True) if self.cfg.holdout else table
        self.rows = train.rows
        self.vocab = LabelVocab.from_rows(train.rows)
        self.encoder = TextEncoder()
        self.bank = CaptionBank(train, self.encoder, self.cfg.cache_dir)
        self.targets = TargetSampler(train.rows, self.vocab)
        self.images = torch.from_numpy(train.images).to(self.device)
        self.labels = torch.tensor([self.vocab.encode(r) for r in train.rows], device=self.device)
        self.sample_table = (held_out if len(held_out) else train).subset(range(min(SAMPLE_PHOTOS, len(held_out)
                                                                                    or len(train))))
        log.info("edit training on %d products (%d held out)", len(train), len(table) - len(train))

    def batch(self):
        idx = torch.randint(0, len(self.images), (self.cfg.batch,), generator=self.rng)
        photo = self.images[idx.to(self.device)].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        own = self.bank.sample(idx.tolist(), self.rng).to(self.device)
        captions, target_labels = [], []
        for i in idx.tolist():
            row = self.rows[i]
            colour = self.targets.colour(row["articleType"], row["baseColour"], self.rng)
            with_gender = torch.rand(1, generator=self.rng).item() < 0.5
            captions.append(canonical_caption(row["articleType"] or None, [colour],
                                              row["gender"] if with_gender else None))
            target_labels.append(self.vocab.encode({"articleType": row["articleType"], "baseColour": colour}))
        wanted = self.encode(captions)
        return photo, own, wanted, self.labels[idx.to(self.device)], torch.tensor(target_labels, device=self.device)

    def encode(self, captions: list[str]) -> torch.Tensor:
        return self.encoder.encode_alone(captions).to(self.device)  # the same values after a resume

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.edit_cfg.z_dim, generator=self.rng).to(self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.augment, self.rng)

    # ---- one step -------------------------------------------------------------------------------
    def step_once(self) -> dict:
        """One generator forward feeds both updates (pix2pix style): D learns from the edits, detached,
        then G from D's updated judgement of the same edits."""
        cfg = self.cfg
        photo, own, wanted, labels, target_labels = self.batch()
        n, half = len(photo), len(photo) // 2
        z = self.noise(n + half)
        edits, mask = self.G(torch.cat([photo, photo[:half]]), torch.cat([wanted, wanted[:half]]),
                             torch.cat([own, own[:half]]), z, return_mask=True)
        edit, second = edits[:n], edits[n:]
        stats = self.d_update(photo, edit.detach(), own, wanted, labels)

        scores, _, type_logits, colour_logits = self.D(self.augment(edit), wanted)
        adv = generator_loss("hinge", scores)
        aux = auxiliary_loss(type_logits, target_labels[:, 0]) + auxiliary_loss(colour_logits, target_labels[:, 1])
        rec = self.G(photo, own, own)
        back = self.G(edit, own, wanted)
        rec_l1, cycle_l1 = (rec - photo).abs().mean(), (back - photo).abs().mean()
        photo_features = self.judge.structure(photo)
        structure = (F.l1_loss(self.judge.structure(rec), photo_features)
                     + cfg.edit_structure * F.l1_loss(self.judge.structure(edit), photo_features))
        judged = self.judge.colour_loss(edit, target_labels[:, 1])
        diversity = bounded_diversity_loss(edit[:half], second, z[:half], z[n:], cfg.diversity_ceiling)
        mask_mean = mask[:n].mean()
        background = background_l1(edit, photo)
        loss = (adv + cfg.aux_weight * aux + cfg.rec_weight * rec_l1 + cfg.cycle_weight * cycle_l1
                + cfg.background_weight * background
                + cfg.structure_weight * structure + cfg.judge_weight * judged
                + cfg.diversity_weight * diversity + cfg.mask_weight * mask_mean)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.update_ema()
        return {**stats, "loss_g": loss.item(), "rec_l1": rec_l1.item(), "cycle_l1": cycle_l1.item(),
                "structure": structure.item(), "judge_colour": judged.item(), "diversity": -diversity.item(),
                "mask_mean": mask_mean.item(), "background_l1": background.item(),
                "aux_colour_acc_edit": accuracy(colour_logits, target_labels[:, 1]),
                "aux_type_acc_edit": accuracy(type_logits, target_labels[:, 0])}

    def d_update(self, photo, edit, own, wanted, labels) -> dict:
        cfg = self.cfg
        x = torch.cat([self.augment(photo), self.augment(edit)])
        # the real photo paired with the wanted (other colour) caption is the matching-aware negative
        scores, wrong, type_logits, colour_logits = self.D(x, torch.cat([own, wanted]), wanted)
        n = len(photo)
        s_real, s_fake = scores[:n], scores[n:]
        loss = discriminator_loss("hinge", s_real, s_fake, wrong, mismatch_weight=cfg.mismatch_weight)
        loss = loss + cfg.aux_weight * (auxiliary_loss(type_logits[:n], labels[:, 0])
                                        + auxiliary_loss(colour_logits[:n], labels[:, 1]))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"loss_d": loss.item(), "d_acc_real": (s_real > 0).float().mean().item(),
                "d_acc_fake": (s_fake < 0).float().mean().item(),
                "aux_colour_acc_real": accuracy(colour_logits[:n], labels[:, 1])}

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - decay)

    # ---- loop -----------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        config = {"train": cfg.to_dict(), "edit": self.edit_cfg.to_dict(), "discriminator": self.d_cfg.to_dict()}
        (self.out / "config.json").write_text(json.dumps(config, indent=2))
        bar = tqdm(total=cfg.steps, initial=self.step, desc="edit", unit="step")
        window_start, window_images = time.perf_counter(), 0
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            stats = self.step_once()
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            window_images += cfg.batch
            bar.update(1)
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                stats["img_per_s"] = window_images / max(time.perf_counter() - window_start, 1e-9)
                window_start, window_images = time.perf_counter(), 0
                append_metrics(self.out / "metrics.csv", METRIC_FIELDS, self.step, self.elapsed, stats, digits=4)
                bar.set_postfix(rec=f"{stats['rec_l1']:.3f}", colour=f"{stats['aux_colour_acc_edit']:.2f}")
            if self.step % cfg.sample_every == 0 or last:
                self.save_samples()
            if self.step % cfg.checkpoint_every == 0 or last:
                self.save()
        bar.close()

    @torch.no_grad()
    def save_samples(self) -> None:
        """One row per fixed photo: the photo, its reconstruction, then edits to SAMPLE_COLOURS (the
        first two colours at seeds 0 and 1), all from the EMA generator."""
        from PIL import Image

        table = self.sample_table
        photo = torch.from_numpy(table.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
        own = self.encoder.encode([canonical_caption(r["articleType"] or None,
                                                     [r["baseColour"]] if r["baseColour"] else [])
                                   for r in table.rows]).to(self.device)
        columns = [photo, self.G_ema(photo, own, own)]
        for k, colour in enumerate(SAMPLE_COLOURS):
            text = self.encoder.encode([canonical_caption(r["articleType"] or None, [colour])
                                        for r in table.rows]).to(self.device)
            for seed in ([0, 1] if k < 2 else [0]):
                z = seed_noise([seed] * len(photo), self.edit_cfg.z_dim).to(self.device)
                columns.append(self.G_ema(photo, text, own, z))
        grid = Image.new("RGB", (64 * len(columns), 64 * len(photo)), "white")
        for c, images in enumerate(columns):
            for r, img in enumerate(tensor_to_images(images)):
                grid.paste(img, (64 * c, 64 * r))
        (self.out / "samples").mkdir(exist_ok=True)
        grid.save(self.out / "samples" / f"step{self.step:06d}.png")

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        save_checkpoint(self.out / "checkpoint.pt", {
            "state_dict": {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict()},
            "config": {"edit": self.edit_cfg.to_dict(), "discriminator": self.d_cfg.to_dict(),
                       "train": self.cfg.to_dict()},
            "optimizer": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            **progress_state(self),
        })

    def resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["config"]["edit"] != self.edit_cfg.to_dict():
            raise ValueError(f"{path} was trained with another generator configuration or label set")
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            module.load_state_dict(ckpt["state_dict"][name])
        self.opt_g.load_state_dict(ckpt["optimizer"]["G"])
        self.opt_d.load_state_dict(ckpt["optimizer"]["D"])
        restore_progress(self, ckpt)
        log.info("resumed from %s at step %d", path, self.step)
        return True


def export_editor(checkpoint: str | Path, out: str | Path, half: bool = True) -> None:
    """The EMA generator alone for the app (fp16)."""
    ckpt = load_checkpoint(checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"]["G_ema"].items()}
    save_checkpoint(out, {"state_dict": state, "config": {"edit": ckpt["config"]["edit"]},
                          "train": ckpt["config"]["train"], "step": ckpt["step"], "elapsed_s": ckpt["elapsed_s"]})


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("fashiongan-train --stage edit", __doc__, EditTrainConfig, exported="EMA generator")
    run_stage(parser, argv, EditTrainConfig, EditTrainer, export_editor)
    return 0
