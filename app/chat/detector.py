"""Shopping-keyword detector: maps what people type onto the catalogue's own labels.

A spaCy pipeline on `spacy.blank("en")` (no downloaded model):

    fashion_normalizer  token.norm_ = lower case, straight apostrophes, small typos fixed ("blak" -> "black")
    fashion_brands      brand names with colour/item words ("Red Tape") as BRAND ents, so they are not read as colours
    fashion_entities    PhraseMatcher on NORM for the lexicon's phrases, longest match wins; ents ARTICLE_TYPE,
                        AMBIGUOUS_ITEM, COLOUR, GENDER, ATTRIBUTE, OTHER_ITEM with the catalogue label as the span id
    fashion_cues        PhraseMatcher for usages (may overlap items: "formal shoes") and for intent/negation cues
    fashion_resolver    negation scope, context for generic items ("shoes" + office -> Formal Shoes), the title model
                        as tie-breaker/fallback, intent; stores a plain dict in `doc._.fashion`

The vocabulary lives in `assets/lexicon.json`; the title model (word-count naive Bayes over product titles, built by
`app/commands/train_title_model.py`) in `assets/title_nb.json`.

Keyword labels ("KIND:value"): "ARTICLE_TYPE:Tshirts", "NOT_ARTICLE_TYPE:Tshirts" (a negated item, left out of
article_types), "COLOUR:Navy Blue", "NOT_COLOUR:Black", "GENDER:Men", "USAGE:Formal", "ATTRIBUTE:pattern=striped",
"BRAND:Red Tape", "OTHER_ITEM:other" (a product outside the catalogue, e.g. a watch: the intent is shop).
Offsets are character offsets into the text: text[start:end] == keyword text.

Intent: shop names an item; refine gives only colours/attributes/gender/usage or asks for more ("show me more");
help asks about the app; greeting says hello or goodbye; other is thanks and off-topic chat.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import spacy
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from models.captions import canonical_caption
from models.resources import ASSETS_DIR

log = logging.getLogger(__name__)

ASSETS = ASSETS_DIR
LEXICON_PATH = ASSETS / "lexicon.json"
TITLE_MODEL_PATH = ASSETS / "title_nb.json"

INTENTS = ("shop", "refine", "greeting", "help", "other")
MAX_CHARS = 100_000          # longer texts are analysed on their first MAX_CHARS characters
MAX_RUN = 64                 # longest run of non-space characters given to spaCy (its tokenizer is quadratic in it)
TYPO_MIN_TOKEN = 4           # shortest word that may be a typo ("blak")
TYPO_MIN_TARGET = 5          # shortest vocabulary word a typo may stand for ("black")
NEGATION_MAX_SKIPS = 4       # filler words allowed between a negation cue and the colour it governs
TITLE_MODEL_MIN_COUNT = 3    # a word is evidence for the title model only if seen this often in titles
FALLBACK_MIN_POSTERIOR = 0.9  # the title model names an item on its own only when this sure (chat text)...
FALLBACK_MIN_POSTERIOR_TITLE = 0.5  # ...or this sure on title-like text ("Baggit Women Cappuccino Kong")
FALLBACK_MIN_EVIDENCE = 2    # ...and, on chat text, with at least this many known title words
TITLE_CASE_SHARE = 0.7       # text is title-like when this share of its words are Capitalised

QUESTION_WORDS = {"who", "what", "when", "where", "why", "which", "whose", "how"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_NB_TOKEN = re.compile(r"[a-z0-9]+")
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
    keywords: list[Keyword] = field(default_factory=list)
    caption: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- the lexicon


def normalise(word: str) -> str:
    return word.lower().translate(_APOSTROPHES)


def _variants(phrase: str, joined: bool = True) -> set[str]:
    """'t shirt' -> {'t shirt', 't-shirt', 'tshirt'}: space/hyphen forms, and the joined form of two-word phrases."""
    words = phrase.replace("-", " ").split()
    out = {phrase, " ".join(words), "-".join(words)}
    if joined and len(words) == 2:
        out.add("".join(words))
    return out


def _inflections(phrase: str) -> set[str]:
    """Singular and plural of the last word: 'dresses' -> 'dress', 'kurta' -> 'kurtas', 'clutch' -> 'clutches'."""
    head, _, last = phrase.rpartition(" ")
    forms = set()
    if last.endswith(("ss", "sh", "ch", "x", "z")):
        forms.add(last + "es")
    elif last.endswith("es") and last[:-2].endswith(("ss", "sh", "ch", "x", "z")):
        forms.add(last[:-2])
    elif last.endswith("s"):
        forms.add(last[:-1])
    else:
        forms.add(last + "s")
    return {f"{head} {f}".strip() for f in forms if len(f) > 1}


class Lexicon:
    """The vocabulary file, compiled into phrase tables (phrase -> (kind, label))."""

    def __init__(self, data: dict, path: Path | None = None):
        self.path = path
        self.entities: dict[str, tuple[str, str]] = {}
        self.usages: dict[str, str] = {}
        self.cues: dict[str, set[str]] = {}
        self.ambiguous: dict[str, dict] = data.get("ambiguous_items", {})
        self.brands: list[str] = data.get("brands", [])
        self.attribute_names = list(data.get("attributes", {}))
        neg = data.get("negation", {})
        self.scope_skip = {normalise(w) for w in neg.get("scope_skip", [])}
        self.scope_continue = {normalise(w) for w in neg.get("scope_continue", [])}
        self.weak_terms = {normalise(w) for w in data.get("intent", {}).get("weak_attribute_terms", [])}
        self.not_typos = {normalise(w) for w in data.get("not_typos", [])}
        self._compile(data)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Lexicon:
        path = Path(path) if path else LEXICON_PATH
        with open(path, encoding="utf-8") as fh:
            return cls(json.load(fh), path)

    def _add(self, phrases: Iterable[str], kind: str, label: str, explicit: set[str]) -> None:
        for phrase in phrases:
            for form in _variants(normalise(phrase)):
                if form in explicit and self.entities.get(form, (kind,))[0] != kind:
                    continue  # an explicit phrase of another kind keeps its meaning
                self.entities.setdefault(form, (kind, label))

    def _compile(self, data: dict) -> None:
        # Priority: brands, then generic items, then explicit phrases; generated forms never override explicit ones.
        explicit: set[str] = set()
        ambiguous = {key: entry["phrases"] for key, entry in self.ambiguous.items()}
        articles = {label: [label, *syn] for label, syn in data.get("article_types", {}).items()}
        colours = {label: [label, *syn] for label, syn in data.get("colours", {}).items()}
        genders = data.get("genders", {})
        attributes = {f"{name}={value}": phrases for name, values in data.get("attributes", {}).items()
                      for value, phrases in values.items()}
        others = {"other": data.get("other_items", [])}
        groups = [("AMBIGUOUS_ITEM", ambiguous), ("ARTICLE_TYPE", articles),
                  ("COLOUR", colours), ("GENDER", genders), ("ATTRIBUTE", attributes), ("OTHER_ITEM", others)]
        for _, table in groups:
            for phrases in table.values():
                for phrase in phrases:
                    explicit |= _variants(normalise(phrase))
        for kind, table in groups:
            for label, phrases in table.items():
                self._add(phrases, kind, label, explicit)
        # Singular/plural of item words, unless that form means something else ("short", "tight", "flat").
        for kind, table in (("AMBIGUOUS_ITEM", ambiguous), ("ARTICLE_TYPE", articles)):
            for label, phrases in table.items():
                for phrase in phrases:
                    for form in _inflections(normalise(phrase)):
                        if not (_variants(form) & explicit):
                            self._add([form], kind, label, explicit)
        # "light blue", "dark navy blue": a modifier keeps the colour's label (FashionResolver widens the span).
        self.colour_modifiers = {normalise(m) for m in data.get("colour_modifiers", [])}
        for label, phrases in data.get("usages", {}).items():
            for phrase in phrases:
                for form in _variants(normalise(phrase), joined=False):
                    self.usages.setdefault(form, label)
        intent = data.get("intent", {})
        for cue, phrases in [*intent.items(), ("negation", data.get("negation", {}).get("cues", []))]:
            if cue == "weak_attribute_terms":
                continue
            for phrase in phrases:
                self.cues.setdefault(normalise(phrase), set()).add(cue.upper())

    def words(self) -> set[str]:
        """Every single word of the vocabulary (the typo corrector's targets)."""
        phrases = [*self.entities, *self.usages, *self.colour_modifiers]
        return {w for p in phrases for w in p.replace("-", " ").split()}

    def brand_words(self) -> set[str]:
        return {normalise(w) for b in self.brands for w in b.replace("-", " ").split()}

    def cue_words(self) -> set[str]:
        return {w for p in self.cues for w in p.split()} | self.scope_skip | self.scope_continue


# --------------------------------------------------------------------------------------------- typo corrector


def _osa_distance_is_one(a: str, b: str) -> bool:
    """True when a and b differ by exactly one insertion, deletion, substitution or adjacent swap."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1 or a == b:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


class TypoCorrector:
    """Edit distance 1 against the vocabulary, via a deletion index (SymSpell style); results are cached."""

    def __init__(self, targets: Iterable[str], protected: Iterable[str]):
        self.protected = set(protected)
        self.index: dict[str, set[str]] = {}
        for word in targets:
            if len(word) >= TYPO_MIN_TARGET and word.isalpha():
                for key in {word, *_deletes(word)}:
                    self.index.setdefault(key, set()).add(word)
        self._cache: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def correct(self, word: str) -> str | None:
        if not TYPO_MIN_TOKEN <= len(word) <= 64 or word in self.protected or not word.isalpha():  # O(n^2) deletes
            return None
        if word.endswith("y") and (word[:-1] in self.protected or word[:-2] in self.protected):
            return None  # a word made from a known one ("dressy", "girly", "beachy"), not a typo
        hit = self._cache.get(word, "")
        if hit != "":
            return hit
        found = set(self.index.get(word, ()))
        for key in _deletes(word):
            found |= self.index.get(key, set())
        # Same first letter (people rarely mistype it: "drape" is not "grape"), or one extra letter in front.
        found = sorted((w for w in found if _osa_distance_is_one(word, w) and (w[0] == word[0] or w == word[1:])),
                       key=lambda w: (abs(len(w) - len(word)), w))
        best = found[0] if found else None
        with self._lock:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[word] = best
        return best


def typo_collisions(words: Iterable[str], lexicon_path: str | Path | None = None) -> list[str]:
    """Real words the typo corrector would turn into vocabulary words: candidates for the lexicon's not_typos.

    The shipped list came from a BERT uncased word list (words of >= 4 ASCII letters), e.g.
    `typo_collisions(open("vocab.txt").read().split())`; run it again after adding vocabulary."""
    lexicon = Lexicon.load(lexicon_path)
    vocab = lexicon.words()
    corrector = TypoCorrector(vocab, vocab | lexicon.brand_words() | lexicon.cue_words() | STOP_WORDS)
    return sorted({w for w in map(normalise, words) if w.isascii() and corrector.correct(w)} - lexicon.not_typos)


# ------------------------------------------------------------------------------------------------ title model


class TitleModel:
    """Multinomial naive Bayes over lower-case title words (file format: app/commands/train_title_model.py)."""

    def __init__(self, data: dict):
        self.classes: list[str] = data["classes"]
        self.alpha = float(data["alpha"])
        doc_counts = data["doc_counts"]
        total = sum(doc_counts)
        self.log_prior = [math.log(c / total) for c in doc_counts]
        vocab_size = len(data["words"])
        self.log_denominator = [math.log(t + self.alpha * vocab_size) for t in data["class_totals"]]
        self.words: dict[str, dict[int, int]] = {
            word: {int(k): v for k, v in counts.items()} for word, counts in data["words"].items()
        }
        self.word_totals = {word: sum(c.values()) for word, c in self.words.items()}
        self.index = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def load(cls, path: str | Path | None = None) -> TitleModel | None:
        path = Path(path) if path else TITLE_MODEL_PATH
        if not path.exists():
            log.warning("title model %s missing: generic items fall back to their defaults", path)
            return None
        with open(path, encoding="utf-8") as fh:
            return cls(json.load(fh))

    def is_evidence(self, word: str) -> bool:
        return self.word_totals.get(word, 0) >= TITLE_MODEL_MIN_COUNT

    def posterior(self, words: list[str], candidates: Iterable[str] | None = None) -> dict[str, float]:
        idx = [self.index[c] for c in candidates if c in self.index] if candidates else range(len(self.classes))
        known = [self.words[w] for w in words if w in self.words]
        scores = {}
        for i in idx:
            s = self.log_prior[i]
            for counts in known:
                s += math.log(counts.get(i, 0) + self.alpha) - self.log_denominator[i]
            scores[self.classes[i]] = s
        if not scores:
            return {}
        top = max(scores.values())
        norm = sum(math.exp(s - top) for s in scores.values())
        return {c: math.exp(s - top) / norm for c, s in scores.items()}


# ------------------------------------------------------------------------------------------ spaCy components


@functools.lru_cache(maxsize=4)
def _load_lexicon(path: str) -> Lexicon:
    return Lexicon.load(path)


@functools.lru_cache(maxsize=4)
def _load_title_model(path: str) -> TitleModel | None:
    return TitleModel.load(path)


@Language.factory("fashion_normalizer", default_config={"lexicon_path": str(LEXICON_PATH)})
def make_normalizer(nlp: Language, name: str, lexicon_path: str):
    lexicon = _load_lexicon(lexicon_path)
    vocab = lexicon.words()
    protected = vocab | lexicon.brand_words() | lexicon.cue_words() | lexicon.not_typos | STOP_WORDS
    return FashionNormalizer(TypoCorrector(vocab, protected), vocab)


class FashionNormalizer:
    def __init__(self, corrector: TypoCorrector, vocab: set[str]):
        self.corrector = corrector
        self.vocab = vocab
        if not Doc.has_extension("title_like"):
            Doc.set_extension("title_like", default=False)

    def __call__(self, doc: Doc) -> Doc:
        tokens = list(doc)
        words = capitalised = 0
        for token in tokens:
            if token.is_alpha and len(token) > 1:
                words += 1
                capitalised += token.is_title or token.is_upper
        title_like = words >= 3 and capitalised >= TITLE_CASE_SHARE * words
        doc._.title_like = title_like
        previous = None
        for token in tokens:
            norm = normalise(token.text)
            # A capitalised word is a name ("Shree", "Park Avenue"), not a typo, unless it starts a chat sentence.
            if norm not in self.vocab and norm.endswith("s") and norm[:-1] in self.vocab and len(norm) > 3:
                norm = norm[:-1]  # plural of a vocabulary word: "whites", "tans", "purples"
            elif len(norm) >= TYPO_MIN_TOKEN and not (
                token.is_title and (title_like or previous not in (None, ".", "!", "?"))
            ):
                norm = self.corrector.correct(norm) or norm
            token.norm_ = norm
            previous = token.text
        return doc


@Language.factory("fashion_brands", default_config={"lexicon_path": str(LEXICON_PATH)})
def make_brands(nlp: Language, name: str, lexicon_path: str):
    return FashionBrands(nlp, _load_lexicon(lexicon_path))


class FashionBrands:
    """Brand names that contain colour, item or gender words ("Red Tape", "U.S. Polo Assn."), as BRAND ents.

    A brand counts only when written with a capital ("Red Rose", "RED ROSE"): "a red rose print" is two words.
    fashion_entities after this keeps these ents, so their words are not read as colours or items.
    """

    def __init__(self, nlp: Language, lexicon: Lexicon):
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        for brand in lexicon.brands:
            self.matcher.add(brand, [nlp.make_doc(brand)])

    def __call__(self, doc: Doc) -> Doc:
        spans = [span for span in self.matcher(doc, as_spans=True) if not span.text.islower()]
        doc.ents = [Span(doc, s.start, s.end, label="BRAND", span_id=s.label_) for s in filter_spans(spans)]
        return doc


@Language.factory("fashion_entities", default_config={"lexicon_path": str(LEXICON_PATH)})
def make_entities(nlp: Language, name: str, lexicon_path: str):
    return FashionEntities(nlp, _load_lexicon(lexicon_path))


class FashionEntities:
    """The lexicon's phrases as ents (ARTICLE_TYPE, AMBIGUOUS_ITEM, COLOUR, GENDER, ATTRIBUTE, OTHER_ITEM; the
    catalogue label as span id), matched on NORM. Where matches overlap the longest wins, then the earliest; brand
    ents already set are kept. (An entity ruler does the same, with a per-document cost that shows at 10k msgs/s.)"""

    def __init__(self, nlp: Language, lexicon: Lexicon):
        self.matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        normalizer = nlp.get_pipe("fashion_normalizer")
        by_key: dict[str, list[Doc]] = {}
        for phrase, (kind, label) in lexicon.entities.items():
            by_key.setdefault(f"{kind}|{label}", []).append(normalizer(nlp.make_doc(phrase)))
        for key, docs in by_key.items():
            self.matcher.add(key, docs)
        self.keys = {nlp.vocab.strings[key]: key.split("|", 1) for key in by_key}

    def __call__(self, doc: Doc) -> Doc:
        matches = self.matcher(doc)
        if not matches:
            return doc
        ents = list(doc.ents)
        taken = {i for e in ents for i in range(e.start, e.end)}
        for key, start, end in sorted(matches, key=lambda m: (m[1] - m[2], m[1])):
            if taken.isdisjoint(range(start, end)):
                kind, label = self.keys[key]
                ents.append(Span(doc, start, end, label=kind, span_id=label))
                taken.update(range(start, end))
        doc.ents = sorted(ents, key=lambda e: e.start)
        return doc


@Language.factory("fashion_cues", default_config={"lexicon_path": str(LEXICON_PATH)})
def make_cues(nlp: Language, name: str, lexicon_path: str):
    return FashionCues(nlp, _load_lexicon(lexicon_path))


class FashionCues:
    """Usage phrases (doc.spans['usages']) and intent/negation cues (doc.spans['cues']), matched on NORM."""

    def __init__(self, nlp: Language, lexicon: Lexicon):
        self.usage_matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        self.cue_matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        normalizer = nlp.get_pipe("fashion_normalizer")
        for table, matcher in ((lexicon.usages, self.usage_matcher), (lexicon.cues, self.cue_matcher)):
            by_label: dict[str, list[Doc]] = {}
            for phrase, labels in table.items():
                doc = normalizer(nlp.make_doc(phrase))
                for label in [labels] if isinstance(labels, str) else labels:
                    by_label.setdefault(label, []).append(doc)
            for label, docs in by_label.items():
                matcher.add(label, docs)

    def __call__(self, doc: Doc) -> Doc:
        brands = [e for e in doc.ents if e.label_ == "BRAND"]
        usages = [s for s in self.usage_matcher(doc, as_spans=True)
                  if not any(b.start < s.end and s.start < b.end for b in brands)]
        doc.spans["usages"] = filter_spans(usages)
        doc.spans["cues"] = self.cue_matcher(doc, as_spans=True)
        return doc


@Language.factory("fashion_resolver", default_config={"lexicon_path": str(LEXICON_PATH),
                                                      "title_model_path": str(TITLE_MODEL_PATH)})
def make_resolver(nlp: Language, name: str, lexicon_path: str, title_model_path: str):
    return FashionResolver(_load_lexicon(lexicon_path), _load_title_model(title_model_path))


class FashionResolver:
    """Turns the matched spans into the detection fields (a plain dict in doc._.fashion)."""

    def __init__(self, lexicon: Lexicon, title_model: TitleModel | None):
        self.lexicon = lexicon
        self.title_model = title_model
        if not Doc.has_extension("fashion"):
            Doc.set_extension("fashion", default=None)

    def __call__(self, doc: Doc) -> Doc:
        ents = self._widen_colours(doc)
        posterior = _DocPosterior(self.title_model, doc.text)
        cues = _cue_table(doc.spans["cues"])
        negated = self._negated(doc, ents, cues.get("NEGATION", []))
        usages = list(doc.spans["usages"])
        usage = usages[0].label_ if usages else None

        keywords, articles, colours, excluded = [], [], [], []
        gender, attributes, brands, evidence_words = None, {}, [], None
        other_items = False
        for ent in ents:
            kind, value = ent.label_, ent.id_
            if kind in ("ARTICLE_TYPE", "AMBIGUOUS_ITEM"):
                if kind == "AMBIGUOUS_ITEM":
                    if evidence_words is None:
                        evidence_words = self._evidence(doc, ents, usages)
                    value = self._resolve_generic(value, usage, doc, evidence_words, posterior)
                if ent.start in negated:  # "a shirt, not a t-shirt"
                    kind = "NOT_ARTICLE_TYPE"
                else:
                    kind = "ARTICLE_TYPE"
                    _append_new(articles, value)
            elif kind == "OTHER_ITEM":
                other_items = True
            elif kind == "COLOUR":
                if ent.start in negated:
                    kind = "NOT_COLOUR"
                    _append_new(excluded, value)
                else:
                    _append_new(colours, value)
            elif kind == "GENDER":
                gender = gender or value
            elif kind == "ATTRIBUTE":
                name, _, val = value.partition("=")
                _append_new(attributes.setdefault(name, []), val)
            elif kind == "BRAND":
                brands.append(value)
            keywords.append((ent.start_char, ent.end_char, ent.text, f"{kind}:{value}"))
        for span in usages:
            keywords.append((span.start_char, span.end_char, span.text, f"USAGE:{span.label_}"))
        excluded = [c for c in excluded if c not in colours]

        chatty = cues.keys() & {"GREETING", "HELP", "HELP_HOW", "THANKS"}
        if not articles and self.title_model is not None and not chatty:
            if evidence_words is None:
                evidence_words = self._evidence(doc, ents, usages)
            title_like = doc._.title_like
            if len(evidence_words) >= (1 if title_like else FALLBACK_MIN_EVIDENCE):
                post = posterior()
                best = max(post, key=post.get)
                if post[best] >= (FALLBACK_MIN_POSTERIOR_TITLE if title_like else FALLBACK_MIN_POSTERIOR):
                    articles.append(best)

        strong_attrs = [e for e in ents if e.label_ == "ATTRIBUTE" and e.text.lower() not in self.lexicon.weak_terms]
        # A usage alone in a question is chat, not a filter: "who won the football match?"
        usage_filter = usage and not (len(doc) and doc[0].norm_ in QUESTION_WORDS)
        filters = bool(colours or excluded or gender or usage_filter or strong_attrs or brands)
        keywords.sort()
        doc._.fashion = {
            "intent": _intent(bool(articles) or other_items, filters, cues),
            "article_types": articles, "colours": colours, "exclude_colours": excluded,
            "gender": gender, "usage": usage, "attributes": attributes,
            "keywords": keywords,
        }
        return doc

    def _widen_colours(self, doc: Doc) -> list:
        """A colour takes in the modifiers before it: "light pink", "dark navy blue" (still Pink, Navy Blue)."""
        modifiers = self.lexicon.colour_modifiers
        out: list[Span] = []
        changed = False
        for ent in doc.ents:
            start = ent.start
            if ent.label_ == "COLOUR":
                # "greenish blue": a one-word colour that is also a modifier gives way to the colour after it
                if out and out[-1].label_ == "COLOUR" and out[-1].end == start and len(out[-1]) == 1 \
                        and out[-1][0].norm_ in modifiers:
                    start = out.pop().start
                taken_until = out[-1].end if out else 0
                while start > taken_until and doc[start - 1].norm_ in modifiers:
                    start -= 1
            if start != ent.start:
                ent = Span(doc, start, ent.end, label=ent.label_, span_id=ent.id_)
                changed = True
            out.append(ent)
        if changed:
            doc.ents = out
        return out

    def _negated(self, doc: Doc, ents: list, cue_spans: list) -> set[int]:
        """Start tokens of the colours (or the item) a negation governs: "not (in) black", "anything but white or
        grey", "not a t-shirt". An item after a colour is not negated: "not black shoes" excludes only Black."""
        colour_at = {e.start: e for e in ents if e.label_ == "COLOUR"}
        item_at = {e.start: e for e in ents if e.label_ in ("ARTICLE_TYPE", "AMBIGUOUS_ITEM")}
        out: set[int] = set()
        for cue in cue_spans:
            i, skips, in_list = cue.end, 0, False
            while i < len(doc):
                if i in colour_at:
                    out.add(i)
                    i, in_list = colour_at[i].end, True
                    continue
                if i in item_at and not in_list:
                    out.add(i)
                    break
                norm = doc[i].norm_
                if in_list:  # after a colour only a list goes on: "not red, blue or green"
                    if norm in self.lexicon.scope_continue:
                        i += 1
                        continue
                    break
                if norm in self.lexicon.scope_skip and skips < NEGATION_MAX_SKIPS and doc[i].ent_type == 0:
                    skips += 1
                    i += 1
                    continue
                break
        return out

    def _evidence(self, doc: Doc, ents: list, usages: list) -> list[str]:
        """Words outside the lexicon that the title model knows well (brand and style words of product titles)."""
        if self.title_model is None:
            return []
        covered = {i for span in [*ents, *usages] for i in range(span.start, span.end)}
        words = []
        for token in doc:
            if token.i in covered or token.is_stop or token.norm_ in self.lexicon.scope_skip:
                continue
            for word in _NB_TOKEN.findall(token.text.lower()):
                if self.title_model.is_evidence(word) and word not in STOP_WORDS:
                    words.append(word)
        return words

    def _resolve_generic(self, key: str, usage: str | None, doc: Doc, evidence: list[str],
                         posterior: _DocPosterior) -> str:
        entry = self.lexicon.ambiguous[key]
        if usage and usage in entry.get("by_usage", {}):
            return entry["by_usage"][usage]
        title_like = doc._.title_like
        if self.title_model is not None and len(evidence) >= (1 if title_like else FALLBACK_MIN_EVIDENCE):
            post = posterior(entry["candidates"])
            if post:
                best = max(post, key=post.get)
                if title_like or post[best] >= FALLBACK_MIN_POSTERIOR:
                    return best
        return entry["default"]


