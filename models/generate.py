"""Seed-addressable image generation from the bundled generator checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from models.checkpoint import CheckpointError, load_checkpoint
from models.config import GANConfig
from models.data import tensor_to_images
from models.networks import Generator
from models.resources import GENERATOR_WEIGHTS
from models.sampling import resolve_device, seed_noise


class TextToImage:
    """Loads the EMA generator once; `generate(text_embedding, seeds)` -> 64x64 PIL images."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto"):
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

    @torch.inference_mode()
    def generate(self, text_embedding: torch.Tensor, seeds: list[int],
                 image_embedding: torch.Tensor | None = None) -> list[Image.Image]:
        """One image per seed, all for the same condition (a (384,) or (1, 384) text embedding)."""
        if not seeds:
            return []
        z = seed_noise(seeds, self.config.z_dim).to(self.device)
        text = text_embedding.reshape(1, -1).to(self.device).expand(len(seeds), -1)
        image = None
        if image_embedding is not None:
            image = image_embedding.reshape(1, -1).to(self.device).expand(len(seeds), -1)
        return tensor_to_images(self.net(z, text, image))

    @torch.inference_mode()
    def generate_batch(self, text_embeddings: torch.Tensor, seeds: list[int]) -> list[Image.Image]:
        """One image per (embedding row, seed) pair, in a single forward pass."""
        z = seed_noise(seeds, self.config.z_dim).to(self.device)
        return tensor_to_images(self.net(z, text_embeddings.to(self.device)))
