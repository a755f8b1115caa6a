"""Seed-addressable image generation from the bundled generator checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.checkpoint import CheckpointError, load_checkpoint
from models.config import GANConfig
from models.data import images_to_tensor, tensor_to_images, to_grayscale
from models.networks import Generator
from models.resources import GENERATOR_WEIGHTS
from models.sampling import resolve_device, seed_noise


def reference_encoder(payload: dict) -> torch.nn.Module:
    """The frozen image tower of a retrieval-embedding checkpoint payload ({state_dict, config}).
    Its embedding of a grey photo is the generator's image condition (shape and style, not colour)."""
    from models.search.embedding import EmbeddingConfig, EmbeddingModel

    model = EmbeddingModel(EmbeddingConfig.from_dict(payload["config"]["embedding"]))
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    return model.image.eval().requires_grad_(False)


def embed_reference(encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """NCHW images in [-1, 1] -> image-condition embeddings."""
    return encoder(to_grayscale(images))


# Truncation trick (BigGAN): z scaled towards the mean at inference. Measured on 45 held-out "<colour> <item>"
# cells x 8 seeds (models.metrics.variety): psi 0.5 gave 0.45x the real photos' pixel variety and a classifier
# FID 2.9x its floor; psi 1 with the redraws below 0.65x and 2.4x, so the full noise is drawn.
TRUNCATION = 1.0
# About one seed in eight still lands in a region of the noise space where the bundled generator draws
# noise, not a product. Those images sit far from the caption's typical image (the z = 0 draw): mean
# absolute pixel distance above ~0.3, where good draws stay under ~0.2. Such a seed is redrawn from
# derived noise (deterministic, so the same seed still always gives the same image).
OUTLIER_DISTANCE = 0.3
MAX_REDRAWS = 4


@torch.inference_mode()
def draw_as_app(net, text: torch.Tensor, seeds: list[int], truncation: float = TRUNCATION,
                image: torch.Tensor | None = None) -> torch.Tensor:
    """One image (NCHW, [-1, 1]) per (condition row, seed), as the app draws them: z truncated, and a
    draw far from its condition's typical image (z = 0) redrawn from the seed's next noise vectors."""
    z_dim = net.cfg.z_dim

    def draw(rows: list[int], attempt: int) -> torch.Tensor:
        z = (seed_noise([seeds[i] for i in rows], z_dim, draw=attempt) * truncation).to(text.device)
        return net(z, text[rows], image[rows] if image is not None else None)

    rows = list(range(len(seeds)))
    typical = net(torch.zeros(len(rows), z_dim, device=text.device), text, image)
    out = draw(rows, 0)
    for attempt in range(1, MAX_REDRAWS + 1):
        broken = (out - typical).abs().mean(dim=(1, 2, 3)) > OUTLIER_DISTANCE
        if not broken.any():
            break
        redo = broken.nonzero().flatten().tolist()
        out[redo] = draw(redo, attempt)
    return out


CANDIDATES_PER_IMAGE = 3  # an answer of n images picks them among 3n seeds' draws
MIN_DISTANCE = 0.05  # mean |pixel difference| (0-1 scale) under which two draws count as the same product
MAX_POOL_ROUNDS = 2  # while the picks are still that close, draw up to this many pools in all (more rounds
# measured to gain < 0.01 in distance on three prompts: the generator's own range is the limit)


def pick_distinct(images: torch.Tensor, n: int, avoid: torch.Tensor | None = None) -> tuple[list[int], float]:
    """Indices of n of `images` (NCHW in [-1, 1], in seed order) whose smallest mean absolute pixel difference,
    to each other and to `avoid` (images already shown), is as large as possible: greedy farthest-point
    selection (from the first draw, or from the one farthest from `avoid`), then single swaps while any
    raises that smallest difference. Deterministic. Returns the indices and that smallest difference."""
    flat = images.flatten(1).float()
    d = torch.cdist(flat, flat, p=1) / flat.shape[1] / 2
    d.fill_diagonal_(float("inf"))
    to_avoid = torch.full((len(flat),), float("inf"), device=flat.device)
    if avoid is not None and len(avoid):
        to_avoid = torch.cdist(flat, avoid.flatten(1).float().to(flat.device), p=1).min(1).values / flat.shape[1] / 2
    gap, chosen = to_avoid.clone(), []
    for _ in range(min(n, len(flat))):
        masked = gap.clone()
        masked[chosen] = -1
        pick = 0 if not chosen and torch.isinf(gap).all() else int(masked.argmax())
        chosen.append(pick)
        gap = torch.minimum(gap, d[pick])
    chosen = _improve_by_swaps(chosen, d, to_avoid)
    return chosen, _spread(chosen, d, to_avoid)


def _spread(chosen: list[int], d: torch.Tensor, to_avoid: torch.Tensor) -> float:
    idx = torch.tensor(chosen)
    return float(torch.minimum(d[idx][:, idx].min(), to_avoid[idx].min()))


def _improve_by_swaps(chosen: list[int], d: torch.Tensor, to_avoid: torch.Tensor, rounds: int = 3) -> list[int]:
    best = _spread(chosen, d, to_avoid)
    for _ in range(rounds):
        improved = False
        for slot in range(len(chosen)):
            for candidate in range(len(d)):
                if candidate in chosen:
                    continue
                trial = chosen[:slot] + [candidate] + chosen[slot + 1 :]
                spread = _spread(trial, d, to_avoid)
                if spread > best:
                    chosen, best, improved = trial, spread, True
        if not improved:
            break
    return chosen


class TextToImage:
    """Loads the EMA generator once; `generate(text_embedding, seeds)` -> 64x64 PIL images."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", truncation: float = TRUNCATION):
        self.truncation = truncation
        self.path = Path(weights) if weights else GENERATOR_WEIGHTS
        self.device = resolve_device(device)
        ckpt = load_checkpoint(self.path, map_location="cpu")
        try:
            self.config = GANConfig.from_dict(ckpt["config"]["gan"])
            self.net = Generator(self.config)
            self.net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        except (KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{self.path} does not hold a generator this program can load ({exc})") from exc
        self.net.to(self.device).eval()
        self.step = int(ckpt.get("step", 0))
        self.reference = None  # image-condition encoder, in generators trained with one
        if self.config.image_dim and "image_encoder" in ckpt:
            self.reference = reference_encoder(ckpt["image_encoder"]).to(self.device)

    def noise(self, seeds: list[int], attempt: int = 0) -> torch.Tensor:
        """Truncated z per seed; a redraw takes the seed's next noise vector, never another seed's."""
        return (seed_noise(seeds, self.config.z_dim, draw=attempt) * self.truncation).to(self.device)

    @property
    def takes_images(self) -> bool:
        return self.reference is not None

    @torch.inference_mode()
    def image_condition(self, image: Image.Image) -> torch.Tensor:
        """A reference photo (any size, RGB) -> the generator's image condition."""
        from models.data import square_on_white

        pixels = np.asarray(square_on_white(image))[None]
        return embed_reference(self.reference, images_to_tensor(pixels).to(self.device))[0]

    @torch.inference_mode()
    def generate(self, text_embedding: torch.Tensor, seeds: list[int],
                 image_embedding: torch.Tensor | None = None) -> list[Image.Image]:
        """One image per seed, all for the same condition (a (384,) or (1, 384) text embedding)."""
        if not seeds:
            return []
        text = text_embedding.reshape(1, -1).to(self.device)
        image = image_embedding.reshape(1, -1).to(self.device) if image_embedding is not None else None

        n = len(seeds)
        out = draw_as_app(self.net, text.expand(n, -1), seeds, self.truncation,
                          image.expand(n, -1) if image is not None else None)
        return tensor_to_images(out)

    @torch.inference_mode()
    def generate_distinct(self, text_embedding: torch.Tensor, seeds: list[int], n: int,
                          avoid: list[Image.Image] = ()) -> tuple[list[int], list[Image.Image]]:
        """n images as different from each other (and from `avoid`, images already shown for this request)
        as the draws of `seeds` allow -> (their seeds, images); each seed alone still redraws its image."""
        if not seeds or n <= 0:
            return [], []
        text = text_embedding.reshape(1, -1).to(self.device)
        shown = images_to_tensor(np.stack([np.asarray(im) for im in avoid])).to(self.device) if avoid else None
        pool, out = list(seeds), draw_as_app(self.net, text.expand(len(seeds), -1), seeds, self.truncation)
        for _ in range(MAX_POOL_ROUNDS - 1):
            if pick_distinct(out, n, shown)[1] > MIN_DISTANCE:
                break
            more = list(range(max(pool) + 1, max(pool) + 1 + len(seeds)))  # the seeds after the pool
            pool += more
            out = torch.cat([out, draw_as_app(self.net, text.expand(len(more), -1), more, self.truncation)])
        chosen, _ = pick_distinct(out, n, shown)
        return [pool[i] for i in chosen], tensor_to_images(out[chosen])

    @torch.inference_mode()
    def generate_batch(self, text_embeddings: torch.Tensor, seeds: list[int]) -> list[Image.Image]:
        """One image per (embedding row, seed) pair, in a single forward pass."""
        z = self.noise(seeds)
        return tensor_to_images(self.net(z, text_embeddings.to(self.device)))
