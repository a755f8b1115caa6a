"""The canonical caption: one place that turns catalogue labels into the text the generator sees.

The keyword detector builds captions for what users type with the same function that the training
data uses for catalogue items, so both land in the same region of the text encoder's space.
"""
from __future__ import annotations

from collections.abc import Iterable


def canonical_caption(
    article_type: str | None = None,
    colours: Iterable[str] = (),
    gender: str | None = None,
    usage: str | None = None,
    attributes: Iterable[str] = (),
) -> str:
    """E.g. ("Shirts", ["Navy Blue"], "Men", "Formal") -> "navy blue shirts, men, formal"."""
    head = " ".join([*colours, *attributes, article_type or "fashion item"]).lower()
    tail = [part.lower() for part in (gender, usage) if part]
    return ", ".join([head, *tail])
