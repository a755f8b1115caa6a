"""Queries against a catalogue: text, image, and composed (reference image + modification text).

- Text: the caption the keyword detector makes of the request -> text projection; optionally fused
  with the embeddings of images the generator draws for that caption (synthetic query expansion).
- Image: the image embedding (several images: their normalised mean).
- Composed: the encoder predicts the reference item's type, colour and gender; the modification text
  ("in red", "as a dress", "for men") changes what it names; the query is
  image_weight * image + text(modified caption) - old_weight * text(original caption).
Every query asks for the item type, colour and gender it names (a photo: the ones the encoder describes);
the catalogue's labels for them are facets (`Catalogue.label_bonus`).

The fusion weights below were chosen with `python -m models.metrics.evaluate_retrieval` (see its report).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.captions import canonical_caption
from models.checkpoint import CheckpointError, load_checkpoint
from models.data import IMAGE_SIZE, square_on_white
from models.resources import ASSETS_DIR, WEIGHTS_DIR
from models.search.catalog import CatalogError, Catalogue
from models.search.embedding import EmbeddingConfig, EmbeddingModel

EMBEDDING_WEIGHTS = WEIGHTS_DIR / "embedding.pt"
DEFAULT_CATALOG = ASSETS_DIR / "catalog" / "catalog.npz"
EXPANSION_SEEDS = (0, 1, 2, 3)  # generated images per text query for the expansion (fixed: repeatable)
EXPAND_DEFAULT = False  # text queries add generated images only when asked: measured not to help (see README)
EXPANSION_WEIGHT = 0.25  # weight of the generated images' mean embedding next to the text's, when on
RAW_TEXT_WEIGHT = 1.0  # weight of the raw request text next to its detected caption
COMPOSE_IMAGE_WEIGHT = 0.5  # composed queries: weight of the reference image's embedding ...
COMPOSE_OLD_WEIGHT = 0.5  # ... and of the original caption, subtracted (1, 1: the image moved by the change)
# Weight of the attribute heads' log-probabilities of the named type and colour: 0.1 helped before the
# catalogue-label facets (below); on top of them it cost colour precision, so it is off (measured).
ATTRIBUTE_WEIGHT = 0.0
LABEL_WEIGHT = 1.0  # per named type / colour the product's catalogue label matches: more than any cosine gap, so
# products matching more of the named facets come first and the embedding ranks within them
GENDER_WEIGHT = 1.1  # where the product's gender matches the named one (Unisex goes with Men and Women): a little
# more than one type or colour match, less than both, so a page fills with the named gender first; 1.5 and up cost
# the held-out titles' colour precision its target (measured, see the README)


class SearchModel:
    """The trained embedding model (image encoder + text projection), loaded for inference."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        self.path = Path(weights) if weights else EMBEDDING_WEIGHTS
        ckpt = load_checkpoint(self.path, map_location="cpu")
        try:
            self.config = EmbeddingConfig.from_dict(ckpt["config"]["embedding"])
            self.net = EmbeddingModel(self.config)
            self.net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        except (KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{self.path} does not hold an embedding model this program can load "
                                  f"({exc})") from exc
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return self.config.dim

    # ---- embeddings -----------------------------------------------------------------------------
    @staticmethod
    def to_tensor(images) -> torch.Tensor:
        """uint8 NHWC 64x64 array, or PIL images of any size (padded square on white) -> NCHW [-1, 1]."""
        if isinstance(images, np.ndarray):
            arr = images
        else:
            arr = np.stack([np.asarray(img if img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"
                                       else square_on_white(img)) for img in images])
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    @torch.inference_mode()
    def embed_images(self, images) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.net.image(self.to_tensor(images).to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_text(self, text_embeddings: torch.Tensor) -> np.ndarray:
        """(n, 384) MiniLM sentence embeddings -> (n, dim) in the shared space."""
        return self.net.text(text_embeddings.reshape(-1, self.config.text_dim).to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def attribute_logprobs(self, images) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Log-probabilities of every item type and colour per image, and the label lists."""
        _, t_logits, c_logits, _ = self.net.image.forward_with_logits(self.to_tensor(images).to(self.device))
        logp = {"articleType": t_logits.float().log_softmax(1).cpu().numpy(),
                "baseColour": c_logits.float().log_softmax(1).cpu().numpy()}
        return logp, {"articleType": list(self.config.article_types), "baseColour": list(self.config.colours)}

    @torch.inference_mode()
    def predict(self, images) -> list[dict]:
        """Item type, colour and gender of each image, with the heads' softmax confidence."""
        if len(images) == 0:
            return []
        emb, *logits = self.net.image.forward_with_logits(self.to_tensor(images).to(self.device))
        names = (("articleType", self.config.article_types), ("baseColour", self.config.colours),
                 ("gender", self.config.genders))
        out = [{"confidence": {}, "alternatives": {}} for _ in range(len(emb))]
        for (key, labels), lg in zip(names, logits):
            if lg is None:
                continue
            probs = lg.float().softmax(1).cpu()
            top_p, top_i = probs.topk(min(3, probs.shape[1]), dim=1)
            for d, ps, ids in zip(out, top_p.tolist(), top_i.tolist()):
                d[key] = labels[ids[0]]
                d["confidence"][key] = round(ps[0], 4)
                d["alternatives"][key] = [[labels[i], round(p, 4)] for i, p in zip(ids, ps)]
        for d in out:
            d["caption"] = canonical_caption(d.get("articleType"), [d["baseColour"]] if d.get("baseColour") else [])
        return out


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass
class Modification:
    """What a modification text names; empty fields keep the reference image's value."""

    article_type: str | None = None
    colours: list[str] = field(default_factory=list)
    gender: str | None = None
    attributes: list[str] = field(default_factory=list)

    @classmethod
    def from_detection(cls, det) -> Modification:
        attrs = [v for vs in (getattr(det, "attributes", None) or {}).values() for v in vs]
        types = getattr(det, "article_types", None) or []
        return cls(types[0] if types else None, list(getattr(det, "colours", None) or []),
                   getattr(det, "gender", None), attrs)


def vocabulary_modification(text: str, config: EmbeddingConfig) -> Modification:
    """Fallback without the keyword detector: catalogue colour and item names found in the text."""
    low = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()) + " "

    def find(labels):
        hits = [(low.find(f" {lab.lower()} "), lab) for lab in sorted(labels, key=len, reverse=True)]
        found, taken = [], low
        for pos, lab in hits:
            key = f" {lab.lower()} "
            if pos >= 0 and key in taken:
                found.append((pos, lab))
                taken = taken.replace(key, " _ ")
        return [lab for _, lab in sorted(found)]

    types = find(config.article_types)
    return Modification(types[0] if types else None, find(config.colours)[:1], None, [])


@dataclass
class Query:
    """A query ready to search: its vector and how it was made (JSON-ready fields)."""

    vector: np.ndarray
    mode: str  # text | image | composed
    caption: str | None = None
    expanded: bool = False
    predicted: dict | None = None  # composed / image queries: the reference image's attributes
    modified: dict | None = None  # composed queries: the attributes after the modification
    wanted: dict | None = None  # the item type / colour the query asks for (attribute re-ranking)

    def to_dict(self) -> dict:
        out = {"mode": self.mode, "caption": self.caption, "expanded": self.expanded}
        if self.predicted is not None:
            out["predicted"] = {k: v for k, v in self.predicted.items() if k != "alternatives"}
        if self.modified is not None:
            out["modified"] = self.modified
        return out


class Retriever:
    """Builds query vectors and searches one catalogue. `text_encoder`: MiniLM (`encode(list)`);
    `detect`: text -> keyword Detection (optional); `generator`: `TextToImage` (optional, expansion).
    Scores: cosine similarity + attribute_weight * (log p(type) + log p(colour)) of what the query
    names, from the catalogue photos' attribute heads, + label_weight per named type / colour that
    the product's catalogue label matches, + gender_weight where its gender matches the named one
    (all 0 = pure embedding search)."""

    def __init__(self, model: SearchModel, catalogue: Catalogue, text_encoder,
                 detect: Callable | None = None, generator=None, expansion_weight: float = EXPANSION_WEIGHT,
                 raw_text_weight: float = RAW_TEXT_WEIGHT, compose: tuple[float, float] = (
                     COMPOSE_IMAGE_WEIGHT, COMPOSE_OLD_WEIGHT),
                 attribute_weight: float = ATTRIBUTE_WEIGHT, label_weight: float = LABEL_WEIGHT,
                 gender_weight: float = GENDER_WEIGHT, check_model: bool = True):
        name = f"catalogue {catalogue.path}" if catalogue.path else "the catalogue"
        if check_model and catalogue.model and catalogue.model != model.fingerprint:
            raise CatalogError(f"{name} was built with another embedding model ({catalogue.model}, loaded "
                               f"{model.fingerprint} from {model.path}): rebuild it with `python main.py index`")
        if catalogue.dim != model.dim:
            raise CatalogError(f"{name} holds {catalogue.dim}-d embeddings, the model makes {model.dim}-d ones")
        self.model, self.catalogue, self.text_encoder = model, catalogue, text_encoder
        self.detect, self.generator = detect, generator
        self.expansion_weight, self.raw_text_weight = expansion_weight, raw_text_weight
        self.compose, self.attribute_weight, self.label_weight = tuple(compose), attribute_weight, label_weight
        self.gender_weight = gender_weight
        self._expansions: dict[tuple, np.ndarray] = {}

    # ---- text -----------------------------------------------------------------------------------
    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed_text(self.text_encoder.encode(list(texts)))

    def analyse(self, texts: Sequence[str]) -> tuple[list[str], list[dict]]:
        """Detected caption and the named item type / colour / gender of each text."""
        if self.detect is None:
            mods = [vocabulary_modification(t, self.model.config) for t in texts]
            return [t.strip().lower() for t in texts], [_wanted(m.article_type, m.colours) for m in mods]
        found = list(self.detect.pipe(list(texts))) if hasattr(self.detect, "pipe") else [self.detect(t) for t in texts]
        return [d.caption for d in found], [_wanted((d.article_types or [None])[0], d.colours, d.gender) for d in found]

    def expansion_vector(self, caption: str, seeds: Sequence[int] = EXPANSION_SEEDS) -> np.ndarray | None:
        """Mean embedding of images the generator draws for the caption; None without a generator."""
        if self.generator is None or not seeds:
            return None
        key = (caption, tuple(seeds), id(self.generator))
        if key not in self._expansions:
            images = self.generator.generate(self.text_encoder.encode([caption])[0], list(seeds))
            self._expansions[key] = normalise(self.model.embed_images(images).mean(0))
        return self._expansions[key]

    def text_query_vectors(self, texts: Sequence[str], captions: Sequence[str] | None = None,
                           expand: bool = EXPAND_DEFAULT, raw_text_weight: float | None = None,
                           expansion_weight: float | None = None) -> tuple[np.ndarray, list[bool]]:
        """Many text queries at once: caption (+ raw text) embedding, + generated-image expansion."""
        raw_w = self.raw_text_weight if raw_text_weight is None else raw_text_weight
        exp_w = self.expansion_weight if expansion_weight is None else expansion_weight
        texts = [t.strip() for t in texts]
        captions = list(captions) if captions is not None else self.analyse(texts)[0]
        vectors = self.text_vectors(captions)
        if raw_w:
            raw = self.text_vectors(texts)
            differs = np.array([t.lower() != c for t, c in zip(texts, captions)])[:, None]
            vectors = vectors + np.where(differs, raw_w * raw, 0.0)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        expanded = [False] * len(texts)
        if expand and exp_w > 0 and self.generator is not None:
            for i, caption in enumerate(captions):
                vectors[i] = normalise(vectors[i] + exp_w * self.expansion_vector(caption))
                expanded[i] = True
        return vectors, expanded

    def text_query(self, text: str, expand: bool = EXPAND_DEFAULT) -> Query:
        captions, wanted = self.analyse([text])
        vectors, expanded = self.text_query_vectors([text], captions, expand)
        return Query(vectors[0], "text", captions[0], expanded[0], wanted=wanted[0])

    # ---- images ---------------------------------------------------------------------------------
    def image_query(self, images: Sequence[Image.Image]) -> Query:
        predicted = self.model.predict(list(images)[:1])[0]
        return Query(normalise(self.model.embed_images(list(images)).mean(0)), "image", predicted["caption"],
                     predicted=predicted, wanted=_wanted(predicted.get("articleType"), [predicted.get("baseColour")],
                                                         predicted.get("gender")))

    def modify(self, predicted: dict, text: str) -> dict:
        """The reference's attributes with what the text names changed: articleType, baseColour, caption."""
        mod = (Modification.from_detection(self.detect(text)) if self.detect is not None
               else vocabulary_modification(text, self.model.config))
        article_type = mod.article_type or predicted.get("articleType")
        colours = mod.colours or ([predicted["baseColour"]] if predicted.get("baseColour") else [])
        caption = canonical_caption(article_type, colours, mod.gender, attributes=mod.attributes)
        return {"articleType": article_type, "baseColour": colours[0] if colours else None,
                "colours": colours, "gender": mod.gender, "attributes": mod.attributes, "caption": caption}

    def composed_query_vectors(self, images, texts: Sequence[str], compose: tuple[float, float] | None = None):
        """Many composed queries: a * image + text(modified caption) - b * text(original caption), with
        (a, b) = `compose`; a text that changes nothing leaves the image query.
        `images`: uint8 NHWC array or PIL images. Returns (vectors, predicted, modified)."""
        image_w, old_w = self.compose if compose is None else compose
        image_vecs = self.model.embed_images(images)
        predicted = self.model.predict(images)
        modified = [self.modify(p, t) for p, t in zip(predicted, texts)]
        new = self.text_vectors([m["caption"] for m in modified])
        old = self.text_vectors([p["caption"] for p in predicted])
        same = np.array([m["caption"] == p["caption"] for m, p in zip(modified, predicted)])[:, None]
        vectors = np.where(same, image_vecs, image_w * image_vecs + new - old_w * old)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return vectors, predicted, modified

    def composed_query(self, image: Image.Image, text: str) -> Query:
        vectors, predicted, modified = self.composed_query_vectors([image], [text])
        return Query(vectors[0], "composed", modified[0]["caption"], predicted=predicted[0], modified=modified[0],
                     wanted=composed_wanted(predicted[0], modified[0]))

    def query(self, text: str | None = None, images: Sequence[Image.Image] = (),
              expand: bool = EXPAND_DEFAULT) -> Query:
        """Text only -> text query; images only -> image query; both -> composed (first image)."""
        text = (text or "").strip()
        if text and images:
            return self.composed_query(images[0], text)
        if images:
            return self.image_query(images)
        if text:
            return self.text_query(text, expand)
        raise ValueError("a query needs text, an image or both")

    # ---- search ---------------------------------------------------------------------------------
    def search_rows(self, query: Query, k: int = 10, exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
        bonus = self.catalogue.bonus([query.wanted or {}], self.attribute_weight, self.label_weight, self.gender_weight)
        return self.catalogue.search(query.vector, k, exclude, None if bonus is None else bonus[0])

    def search(self, query: Query, k: int = 10, exclude: Sequence[int] = ()) -> list[dict]:
        return [self.catalogue.product(row, score) for row, score in self.search_rows(query, k, exclude)]


def _wanted(article_type: str | None, colours, gender: str | None = None) -> dict:
    colours = [c for c in (colours or []) if c]
    return {"articleType": article_type, "baseColour": colours[0] if colours else None, "gender": gender or None}


def composed_wanted(predicted: dict, modified: dict) -> dict:
    """What a composed query asks for: the modified type and colour, and the gender the text names or else
    the one the encoder describes in the photo."""
    return _wanted(modified["articleType"], modified["colours"], modified.get("gender") or predicted.get("gender"))
