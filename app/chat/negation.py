"""Negation scope for the keyword detector: which colours, attributes or item a negation cue ("not",
"anything but", "no") governs. The cues and the words a scope may skip or continue over come from the lexicon."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from app.chat.lexicon import Lexicon

NEGATION_MAX_SKIPS = 4       # filler words allowed between a negation cue and the colour it governs
LISTED = ("COLOUR", "ATTRIBUTE")  # what a negation governs as a list: "not red or blue", "no prints or stripes"


def negated_starts(doc: Doc, ents: list, cue_spans: list, lexicon: Lexicon) -> set[int]:
    """Start tokens of the colours and attributes (or the item) a negation governs: "not (in) black",
    "anything but white or grey", "nothing too shiny", "no prints or stripes", "not a t-shirt". An item after
    a colour or attribute is not negated: "not black shoes" excludes only Black; a list holds one kind, so
    "no logo and pink" excludes only the logo. A phrase that holds its own negation ("without sleeves":
    sleeveless) starts at the cue, so it is not governed by it."""
    listed_at = {e.start: e for e in ents if e.label_ in LISTED}
    item_at = {e.start: e for e in ents if e.label_ in ("ARTICLE_TYPE", "AMBIGUOUS_ITEM")}
    out: set[int] = set()
    for cue in cue_spans:
        i, skips, in_list = cue.end, 0, None  # in_list: the kind the list holds ("no shiny white" keeps White)
        while i < len(doc):
            if i in listed_at and in_list in (None, listed_at[i].label_):
                out.add(i)
                i, in_list = listed_at[i].end, listed_at[i].label_
                continue
            if i in item_at and not in_list:
                out.add(i)
                break
            norm = doc[i].norm_
            if in_list:  # after a colour or attribute only a list goes on: "not red, blue or green"
                if norm in lexicon.scope_continue:
                    i += 1
                    continue
                break
            if norm in lexicon.scope_skip and skips < NEGATION_MAX_SKIPS and doc[i].ent_type == 0:
                skips += 1
                i += 1
                continue
            break
    return out
