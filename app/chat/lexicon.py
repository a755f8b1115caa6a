"""The keyword detector's vocabulary and its two helpers, read from assets/.

- `Lexicon`: `assets/lexicon.json` compiled into phrase tables (phrase -> (kind, catalogue label)), with the
  space/hyphen/joined forms and singular/plural of every phrase, so synonyms resolve to one label.
- `TypoCorrector`: edit distance 1 against the vocabulary ("blak" -> "black").
- `TitleModel`: word-count naive Bayes over product titles (`assets/title_nb.json`, built by
  `app/commands/train_title_model.py`), for generic items and messages that name no item.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable
from pathlib import Path

from spacy.lang.en.stop_words import STOP_WORDS

from models.resources import ASSETS_DIR

log = logging.getLogger(__name__)

LEXICON_PATH = ASSETS_DIR / "lexicon.json"
TITLE_MODEL_PATH = ASSETS_DIR / "title_nb.json"

TYPO_MIN_TOKEN = 4           # shortest word that may be a typo ("blak")
TYPO_MIN_TARGET = 5          # shortest vocabulary word a typo may stand for ("black")
TITLE_MODEL_MIN_COUNT = 3    # a word is evidence for the title model only if seen this often in titles

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


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
