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

# What load() brings up, in order; each step's progress message is a LoadStep.
LOAD_STEPS = ("keyword detector", "text encoder", "generator", "photo editor", "search model", "catalogue")


class LoadStep(str):
    """The progress message that starts a step of `load()` ("loading text encoder ..."), which also says
    which step it is: `index` (1-based) of `total`, and its `name` in LOAD_STEPS."""

    index: int
    total: int
    name: str

    def __new__(cls, name: str):
        message = super().__new__(cls, f"loading {name} ...")
        message.name, message.index, message.total = name, LOAD_STEPS.index(name) + 1, len(LOAD_STEPS)
        return message


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
    threads: int = 0  # torch CPU threads; 0: models.sampling.choose_torch_threads decides
    editor_weights: str | Path | None = None  # editing generator; None = weights/editor.pt
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()
        self.detector = self.encoder = self.generator = self.editor = None
        self.editor_error: str | None = None
        # Which weights draw the images: "generator" / "editor" -> the first 16 hex digits of the file's
        # sha256. The history stores them with each turn, so a turn is drawn again only by the same weights.
        self.fingerprints: dict[str, str] = {}
        self._rows_by_id = None  # (catalogue, {product id: row}) for products()

    def load(self, progress: Progress = lambda message: None) -> None:
        """Load everything; raises CheckpointError / FileNotFoundError with a message naming the file."""
        with self._lock:
            if self.generator is not None:
                return
            self._limit_threads()
            progress(LoadStep("keyword detector"))
            self.detector = self._timed("detector", self._load_detector)
            progress(LoadStep("text encoder"))
            self.encoder = self._timed("text_encoder", self._load_encoder)
            progress(LoadStep("generator"))
            self.generator = self._timed("generator", self._load_generator)
            self._load_editor_if_possible(progress)
            self._load_catalog_if_possible(progress)
            self._fingerprint_drawings()
            progress("ready")

    def _limit_threads(self) -> None:
        from models.sampling import limit_torch_threads

        limit_torch_threads(self.threads)

    def _timed(self, name: str, fn):
        start = time.perf_counter()
        value = fn()
        self.timings[name] = time.perf_counter() - start
        log.info("loaded %s in %.2f s", name, self.timings[name])
        return value

    def _load_detector(self):
        from app.chat.detector import get_detector

        return get_detector()

    def _load_encoder(self):
        from models.text_encoder import TextEncoder

        return TextEncoder()

    def _load_generator(self):
        from models.generate import TextToImage

        return TextToImage(self.weights, self.device)

    def _load_editor_if_possible(self, progress: Progress) -> None:
        """The editing generator (photo variants); without it the app still draws from text."""
        from models.editing import PhotoEditor

        progress(LoadStep("photo editor"))
        try:
            self.editor = self._timed("editor", lambda: PhotoEditor(self.editor_weights, self.device))
            self.editor_error = None
        except Exception as exc:  # noqa: BLE001 - a broken editor must not stop text-to-image
            self.editor, self.editor_error = None, str(exc)
            log.warning("photo variants unavailable: %s", exc)

    def _fingerprint_drawings(self) -> None:
        """The files and drawing rules that decide the images a seed draws: photo variants ("editor"): the
        editor's weights, the shade table and the editor's drawing steps; text requests ("generator"): the
        generator's weights, and where catalogue exemplars draw them, the editor's files, the catalogue
        and the exemplar picks too."""
        from models.shades import SHADES_PATH

        editor_files = [getattr(self.editor, "path", None), SHADES_PATH] if self.editor is not None else None
        text_files = [getattr(self.generator, "path", None)]
        if editor_files and self.retriever is not None:
            from models.search.retrieval import DEFAULT_CATALOG

            text_files += [*editor_files, self.catalog or DEFAULT_CATALOG]
        from models.editing import DRAWING_VERSION
        from models.exemplars import PICK_VERSION

        rules = {"generator": f"editor {DRAWING_VERSION}, exemplars {PICK_VERSION}",
                 "editor": f"editor {DRAWING_VERSION}"}
        for name, files in (("generator", text_files), ("editor", editor_files)):
            try:
                self.fingerprints[name] = weights_fingerprint(*files, rules=rules[name])
            except (OSError, TypeError) as exc:  # a model without a file: its turns can't be checked
                self.fingerprints.pop(name, None)
                log.warning("no fingerprint for the %s files (%s)", name, exc)

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
            from app.chat.detector import get_detector

            self.detector = get_detector()
        return self.detector(text)

    def generate(self, caption: str, seeds: list[int]) -> Generated:
        """One image per seed for the caption: catalogue exemplars redrawn by the editor where the catalogue
        holds the item (models.exemplars), else the text-only generator."""
        drawer, request = self._exemplars_for(caption)
        if drawer is not None:
            return Generated(caption, list(seeds), drawer.draw(request, list(seeds)))
        embedding = self.encoder.encode([caption])[0]
        return Generated(caption, list(seeds), self.generator.generate(embedding, list(seeds)))

    def generate_distinct(self, caption: str, seeds: list[int], n: int, avoid: list = ()) -> Generated:
        """n images for the caption from the draws of `seeds` (a larger pool), all different products and
        none of `avoid` (images already shown for this request); each keeps its own seed."""
        drawer, request = self._exemplars_for(caption)
        if drawer is not None:
            chosen, images = drawer.draw_distinct(request, list(seeds), n, list(avoid))
            return Generated(caption, chosen, images)
        embedding = self.encoder.encode([caption])[0]
        chosen, images = self.generator.generate_distinct(embedding, list(seeds), n, list(avoid))
        return Generated(caption, chosen, images)

    def variations(self, caption: str, seed: int, variation_seeds: list[int], strength: float) -> list | None:
        """Near variations of the image `seed` drew for the caption ("More like this"); None where the
        text-only generator drew it (the caller moves that generator's latent by `strength`)."""
        drawer, request = self._exemplars_for(caption)
        return drawer.variations(request, seed, list(variation_seeds)) if drawer is not None else None

    def draws_from_exemplars(self, caption: str) -> bool:
        """Whether `generate` draws this caption from catalogue exemplars (else the text-only generator)."""
        return self._exemplars_for(caption)[0] is not None

    def _exemplars_for(self, caption: str):
        """(the exemplar drawer, the caption as a Request) when catalogue exemplars can draw it, else (None, None)."""
        drawer = self._exemplar_drawer()
        if drawer is None:
            return None, None
        from models.exemplars import Request

        d = self.detect(caption)
        request = Request((d.article_types or [None])[0], list(d.colours), d.gender, d.usage,
                          tuple(v for values in d.attributes.values() for v in values))
        return (drawer, request) if drawer.can_draw(request) else (None, None)

    def _exemplar_drawer(self):
        """Built once the editor and the catalogue are loaded (None without either: text-only drawing)."""
        if self.editor is None or self.retriever is None or self.encoder is None:
            return None
        catalogue = self.retriever.catalogue
        built_for, drawer = self.__dict__.get("_drawer", (None, None))
        if built_for is not catalogue:
            from models.exemplars import ExemplarBank, ExemplarDrawer

            drawer = ExemplarDrawer(self.editor, ExemplarBank.from_catalogue(catalogue),
                                    lambda texts: self.encoder.encode(texts))  # the encoder as it is then
            self.__dict__["_drawer"] = (catalogue, drawer)
        return drawer

    # ---- catalogue search -----------------------------------------------------------------------
    # The embedding model and catalogue load apart from the generator, so search works without it.
    embedding_weights: str | Path | None = None  # embedding checkpoint; None = weights/embedding.pt
    retriever = None  # models.search.retrieval.Retriever once load_catalog() has run (not a field)
    catalog_error = None  # why load() could not load the catalogue (str), else None (not a field)

    def load_catalog(self, progress: Progress = lambda message: None) -> None:
        """Load the embedding model and the catalogue (`self.catalog`, or the bundled one).
        Raises CatalogError / CheckpointError naming the file; safe to call again."""
        with self._catalog_lock():
            if self.retriever is not None:
                return
            self._limit_threads()
            from models.search.catalog import Catalogue
            from models.search.retrieval import DEFAULT_CATALOG, Retriever, SearchModel

            progress(LoadStep("search model"))
            model = self._timed("search_model", lambda: SearchModel(self.embedding_weights))
            progress(LoadStep("catalogue"))
            catalogue = self._timed("catalogue", lambda: Catalogue.load(self.catalog or DEFAULT_CATALOG))
            if self.encoder is None:
                from models.text_encoder import get_text_encoder

                progress("loading text encoder ...")
                self.encoder = self._timed("text_encoder", get_text_encoder)  # shared per process
            self.retriever = Retriever(model, catalogue, self.encoder, detect=self.detect, generator=self.generator)
            self.catalog_error = None

    def _catalog_lock(self) -> threading.RLock:
        lock = self.__dict__.get("_search_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_search_lock", threading.RLock())
        return lock

    def _load_catalog_if_possible(self, progress: Progress) -> None:
        """Inside load(): the app still generates when the catalogue is missing or damaged."""
        try:
            self.load_catalog(progress)
        except Exception as exc:  # noqa: BLE001 - whatever breaks search must not stop generation
            self.catalog_error = str(exc)
            log.warning("similar products unavailable: %s", exc)
            progress(f"similar products unavailable: {exc}")

    def _search_ready(self):
        self.load_catalog()
        self.retriever.generator = self.generator
        return self.retriever

    def similar_products(self, caption: str | None = None, images: list | None = None, k: int = 8) -> list[dict]:
        """Catalogue products like a caption (the detected one), like images, or like both: a caption
        with generated images fuses them as the synthetic query expansion does (the images' mean
        embedding weighted by models.search.retrieval.EXPANSION_WEIGHT, so the caption leads).
        Dicts: id, title, articleType, baseColour, score, thumbnail (PIL image, 64x64)."""
        import numpy as np

        from models.search.retrieval import EXPANSION_WEIGHT, Query, normalise

        retriever = self._search_ready()
        images = [self._as_image(img) for img in (images or [])]
        if caption and caption.strip():
            vectors, _ = retriever.text_query_vectors([caption], [caption.strip()], expand=False)
            query = Query(vectors[0], "text", caption, wanted=retriever.analyse([caption])[1][0])
            if images and EXPANSION_WEIGHT > 0:
                generated = normalise(retriever.model.embed_images(images).mean(0))
                query.vector = normalise(query.vector + EXPANSION_WEIGHT * generated)
        elif images:
            query = retriever.image_query(images)
            query.vector = normalise(np.asarray(query.vector))
        else:
            raise ValueError("similar products need a caption, images or both")
        return self._products(retriever.search_rows(query, k))

    def unavailable(self, article_type: str | None, gender: str | None) -> dict | None:
        """{"count": 0, "nearest": [up to two item types]} when the catalogue holds none of this item type for
        this gender ("dresses" for "Men") but does for others: the nearest types it holds for that gender
        (models.search.item_types), nearest first; else None. Without a loaded catalogue the shipped item-type
        table, the labels the generator learnt from, answers."""
        if not article_type or not gender:
            return None
        types = self._item_types()
        if types.count(article_type, gender) or not types.count(article_type, None):
            return None
        return {"count": 0, "nearest": types.nearest(article_type, gender, n=2)}

    def _item_types(self):
        from models.search import item_types

        catalogue = self.retriever.catalogue if self.retriever is not None else None
        cached = self.__dict__.get("_item_types_cache")
        if cached is None or cached.catalogue is not catalogue:
            encode = self.encoder.encode if self.encoder is not None else None
            cached = self.__dict__["_item_types_cache"] = item_types.ItemTypes(item_types.load(), catalogue, encode)
        return cached

    def similar_to_image(self, image, text: str = "", k: int = 8) -> list[dict]:
        """Products like a reference image, changed as the text says ("in red"): the composed query."""
        retriever = self._search_ready()
        image = self._as_image(image)
        query = retriever.composed_query(image, text) if text.strip() else retriever.image_query([image])
        return self._products(retriever.search_rows(query, k))

    def describe_image(self, image) -> dict:
        """Item type, colour (and gender) predicted from a PIL image (or a path / bytes, opened safely):
        {"articleType", "baseColour", "gender", "caption", "confidence": {...}}."""
        retriever = self._search_ready()
        predicted = retriever.model.predict([self._as_image(image)])[0]
        return {key: predicted.get(key) for key in ("articleType", "baseColour", "gender", "caption", "confidence")}

    def variants(self, image, text: str = "", seeds: list[int] = (0, 1, 2, 3),
                 strength: float | None = None) -> tuple[Generated, dict]:
        """Variants of a reference photo, drawn by the editing generator, with the modification text
        applied ("in red", "as a dress"); `strength` (0..1) says how far they may move from the photo.
        Returns the images and the describe_image result after the modification, plus "original"
        (before it) and "changed" (the attributes the text set). NotEditable (a ValueError) for a photo
        with no item in it."""
        described = self.describe_change(image, text)
        editor = self._editor_ready()
        own, wanted = self.encoder.encode([described["original"]["caption"], described["caption"]])
        pictures = editor.variants(self._as_image(image), own, wanted, list(seeds), self._strength(strength),
                                   described.get("baseColour"))
        return Generated(described["caption"], list(seeds), pictures), described

    def variant_variations(self, image, caption: str, seed: int, variation_seeds: list[int],
                           strength: float | None = None) -> list:
        """Variants near the one `seed` drew for `caption` ("More like this" on a variant)."""
        original = self.describe_image(image)
        editor = self._editor_ready()
        own, wanted = self.encoder.encode([original["caption"], caption])
        colour = next(iter(self.detect(caption).colours), None) or original.get("baseColour")
        return editor.variations(self._as_image(image), own, wanted, seed, list(variation_seeds),
                                 self._strength(strength), colour=colour)

    @staticmethod
    def _strength(strength: float | None) -> float:
        from models.editing import DEFAULT_STRENGTH

        return DEFAULT_STRENGTH if strength is None else float(strength)

    def _editor_ready(self):
        self.load()
        if self.editor is None:
            raise RuntimeError(f"photo variants are unavailable: {self.editor_error}")
        return self.editor

    def describe_change(self, image, text: str = "") -> dict:
        """describe_image of a reference photo, with the change text applied: the attributes it names
        replace the described ones (the user's words win), plus "original" and "changed"."""
        retriever = self._search_ready()
        image = self._as_image(image)
        original = self.describe_image(image)
        described = dict(original, confidence=dict(original["confidence"]))
        changed = []
        if text.strip():
            modified = retriever.modify(original, text)
            for key in ("articleType", "baseColour"):
                if modified[key] and modified[key] != original.get(key):
                    described[key] = modified[key]
                    described["confidence"][key] = 1.0  # named by the user
                    changed.append(key)
            if modified["gender"]:
                described["gender"] = modified["gender"]
            described["caption"] = modified["caption"]
        described.update(original=original, changed=changed)
        return described

    @staticmethod
    def _as_image(image):
        from PIL import Image

        from models.images import open_image

        return image.convert("RGB") if isinstance(image, Image.Image) else open_image(image)

    def products(self, ids: list) -> list[dict]:
        """The catalogue products with these ids, in that order, with their gender too (ids no longer in the
        catalogue are left out): a stored list of similar products shown again without searching."""
        catalogue = self._search_ready().catalogue
        if self._rows_by_id is None or self._rows_by_id[0] is not catalogue:
            self._rows_by_id = (catalogue, {pid: row for row, pid in enumerate(catalogue.ids)})
        index = self._rows_by_id[1]
        rows = [row for row in (index.get(str(pid)) for pid in ids) if row is not None]
        return [dict(product, gender=catalogue.genders[row])
                for row, product in zip(rows, self._products([(row, None) for row in rows]))]

    def _products(self, hits: list[tuple[int, float]]) -> list[dict]:
        catalogue = self.retriever.catalogue
        return [dict(catalogue.product(row, score), thumbnail=catalogue.thumbnail(row)) for row, score in hits]


def weights_fingerprint(*paths: str | Path, rules: str = "") -> str:
    """The first 16 hex digits of the sha256 of the files' contents, in order, and of `rules` (the versions
    of the code that turns weights and a seed into an image); raises OSError, TypeError."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    digest.update(rules.encode())
    return digest.hexdigest()[:16]


def pick_seeds(n: int, seed: int | None = None) -> list[int]:
    """`n` consecutive seeds from `seed`, or from a random start; every image records its seed."""
    start = random.randrange(0, 2**31 - n) if seed is None else seed
    return list(range(start, start + n))
