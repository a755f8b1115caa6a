"""Negation scope for the keyword detector: which colours or item a negation cue ("not", "anything but",
"no") governs. The cues and the words a scope may skip or continue over come from the lexicon."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from app.chat.lexicon import Lexicon

NEGATION_MAX_SKIPS = 4       # filler words allowed between a negation cue and the colour it governs


def negated_starts(doc: Doc, ents: list, cue_spans: list, lexicon: Lexicon) -> set[int]:
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
