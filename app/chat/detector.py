"""Shopping-keyword detector: maps what people type onto the catalogue's own labels.

`KeywordDetector` (and the process-wide `get_detector()`) runs the spaCy pipeline of app/chat/pipeline.py
over a message and returns a `Detection`: the catalogue labels it names and the intent.

Keyword labels ("KIND:value"): "ARTICLE_TYPE:Tshirts", "NOT_ARTICLE_TYPE:Tshirts" (a negated item, left out of
article_types), "COLOUR:Navy Blue", "NOT_COLOUR:Black", "GENDER:Men", "USAGE:Formal", "ATTRIBUTE:pattern=striped",
"NOT_ATTRIBUTE:pattern=printed" (a negated attribute, "no print": in exclude_attributes, never in the caption),
"BRAND:Red Tape", "OTHER_ITEM:other" (a product outside the catalogue, e.g. a watch: the intent is shop).
Offsets are character offsets into the text: text[start:end] == keyword text.

Intent: shop names an item; refine gives only colours/attributes/gender/usage or asks for more ("show me more");
help asks about the app; greeting says hello or goodbye; other is thanks and off-topic chat.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc

from app.chat.pipeline import MAX_CHARS, build_pipeline
from models.captions import canonical_caption

INTENTS = ("shop", "refine", "greeting", "help", "other")
MAX_RUN = 64                 # longest run of non-space characters given to spaCy (its tokenizer is quadratic in it)
_LONG_RUN = re.compile(r"\S{%d,}" % (MAX_RUN + 1))


@dataclass
class Keyword:
    text: str
    label: str
    start: int
    end: int


@dataclass
class Detection:
    text: str
    intent: str
    article_types: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    exclude_colours: list[str] = field(default_factory=list)
    gender: str | None = None
    usage: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)
    exclude_attributes: dict[str, list[str]] = field(default_factory=dict)  # "not shiny": {"detail": ["shiny"]}
    keywords: list[Keyword] = field(default_factory=list)
    caption: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class KeywordDetector:
    def __init__(self, nlp: Language):
        self.nlp = nlp

    @classmethod
    def load(cls, lexicon_path: str | Path | None = None) -> KeywordDetector:
        return cls(build_pipeline(lexicon_path))

    def __call__(self, text: str) -> Detection:
        return self._detection(text, self.nlp(_clip(text)))

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[Detection]:
        """The fast path for many texts: one spaCy batch pass."""
        texts = list(texts) if not isinstance(texts, list) else texts
        for text, doc in zip(texts, self.nlp.pipe((_clip(t) for t in texts), batch_size=batch_size)):
            yield self._detection(text, doc)

    @staticmethod
    def _detection(text: str, doc: Doc) -> Detection:
        found = doc._.fashion
        attributes = found["attributes"]
        caption = canonical_caption(
            found["article_types"][0] if found["article_types"] else None,
            found["colours"], found["gender"], found["usage"],
            [value for values in attributes.values() for value in values],
        )
        # Keyword text from the caller's text: where _clip broke a long run, the doc has a space instead.
        return Detection(
            text=text, intent=found["intent"], article_types=found["article_types"], colours=found["colours"],
            exclude_colours=found["exclude_colours"], gender=found["gender"], usage=found["usage"],
            attributes=attributes, exclude_attributes=found["exclude_attributes"],
            keywords=[Keyword(text[s:e], label, s, e) for s, e, _, label in found["keywords"]], caption=caption,
        )


def _clip(text: str) -> str:
    """The text spaCy sees: as long as the original up to MAX_CHARS, character for character, so keyword
    offsets point into the original text."""
    if not isinstance(text, str):
        raise TypeError(f"expected text, got {type(text).__name__}")
    # Lone UTF-16 surrogates (e.g. from a broken paste) crash spaCy; each becomes "?".
    clipped = text[:MAX_CHARS].encode("utf-8", "replace").decode("utf-8")
    return _LONG_RUN.sub(lambda match: _break_run(match.group()), clipped)


def _break_run(run: str) -> str:
    """A space in place of one character every MAX_RUN or fewer, so spaCy never sees a longer run of non-space
    characters (100,000 emoji took it minutes). The space replaces a non-word character where the run has one
    near the limit ("red,dress,...": a comma), so words stay whole; otherwise the run is no word anyway."""
    chars = list(run)
    start = 0  # first character of the piece not yet broken off
    while len(chars) - start > MAX_RUN:
        limit = start + MAX_RUN  # a break here leaves a piece of exactly MAX_RUN characters
        at = next((i for i in range(limit, limit - MAX_RUN // 2, -1) if not chars[i].isalnum()), limit)
        chars[at] = " "
        start = at + 1
    return "".join(chars)


_DETECTOR: KeywordDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def get_detector() -> KeywordDetector:
    """The process-wide detector, built on first use (about a second)."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = KeywordDetector.load()
        return _DETECTOR