class _DocPosterior:
    """The title model's posterior over one doc's words, computed once per candidate set: a long message names
    many generic items, and recomputing it for each made the resolver quadratic in the message's length."""

    def __init__(self, model: TitleModel | None, text: str):
        self.model = model
        self.text = text
        self._words: list[str] | None = None
        self._by_candidates: dict[tuple[str, ...], dict[str, float]] = {}

    def __call__(self, candidates: Iterable[str] | None = None) -> dict[str, float]:
        key = tuple(candidates or ())  # () = every class, as TitleModel.posterior reads a falsy candidates
        if key not in self._by_candidates:
            if self._words is None:
                self._words = _NB_TOKEN.findall(self.text.lower())
            self._by_candidates[key] = self.model.posterior(self._words, key or None)
        return self._by_candidates[key]


def _cue_table(spans) -> dict[str, list]:
    """Cue spans by label, less those that another cue cancels: a shopping verb right after a negation ("don't want")
    and a help word inside thanks ("thanks for the help")."""
    negation_ends = {s.end for s in spans if s.label_ == "NEGATION"}
    thanks = [s for s in spans if s.label_ == "THANKS"]
    cues: dict[str, list] = {}
    for span in spans:
        if span.label_ == "SHOP" and (span.start in negation_ends or span.start - 1 in negation_ends):
            continue
        if span.label_ == "HELP" and any(t.start <= span.start and span.end <= t.end for t in thanks):
            continue
        cues.setdefault(span.label_, []).append(span)
    return cues


