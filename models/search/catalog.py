"""The catalogue index: one embedding (fp16) plus id, title, item type, colour, gender and a small JPEG
thumbnail per product, in one `.npz` file read with `allow_pickle=False` (nothing is unpickled).

A query that names an item type, colour or gender can add two re-ranking terms to the cosine score (`bonus`):
- the log-probabilities that the encoder's attribute heads give each product photo (what the image
  shows; stored per product);
- facet matches: one point per named label that equals the product's own catalogue label (what the
  seller says; every shop search filters on these facets, and photos alone cannot tell "Navy Blue"
  from "Blue" or "Casual" from "Formal Shoes" reliably); the gender facet has its own weight and
  its own rule (`gender_labels`: Unisex products are for men and for women).

Search is exact: one matrix product of the query with all embeddings (a few thousand to a few hundred
thousand products take milliseconds). Past about a million products an approximate index (FAISS IVF-PQ
or HNSW) would replace `search`; the file format stays the same.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CATALOG_VERSION = 1
THUMB_QUALITY = 70  # JPEG quality of the 64x64 thumbnails (about 1.5 KB each)
TEXT_FIELDS = {"ids": "id", "titles": "productDisplayName", "article_types": "articleType",
               "colours": "baseColour", "genders": "gender"}
REQUIRED = ("embeddings", "thumbs", "thumb_offsets", "meta", *TEXT_FIELDS)
ATTRIBUTES = ("articleType", "baseColour")  # heads whose log-probabilities are stored (optional arrays)
LOGP_FLOOR = -12.0  # log-probabilities are clipped here, so one head cannot veto a product alone
# The gender facet: a Unisex product is for men and for women (and a Unisex request takes either);
# Boys and Girls are their own. Keys and values are case-folded catalogue labels.
GENDER_ALSO = {"men": ("unisex",), "women": ("unisex",), "unisex": ("men", "women")}


class CatalogError(ValueError):
    """A catalogue file that is missing, damaged, of another version or built with another model."""


@dataclass
class Catalogue:
    embeddings: np.ndarray  # float16 (N, dim), rows L2-normalised
    ids: list[str]
    titles: list[str]
    article_types: list[str]
    colours: list[str]
    genders: list[str]
    thumbnails: list[bytes]  # JPEG files, 64x64
    meta: dict = field(default_factory=dict)  # version, model fingerprint, dim, source, created
    # Optional: {"articleType": fp16 (N, n_types) log-probs, ...}; labels in meta["attribute_labels"].
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float16)
        n = len(self.embeddings)
        lengths = {len(v) for v in (self.ids, self.titles, self.article_types, self.colours, self.genders,
                                    self.thumbnails)}
        if self.embeddings.ndim != 2 or lengths != {n}:
            raise CatalogError(f"catalogue fields disagree in length ({n} embeddings, lengths {sorted(lengths)})")
        labels = self.meta.get("attribute_labels", {})
        for key, logp in self.attributes.items():
            if logp.shape != (n, len(labels.get(key, []))):
                raise CatalogError(f"attribute log-probabilities {key} have shape {logp.shape}, expected "
                                   f"({n}, {len(labels.get(key, []))})")
        self._matrix = self.embeddings.astype(np.float32)  # searched in fp32: fp16 matmul is slow on CPUs
        self._facets = {"articleType": _facet_codes(self.article_types), "baseColour": _facet_codes(self.colours)}
        self._gender_codes, self._gender_index = _facet_codes(self.genders)
        self.path: Path | None = None  # the file it was loaded from, for messages

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def model(self) -> str:
        """Fingerprint of the embedding model that built the catalogue."""
        return str(self.meta.get("model", ""))

    # ---- search ---------------------------------------------------------------------------------
    def search(self, query, k: int = 10, exclude: Iterable[int] = (), bonus=None) -> list[tuple[int, float]]:
        """The k rows most similar (cosine, + optional bonus (N,)) to one query vector: [(row, score)]."""
        bonus = None if bonus is None else np.asarray(bonus, np.float32).reshape(1, -1)
        idx, scores = self.search_many(np.asarray(query, dtype=np.float32).reshape(1, -1), k, [list(exclude)], bonus)
        return [(int(i), float(s)) for i, s in zip(idx[0], scores[0]) if i >= 0]

    def attribute_bonus(self, wanted: list[dict], weight: float) -> np.ndarray | None:
        """(Q, N): weight * sum of the stored log-probabilities of the labels each query names
        ({"articleType": "Dresses", "baseColour": "Red"}; missing or unknown labels add nothing)."""
        if not weight or not self.attributes:
            return None
        labels = self.meta.get("attribute_labels", {})
        index = {key: {lab: i for i, lab in enumerate(labels.get(key, []))} for key in self.attributes}
        bonus = np.zeros((len(wanted), len(self)), np.float32)
        for q, want in enumerate(wanted):
            for key, logp in self.attributes.items():
                col = index[key].get((want or {}).get(key))
                if col is not None:
                    bonus[q] += np.maximum(logp[:, col].astype(np.float32), LOGP_FLOOR)
        return weight * bonus

    def label_bonus(self, wanted: list[dict], weight: float, gender_weight: float = 0.0) -> np.ndarray | None:
        """(Q, N): weight per label a query names ({"articleType": ..., "baseColour": ...}) that equals
        the product's catalogue label, ignoring case, + gender_weight where the product's gender matches a
        named "gender" (`gender_labels`); unnamed labels add nothing."""
        if not (weight or gender_weight):
            return None
        bonus = np.zeros((len(wanted), len(self)), np.float32)
        for q, want in enumerate(wanted):
            want = want or {}
            for key, (codes, index) in self._facets.items() if weight else ():
                code = index.get((want.get(key) or "").casefold())
                if code is not None:
                    bonus[q] += weight * (codes == code)
            genders = [self._gender_index[g] for g in gender_labels(want.get("gender")) if g in self._gender_index]
            if gender_weight and genders:
                bonus[q] += gender_weight * np.isin(self._gender_codes, genders)
        return bonus

    def bonus(self, wanted: list[dict], attribute_weight: float, label_weight: float,
              gender_weight: float = 0.0) -> np.ndarray | None:
        """The sum of `attribute_bonus` and `label_bonus` (None when all are off)."""
        parts = [b for b in (self.attribute_bonus(wanted, attribute_weight),
                             self.label_bonus(wanted, label_weight, gender_weight)) if b is not None]
        return sum(parts[1:], parts[0]) if parts else None

    def search_many(self, queries, k: int = 10, exclude: list[Iterable[int]] | None = None,
                    bonus: np.ndarray | None = None):
        """Rows and scores (Q, k) for a matrix of queries, by one matrix product (+ `bonus`, (Q, N),
        e.g. from `attribute_bonus`); -1 pads when k > N."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors must be (n, {self.dim}), got {q.shape}")
        scores = q @ self._matrix.T
        if bonus is not None:
            scores += bonus
        if exclude:
            for row, skip in enumerate(exclude):
                scores[row, list(skip)] = -np.inf
        k_eff = max(0, min(k, len(self)))
        if k_eff == 0:
            return np.full((len(q), 0), -1), np.zeros((len(q), 0), np.float32)
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        order = np.take_along_axis(scores, part, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(part, order, 1)
        top_scores = np.take_along_axis(scores, top, 1)
        top = np.where(np.isfinite(top_scores), top, -1)
        return top, top_scores

    def product(self, row: int, score: float | None = None) -> dict:
        """The JSON-ready description of one row (numeric ids as ints)."""
        pid = self.ids[row]
        out = {"id": int(pid) if pid.isdigit() else pid, "title": self.titles[row],
               "articleType": self.article_types[row], "baseColour": self.colours[row], "gender": self.genders[row]}
        if score is not None:
            out["score"] = round(float(score), 4)
        return out

    def thumbnail(self, row: int) -> Image.Image:
        with Image.open(io.BytesIO(self.thumbnails[row]), formats=("JPEG",)) as img:
            return img.convert("RGB")

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, table, encoder, batch_size: int = 512, source: str = "",
              progress: Callable[[int, int], None] | None = None) -> Catalogue:
        """Embed every product of a `models.data.ProductTable` with `encoder` (a `SearchModel`:
        `embed_images(uint8 NHWC) -> (n, dim)`, `fingerprint`, optionally `attribute_logprobs`)
        and compress its thumbnail."""
        chunks, logps, labels = [], [], {}
        for start in range(0, len(table), batch_size):
            batch = table.images[start : start + batch_size]
            chunks.append(np.asarray(encoder.embed_images(batch), np.float32))
            if hasattr(encoder, "attribute_logprobs"):
                logp, labels = encoder.attribute_logprobs(batch)
                logps.append(logp)
            if progress:
                progress(min(start + batch_size, len(table)), len(table))
        dim = encoder.dim
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
        rows = table.rows
        fields = {name: [str(r.get(key) or "").strip() for r in rows] for name, key in TEXT_FIELDS.items()}
        meta = {"version": CATALOG_VERSION, "model": encoder.fingerprint, "dim": dim, "source": source,
                "products": len(rows), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        attributes = {}
        if logps:
            attributes = {key: np.concatenate([lp[key] for lp in logps]).astype(np.float16) for key in labels}
            meta["attribute_labels"] = labels
        return cls(embeddings, thumbnails=[encode_thumbnail(img) for img in table.images], meta=meta,
                   attributes=attributes, **fields)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """One .npz (atomic write); strings as unicode arrays, thumbnails as one byte buffer + offsets."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(t) for t in self.thumbnails]).astype(np.int64)
        arrays = {name: np.array(getattr(self, name), dtype=str) if len(self) else np.zeros(0, "<U1")
                  for name in TEXT_FIELDS}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
        os.close(fd)
        try:
            thumbs = np.frombuffer(b"".join(self.thumbnails), np.uint8)
            arrays.update({f"attr_{key}": logp.astype(np.float16) for key, logp in self.attributes.items()})
            np.savez_compressed(tmp, embeddings=self.embeddings, thumbs=thumbs, thumb_offsets=offsets,
                                meta=np.array(json.dumps(self.meta)), **arrays)
            _seal(Path(tmp))
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; catalogues are shipped and shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path) -> Catalogue:
        """Read and check a catalogue file; anything wrong with it is a CatalogError naming the file."""
        path = Path(path)
        if not path.is_file():
            # The bundled catalogue may sit inside a read-only app folder: point at a file of the user's.
            raise CatalogError(f"catalogue not found: {path} (build one with `python main.py index ... --out FILE` "
                               "and pass `--catalog FILE`)")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"cannot read catalogue {path}: {exc.strerror or exc}") from exc
        _check_seal(raw, path)
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                missing = [key for key in REQUIRED if key not in z.files]
                if missing:
                    raise CatalogError(f"{path} is not a catalogue: it lacks {', '.join(missing)}")
                data = {key: z[key] for key in REQUIRED}
                attributes = {key: z[f"attr_{key}"] for key in ATTRIBUTES if f"attr_{key}" in z.files}
        except CatalogError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad zip, CRC or deflate errors, pickles refused, ...
            raise CatalogError(f"catalogue {path} is damaged or not a catalogue ({type(exc).__name__}: {exc})") from exc
        try:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict):
                raise ValueError(f"its metadata is a {type(meta).__name__}, not an object")
            offsets = data["thumb_offsets"].astype(np.int64)
            thumbs = data["thumbs"].tobytes()
            if (offsets.ndim != 1 or len(offsets) != len(data["ids"]) + 1 or offsets[0] != 0
                    or offsets[-1] != len(thumbs) or np.any(np.diff(offsets) < 0)):
                raise ValueError("thumbnail offsets do not match the thumbnail data")
            for name, arr in [("embeddings", data["embeddings"]), *attributes.items()]:
                if not np.issubdtype(arr.dtype, np.floating) or arr.ndim != 2 or not np.isfinite(arr).all():
                    raise ValueError(f"{name} are not a finite float matrix ({arr.dtype}, {arr.ndim}-d)")
            if meta.get("version") != CATALOG_VERSION:
                raise CatalogError(f"catalogue {path} has version {meta.get('version')}, this program reads "
                                   f"version {CATALOG_VERSION}: rebuild it with `python main.py index`")
            fields = {name: [str(v) for v in data[name].tolist()] for name in TEXT_FIELDS}
            thumbnails = [thumbs[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            catalogue = cls(data["embeddings"], thumbnails=thumbnails, meta=meta, attributes=attributes, **fields)
        except CatalogError as exc:
            if str(path) in str(exc):
                raise
            raise CatalogError(f"catalogue {path} is damaged ({exc})") from exc
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CatalogError(f"catalogue {path} is damaged ({exc})") from exc
        catalogue.path = path
        return catalogue


# The zip's archive comment holds a SHA-256 of every byte before it: the members' CRC-32s miss damage
# to the zip's own directory, so a bit flip anywhere in the file is caught this way.
SEAL_PREFIX = b"fashiongan-catalog sha256:"
SEAL_LENGTH = len(SEAL_PREFIX) + 64
_END_OF_DIRECTORY = b"PK\x05\x06"


def gender_labels(wanted: str | None) -> set[str]:
    """The case-folded catalogue genders a wanted gender matches: {"men", "unisex"} for Men; empty for none."""
    wanted = (wanted or "").casefold()
    return {wanted, *GENDER_ALSO.get(wanted, ())} if wanted else set()


def gender_match(wanted, labels) -> np.ndarray:
    """Elementwise: does each catalogue gender in `labels` match the wanted gender of its row? `wanted`
    (Q,) and `labels` (Q, ...) arrays of labels; rows whose wanted gender is empty match nothing."""
    wanted = np.asarray(wanted, dtype=str)
    folded = np.char.lower(np.asarray(labels, dtype=str))
    out = np.zeros(folded.shape, bool)
    for gender in set(wanted.tolist()):
        rows = wanted == gender
        out[rows] = np.isin(folded[rows], sorted(gender_labels(gender)))
    return out


def _facet_codes(labels: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Labels as integer codes (case folded; compared as ints, not strings) and {folded label: code};
    the empty label has no code, so an unnamed facet matches nothing."""
    folded = [(label or "").casefold() for label in labels]
    index = {label: i for i, label in enumerate(sorted(set(folded) - {""}))}
    return np.array([index.get(label, -1) for label in folded], dtype=np.int32), index


def _seal(path: Path) -> None:
    with zipfile.ZipFile(path, "a") as z:
        z.comment = SEAL_PREFIX + b"0" * 64  # placeholder of the final length
    data = path.read_bytes()
    digest = hashlib.sha256(data[:-SEAL_LENGTH]).hexdigest().encode()
    with open(path, "r+b") as f:
        f.seek(len(data) - 64)
        f.write(digest)


def _check_seal(data: bytes, path: Path) -> None:
    """Verify the seal; catalogues written without one (no archive comment) are read unchecked."""
    end = data.rfind(_END_OF_DIRECTORY)
    if end < 0 or end + 22 > len(data):
        raise CatalogError(f"catalogue {path} is damaged or not a catalogue (no zip directory)")
    comment_length = int.from_bytes(data[end + 20 : end + 22], "little")
    if end + 22 + comment_length != len(data):
        raise CatalogError(f"catalogue {path} is damaged (its zip directory does not end the file)")
    if comment_length == 0:
        return
    comment = data[end + 22 :]
    expected = SEAL_PREFIX + hashlib.sha256(data[:-SEAL_LENGTH]).hexdigest().encode()
    if comment_length != SEAL_LENGTH or comment != expected:
        raise CatalogError(f"catalogue {path} is damaged: its checksum does not match its contents")


def encode_thumbnail(image, quality: int = THUMB_QUALITY) -> bytes:
    """uint8 HWC array or PIL image -> JPEG bytes."""
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)) if not isinstance(image, Image.Image) else image
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def stratified_selection(rows: list[dict], n: int) -> list[int]:
    """`n` row indices spread over (item type, colour) cells: each cell gets a share that grows with
    the square root of its size (every cell at least one product while n allows; a big cell such as
    black t-shirts still fills a page of results, a rare one is not drowned), members in a fixed
    pseudo-random order (CRC32 of the id), so the same input always gives the same catalogue."""
    if n >= len(rows):
        return list(range(len(rows)))
    cells: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        cells.setdefault((r.get("articleType", ""), r.get("baseColour", "")), []).append(i)
    groups = sorted(cells.values(), key=len, reverse=True)
    for members in groups:
        members.sort(key=lambda i: zlib.crc32(str(rows[i].get("id", i)).encode()))

    def quotas(scale: float) -> list[int]:
        return [min(len(m), max(1, int(scale * len(m) ** 0.5))) for m in groups]

    low, high = 0.0, float(len(rows))
    for _ in range(60):  # the largest scale whose quotas still fit in n
        mid = (low + high) / 2
        low, high = (mid, high) if sum(quotas(mid)) <= n else (low, mid)
    share = quotas(low)
    if sum(share) > n:  # more cells than n: one product from each of the n largest cells
        share = [1 if i < n else 0 for i in range(len(groups))]
    for i in range(len(groups)):  # what rounding left over goes to the largest cells
        if sum(share) >= n:
            break
        share[i] += min(len(groups[i]) - share[i], n - sum(share))
    return sorted(i for members, q in zip(groups, share) for i in members[:q])


def load_folder(images_dir: str | Path, styles_csv: str | Path, limit: int | None = None):
    """The Kaggle layout with the folder and CSV anywhere: `images_dir/<id>.jpg` + `styles.csv`.
    Images are opened with the upload checks (models.images), padded square on white, 64x64;
    missing or unreadable ones are skipped and counted."""
    from models.data import ProductTable, square_on_white
    from models.images import open_image

    images_dir = Path(images_dir)
    with open(styles_csv, newline="", encoding="utf-8", errors="replace") as f:
        rows = [r for r in csv.DictReader(f) if r.get("id")]
    images, kept, skipped = [], [], 0
    for row in rows:
        if limit and len(kept) >= limit:
            break
        path = next((images_dir / f"{row['id']}{ext}" for ext in (".jpg", ".jpeg", ".png")
                     if (images_dir / f"{row['id']}{ext}").exists()), None)
        try:
            if path is None:
                raise ValueError("missing")
            images.append(np.asarray(square_on_white(open_image(path))))
            kept.append({k: v for k, v in row.items() if isinstance(k, str)})
        except ValueError:
            skipped += 1
    stacked = np.stack(images) if images else np.zeros((0, 64, 64, 3), np.uint8)
    return ProductTable(stacked, kept, skipped)
