"""The models behind the app, loaded once: keyword detector, text encoder, generator (and catalogue).

Used by the command line and by the GUI's worker thread; returns PIL images and plain data, so the GUI
never does tensor math. Loading is slow (seconds): call `load()` off the UI thread.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class Generated:
    caption: str
    seeds: list[int]
    images: list  # PIL.Image.Image, 64x64 RGB


@dataclass
class ModelService:
    weights: str | Path | None = None
    catalog: str | Path | None = None
    device: str = "auto"
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()
        self.detector = self.encoder = self.generator = None

    def load(self, progress: Progress = lambda message: None) -> None:
        """Load everything; raises CheckpointError / FileNotFoundError with a message naming the file."""
        with self._lock:
            if self.generator is not None:
                return
            progress("loading keyword detector ...")
            self.detector = self._timed("detector", self._load_detector)
            progress("loading text encoder ...")
            self.encoder = self._timed("text_encoder", self._load_encoder)
            progress("loading generator ...")
            self.generator = self._timed("generator", self._load_generator)
            progress("ready")

    def _timed(self, name: str, fn):
        start = time.perf_counter()
        value = fn()
        self.timings[name] = time.perf_counter() - start
        log.info("loaded %s in %.2f s", name, self.timings[name])
        return value

    def _load_detector(self):
        from app.detector import get_detector

        return get_detector()

    def _load_encoder(self):
        from models.text_encoder import TextEncoder

        return TextEncoder()

    def _load_generator(self):
        from models.generate import TextToImage

        return TextToImage(self.weights, self.device)

    @property
    def device_name(self) -> str:
        if self.generator is None:
            return "not loaded"
        dev = self.generator.device
        if dev.type == "cuda":
            import torch

            return f"GPU ({torch.cuda.get_device_name(dev)})"
        return "CPU"

    def detect(self, text: str):
        if self.detector is None:
            from app.detector import get_detector

            self.detector = get_detector()
        return self.detector(text)

    def generate(self, caption: str, seeds: list[int]) -> Generated:
        embedding = self.encoder.encode([caption])[0]
        return Generated(caption, list(seeds), self.generator.generate(embedding, list(seeds)))


def pick_seeds(n: int, seed: int | None = None) -> list[int]:
    """`n` consecutive seeds from `seed`, or from a random start; every image records its seed."""
    start = random.randrange(0, 2**31 - n) if seed is None else seed
    return list(range(start, start + n))