def _append_new(items: list, value) -> None:
    if value not in items:
        items.append(value)


def _intent(has_item: bool, has_filters: bool, cues: dict[str, list]) -> str:
    """shop: names an item; refine: only colours/attributes/gender/usage, or asks for more; then help, greeting.
    "How do I search for shoes?" asks about the app: a how-question without filters is help even with an item."""
    if "HELP_HOW" in cues and not has_filters:
        return "help"
    if has_item:
        return "shop"
    if has_filters:
        if "REFINE_STRONG" in cues or "REFINE_WEAK" in cues:
            return "refine"
        return "shop" if "SHOP" in cues else "refine"
    if "HELP" in cues or "HELP_HOW" in cues:
        return "help"
    if "REFINE_STRONG" in cues:
        return "refine"
    if "SHOP" in cues and "THANKS" not in cues:
        return "shop"
    if "GREETING" in cues:
        return "greeting"
    return "other"


# ------------------------------------------------------------------------------------------------ public API


def build_pipeline(lexicon_path: str | Path | None = None, title_model_path: str | Path | None = None) -> Language:
    lexicon_path = str(lexicon_path or LEXICON_PATH)
    title_model_path = str(title_model_path or TITLE_MODEL_PATH)
    nlp = spacy.blank("en")
    nlp.max_length = MAX_CHARS + 1
    nlp.add_pipe("fashion_normalizer", config={"lexicon_path": lexicon_path})
    nlp.add_pipe("fashion_brands", config={"lexicon_path": lexicon_path})
    nlp.add_pipe("fashion_entities", config={"lexicon_path": lexicon_path})
    nlp.add_pipe("fashion_cues", config={"lexicon_path": lexicon_path})
    nlp.add_pipe("fashion_resolver", config={"lexicon_path": lexicon_path, "title_model_path": title_model_path})
    return nlp


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
            attributes=attributes, keywords=[Keyword(text[s:e], label, s, e) for s, e, _, label in found["keywords"]],
            caption=caption,
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
