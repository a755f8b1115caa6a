"""What the chat history keeps of a bot turn, and drawing a stored turn again.

A bot turn's record is `Reply.record()` (text, chips, images as seeds, similar products as ids) plus:

- "weights": the fingerprints of the weights that drew its images (`{"generator": ...}`, or `{"editor": ...}`
  for variants of a photo; `ModelService.fingerprints`). Other weights draw other images from the same seeds,
  so a turn is drawn again only by the weights that drew it (`WeightsChanged` otherwise);
- "photo" and "photo_text": for variants of an attached photo, the copy the storage keeps of it
  (`Storage.keep_photo`) and the text the variants were drawn with;
- "prompt": what the user typed, for the metadata of images saved from the turn.

`redraw` runs on the worker thread (it draws); the rest is plain data. No tkinter here.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

PHOTO_KEY = "fashiongan.kept_photo"  # PIL Image.info key: the kept copy a photo came from (Storage.keep_photo)


class NotRedrawable(Exception):
    """A stored turn that can't be drawn again; the message says why, for the turn to show."""


class WeightsChanged(NotRedrawable):
    """The turn was drawn by other weights or drawing steps than the loaded ones: its seeds would draw other images."""


def remember_photo(image, name: str | None) -> None:
    """Tag a photo with the name of its kept copy, so the turns drawn from it record where it is."""
    if image is not None and name:
        image.info[PHOTO_KEY] = name


def photo_of(reply):
    """The photo the reply's images are variants of (PIL image), or None."""
    return next((im.reference for im in reply.images if getattr(im, "reference", None) is not None), None)


def bot_record(reply, fingerprints: dict[str, str], photo_text: str | None = None) -> dict:
    """The history record of a bot reply. `photo_text`: the text its photo variants were drawn with (the
    attached photo's change text; for later turns the reply's caption, as Bot draws them)."""
    record = reply.record()
    if not reply.images:
        return record
    photo = photo_of(reply)
    kind = "editor" if photo is not None or not all(im.regenerable for im in reply.images) else "generator"
    if kind in fingerprints:
        record["weights"] = {kind: fingerprints[kind]}
    prompt = next((im.prompt for im in reply.images if im.prompt), "")
    if prompt:
        record["prompt"] = prompt
    name = photo.info.get(PHOTO_KEY) if photo is not None else None
    if name:
        record["photo"] = name
        record["photo_text"] = (reply.caption or "") if photo_text is None else photo_text
    return record


def can_redraw(record: dict) -> bool:
    """Whether a stored bot turn can be drawn again: its images from their seeds (variants of a photo need
    the kept photo), or only its similar products (by id)."""
    images = record.get("images") or []
    if images:
        return bool(record.get("caption")) and (all(im.get("regenerable", True) for im in images)
                                                or bool(record.get("photo")))
    return bool(record.get("similar"))


def weights_problem(record: dict, fingerprints: dict[str, str]) -> str | None:
    """Why the loaded weights can't draw this turn again (other weights than the ones that drew it), or None.
    A record without fingerprints (an older history) is drawn again."""
    for kind, then in (record.get("weights") or {}).items():
        now = fingerprints.get(kind)
        if now is not None and now != then:
            what = "photo editor" if kind == "editor" else "image generator"
            return (f"These images were drawn by another version of the {what} (weights or drawing steps: "
                    f"{then[:8]} then, {now[:8]} now): their seeds would draw different images, so they are "
                    f"not drawn again")
    return None


def redraw(bot, record: dict, open_photo: Callable[[str], object], check: Callable[[], None] = lambda: None):
    """Draw a stored bot turn again (worker thread): the same images from the same seeds and the same
    products, with the stored text and chips. Raises WeightsChanged when other weights are loaded now, and
    NotRedrawable when the kept photo can't be opened."""
    from app.chat.bot import Chip, Reply, ShownImage

    service = bot.service
    problem = weights_problem(record, getattr(service, "fingerprints", {}) or {})
    if problem:
        raise WeightsChanged(problem)
    items = record.get("images") or []
    caption = record.get("caption") or ""
    prompt = record.get("prompt", "")
    if items and record.get("photo"):
        try:
            photo = open_photo(record["photo"])
        except (OSError, ValueError) as exc:
            raise NotRedrawable(f"The photo these were drawn from can't be opened any more ({exc})") from exc
        remember_photo(photo, record["photo"])
        check()
        images = _variants_again(service, photo, record.get("photo_text") or "", items, prompt, ShownImage)
        reply = Reply("", "images", images=images, caption=caption)
    elif items:
        reply = bot.redraw(caption, items, prompt)
    else:
        reply = Reply("", "images", caption=caption)
    check()
    ids = [p.get("id") for p in record.get("similar") or []]
    if ids and bot.catalogue_ready and callable(getattr(service, "products", None)):
        reply.similar = service.products(ids)
    reply.kind, reply.text = record.get("kind", "images"), record.get("text", reply.text)
    reply.headline, reply.note = record.get("headline"), record.get("note")
    reply.chips = [Chip(label, kind) for label, kind in record.get("chips") or []]
    reply.caption = caption or reply.caption
    return reply


def _variants_again(service, photo, text: str, items: list[dict], prompt: str, shown) -> list:
    """Variants of a photo for the stored seeds: plain ones as `variants(photo, text, seeds)` drew them, the
    "More like this" ones as `variant_variations` did, each set in one call."""
    images = []
    plain = [it for it in items if it.get("variation") is None]
    if plain:
        generated, _ = service.variants(photo, text=text, seeds=[int(it["seed"]) for it in plain])
        images += [shown(im, s, generated.caption, prompt=prompt, regenerable=False, reference=photo)
                   for s, im in zip(generated.seeds, generated.images)]
    varied = [it for it in items if it.get("variation") is not None]
    for (caption, seed), group in groupby(varied, key=lambda it: (it.get("caption") or "", int(it["seed"]))):
        group = list(group)
        drawn = service.variant_variations(photo, caption, seed, [int(it["variation"]) for it in group])
        images += [shown(im, seed, caption, variation=int(it["variation"]), prompt=prompt, regenerable=False,
                         reference=photo, number=it.get("number")) for it, im in zip(group, drawn)]
    return images
