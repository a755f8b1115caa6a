"""Product photos with labels and captions, from three layouts.

1. a pack: `<name>.npz` (`images` uint8 N x 64 x 64 x 3, `ids`) + `<name>_meta.csv` (the shared dev pack);
2. the Kaggle "Fashion Product Images" layout: `images/<id>.jpg` + `styles.csv`;
3. Fashion IQ: `captions/cap.*.json`, `image_splits/`, an image folder (missing images are counted).

Every layout becomes a `ProductTable`: uint8 images in memory plus one dict of labels per row.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
import os
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.captions import canonical_caption

log = logging.getLogger(__name__)

IMAGE_SIZE = 64
LABEL_FIELDS = ("articleType", "baseColour", "gender", "usage")
VAL_PERCENT = 10  # products whose id hashes below this go to the validation split


def is_validation(product_id: int | str) -> bool:
    """Deterministic split by id, so the same product is held out in every run and tool."""
    return zlib.crc32(str(product_id).encode()) % 100 < VAL_PERCENT


@dataclass
class ProductTable:
    images: np.ndarray  # uint8 (N, 64, 64, 3)
    rows: list[dict[str, str]]  # labels and title per image, same order
    skipped: int = 0  # rows whose image could not be read

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices) -> ProductTable:
        indices = list(indices)
        return ProductTable(self.images[indices], [self.rows[i] for i in indices])

    def split(self, validation: bool) -> ProductTable:
        return self.subset(i for i, r in enumerate(self.rows) if is_validation(r["id"]) == validation)


def square_on_white(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Pad to a square on white, centred, then resize: how the shared pack was made."""
    image = image.convert("RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def load_pack(npz_path: str | Path, meta_path: str | Path | None = None, limit: int | None = None):
    npz_path = Path(npz_path)
    meta_path = Path(meta_path) if meta_path else npz_path.with_name(npz_path.stem + "_meta.csv")
    with np.load(npz_path) as z:
        images, ids = z["images"], z["ids"]
    with open(meta_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(images) or any(str(i) != r["id"] for i, r in zip(ids[:100], rows[:100])):
        raise ValueError(f"{meta_path} does not match {npz_path} row by row")
    if limit:
        images, rows = images[:limit], rows[:limit]
    return ProductTable(np.ascontiguousarray(images), rows)


def load_kaggle(root: str | Path, limit: int | None = None) -> ProductTable:
    """`root/styles.csv` + `root/images/<id>.jpg`; unreadable or missing images are skipped."""
    root = Path(root)
    with open(root / "styles.csv", newline="", encoding="utf-8", errors="replace") as f:
        rows = [r for r in csv.DictReader(f) if r.get("id")]
    images, kept, skipped = [], [], 0
    for row in rows:
        if limit and len(kept) >= limit:
            break
        try:
            with Image.open(root / "images" / f"{row['id']}.jpg") as img:
                images.append(np.asarray(square_on_white(img)))
            kept.append(row)
        except (OSError, ValueError):
            skipped += 1
    if skipped:
        log.warning("%s: %d images missing or unreadable, skipped", root, skipped)
    return ProductTable(_stack(images), kept, skipped)


def load_fashioniq(root: str | Path, image_dir: str | Path | None = None, split: str = "train",
                   limit: int | None = None) -> ProductTable:
    """Fashion IQ target images with their relative captions as titles; missing images are counted."""
    root = Path(root)
    image_dir = Path(image_dir) if image_dir else root / "images"
    caption_files = sorted(glob.glob(str(root / "captions" / f"cap.*.{split}.json"))) or sorted(
        glob.glob(str(root / f"cap.*.{split}.json"))
    )
    if not caption_files:
        raise FileNotFoundError(f"no Fashion IQ caption files cap.*.{split}.json under {root}")
    images, rows, skipped = [], [], 0
    for path in caption_files:
        category = Path(path).name.split(".")[1]  # dress, shirt, toptee
        for entry in json.loads(Path(path).read_text(encoding="utf-8")):
            if limit and len(rows) >= limit:
                break
            image_path = _find_image(image_dir, entry["target"])
            if image_path is None:
                skipped += 1
                continue
            with Image.open(image_path) as img:
                images.append(np.asarray(square_on_white(img)))
            rows.append({"id": entry["target"], "articleType": _FIQ_TYPES.get(category, ""),
                         "baseColour": "", "gender": "Women" if category == "dress" else "",
                         "usage": "", "productDisplayName": " and ".join(entry["captions"])})
    if skipped:
        log.warning("Fashion IQ: %d of %d images missing, skipped", skipped, skipped + len(rows))
    return ProductTable(_stack(images), rows, skipped)


_FIQ_TYPES = {"dress": "Dresses", "shirt": "Shirts", "toptee": "Tops"}


def _find_image(image_dir: Path, asin: str) -> Path | None:
    for ext in (".jpg", ".png", ".jpeg"):
        if (image_dir / f"{asin}{ext}").exists():
            return image_dir / f"{asin}{ext}"
    return None


def _stack(images: list[np.ndarray]) -> np.ndarray:
    if not images:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return np.stack(images)


def load_table(path: str | Path, fmt: str = "auto", limit: int | None = None, **kw) -> ProductTable:
    """Open any of the three layouts; `fmt` is pack, kaggle, fashioniq or auto (guessed from files)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if fmt == "auto":
        if path.suffix == ".npz" or (path / "dev.npz").exists():
            fmt = "pack"
        elif (path / "styles.csv").exists():
            fmt = "kaggle"
        else:
            fmt = "fashioniq"
    if fmt == "pack":
        return load_pack(path / "dev.npz" if path.is_dir() else path, limit=limit, **kw)
    if fmt == "kaggle":
        return load_kaggle(path, limit=limit)
    if fmt == "fashioniq":
        return load_fashioniq(path, limit=limit, **kw)
    raise ValueError(f"unknown data format {fmt!r}: use pack, kaggle, fashioniq or auto")


# ---- captions and label vocabularies -------------------------------------------------------------

def caption_variants(row: dict[str, str]) -> list[str]:
    """Captions one product is trained with: the canonical caption the keyword detector would write
    (full, and without gender/usage, as most chat requests omit them) and the real title."""
    colours = [row["baseColour"]] if row.get("baseColour") else []
    full = canonical_caption(row.get("articleType"), colours, row.get("gender"), row.get("usage"))
    short = canonical_caption(row.get("articleType"), colours)
    variants = [full, short]
    if row.get("productDisplayName"):
        variants.append(row["productDisplayName"].strip())
    return variants


@dataclass
class LabelVocab:
    article_types: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows) -> LabelVocab:
        return cls(sorted({r["articleType"] for r in rows if r["articleType"]}),
                   sorted({r["baseColour"] for r in rows if r["baseColour"]}))

    def encode(self, row: dict[str, str]) -> tuple[int, int]:
        """Index of the item type and colour; -1 where unknown (ignored by the losses)."""
        t = self.article_types.index(row["articleType"]) if row["articleType"] in self.article_types else -1
        c = self.colours.index(row["baseColour"]) if row["baseColour"] in self.colours else -1
        return t, c


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]. A read-only array (a PIL image's view) is copied first:
    torch cannot share memory it may not write."""
    images = images if images.flags.writeable else images.copy()
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """NCHW RGB -> the same with three equal luma channels: shape and texture without colour."""
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return luma.expand(-1, 3, -1, -1)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC, quantised as the app's PNGs are."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """float NCHW in [-1, 1] -> list of PIL RGB images."""
    return [Image.fromarray(a) for a in tensor_to_uint8(x)]


class FashionDataset(torch.utils.data.Dataset):
    """Yields image tensor, a caption, its BERT tokens and labels, for any layout above.

    Training uses the same table with pre-computed caption embeddings (see `CaptionBank`) for speed;
    this class is the general-purpose view (tokenizer given -> `input_ids` and `attention_mask`).
    """

    def __init__(self, table: ProductTable, vocab: LabelVocab | None = None, tokenizer=None,
                 seed: int = 0, max_tokens: int = 64):
        self.table, self.tokenizer, self.max_tokens = table, tokenizer, max_tokens
        self.vocab = vocab or LabelVocab.from_rows(table.rows)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        row = self.table.rows[i]
        caption = self.rng.choice(caption_variants(row))
        item = {"image": images_to_tensor(self.table.images[i : i + 1])[0], "caption": caption,
                "labels": torch.tensor(self.vocab.encode(row)), "id": row["id"]}
        if self.tokenizer is not None:
            tokens = self.tokenizer(caption, truncation=True, max_length=self.max_tokens,
                                    padding="max_length", return_tensors="pt")
            item["input_ids"] = tokens["input_ids"][0]
            item["attention_mask"] = tokens["attention_mask"][0]
        return item


class CaptionBank:
    """All caption variants of a table encoded once; cached on disk keyed by the caption text."""

    def __init__(self, table: ProductTable, encoder, cache_dir: str | Path | None = None):
        self.variants = [caption_variants(r) for r in table.rows]
        texts = sorted({t for vs in self.variants for t in vs})
        self.index = {t: i for i, t in enumerate(texts)}
        self.embeddings = self._load_or_encode(texts, encoder, cache_dir)
        self.rows_to_ids = [[self.index[t] for t in vs] for vs in self.variants]

    @staticmethod
    def _load_or_encode(texts, encoder, cache_dir) -> torch.Tensor:
        key = zlib.crc32("\n".join(texts).encode()) & 0xFFFFFFFF
        cache = Path(cache_dir) / f"captions-{len(texts)}-{key:08x}.pt" if cache_dir else None
        if cache and cache.exists():
            return torch.load(cache, weights_only=True)
        log.info("encoding %d captions with the text encoder", len(texts))
        embeddings = encoder.encode(texts)
        if cache:
            os.makedirs(cache.parent, exist_ok=True)
            torch.save(embeddings, cache)
        return embeddings

    def sample(self, rows: list[int], generator: torch.Generator) -> torch.Tensor:
        """One random caption variant's embedding per row."""
        picks = torch.randint(0, 1 << 30, (len(rows),), generator=generator).tolist()
        ids = [self.rows_to_ids[r][p % len(self.rows_to_ids[r])] for r, p in zip(rows, picks)]
        return self.embeddings[ids]
