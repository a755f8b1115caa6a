"""The keyword detector's spaCy pipeline on `spacy.blank("en")` (no downloaded model):

    fashion_normalizer  token.norm_ = lower case, straight apostrophes, small typos fixed ("blak" -> "black")
    fashion_brands      brand names with colour/item words ("Red Tape") as BRAND ents, so they are not read as colours
    fashion_entities    PhraseMatcher on NORM for the lexicon's phrases, longest match wins; ents ARTICLE_TYPE,
                        AMBIGUOUS_ITEM, COLOUR, GENDER, ATTRIBUTE, OTHER_ITEM with the catalogue label as the span id
    fashion_cues        PhraseMatcher for usages (may overlap items: "formal shoes") and for intent/negation cues
    fashion_resolver    negation scope (colours, attributes, items), context for generic items ("shoes" + office ->
                        Formal Shoes), the title model as tie-breaker/fallback, intent; stores a plain dict in
                        `doc._.fashion`

The vocabulary, typo corrector and title model are in app/chat/lexicon.py; negation scope in app/chat/negation.py.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

import spacy
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from app.chat.lexicon import (
    LEXICON_PATH,
    TITLE_MODEL_PATH,
    TYPO_MIN_TOKEN,
    Lexicon,
    TitleModel,
    TypoCorrector,
    normalise,
)
from app.chat.negation import negated_starts

MAX_CHARS = 100_000          # longer texts are analysed on their first MAX_CHARS characters
FALLBACK_MIN_POSTERIOR = 0.9  # the title model names an item on its own only when this sure (chat text)...
FALLBACK_MIN_POSTERIOR_TITLE = 0.5  # ...or this sure on title-like text ("Baggit Women Cappuccino Kong")
FALLBACK_MIN_EVIDENCE = 2    # ...and, on chat text, with at least this many known title words
TITLE_CASE_SHARE = 0.7       # text is title-like when this share of its words are Capitalised

QUESTION_WORDS = {"who", "what", "when", "where", "why", "which", "whose", "how"}
_NB_TOKEN = re.compile(r"[a-z0-9]+")


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
        negated = negated_starts(doc, ents, cues.get("NEGATION", []), self.lexicon)
        usages = list(doc.spans["usages"])
        usage = usages[0].label_ if usages else None

        keywords, articles, colours, excluded = [], [], [], []
        gender, attributes, excluded_attributes, brands, evidence_words = None, {}, {}, [], None
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
                if ent.start in negated:  # "nothing too shiny", "no print"
                    kind = "NOT_ATTRIBUTE"
                    _append_new(excluded_attributes.setdefault(name, []), val)
                else:
                    _append_new(attributes.setdefault(name, []), val)
            elif kind == "BRAND":
                brands.append(value)
            keywords.append((ent.start_char, ent.end_char, ent.text, f"{kind}:{value}"))
        for span in usages:
            keywords.append((span.start_char, span.end_char, span.text, f"USAGE:{span.label_}"))
        excluded = [c for c in excluded if c not in colours]
        excluded_attributes = {name: kept for name, values in excluded_attributes.items()
                               if (kept := [v for v in values if v not in attributes.get(name, [])])}

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

        # A weak attribute word alone is chat ("it's basic"); negated it is a filter ("not shiny").
        strong_attrs = [e for e in ents if e.label_ == "ATTRIBUTE"
                        and (e.start in negated or e.text.lower() not in self.lexicon.weak_terms)]
        # A usage alone in a question is chat, not a filter: "who won the football match?"
        usage_filter = usage and not (len(doc) and doc[0].norm_ in QUESTION_WORDS)
        filters = bool(colours or excluded or gender or usage_filter or strong_attrs or brands)
        keywords.sort()
        doc._.fashion = {
            "intent": _intent(bool(articles) or other_items, filters, cues),
            "article_types": articles, "colours": colours, "exclude_colours": excluded,
            "gender": gender, "usage": usage, "attributes": attributes,
            "exclude_attributes": excluded_attributes, "keywords": keywords,
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
