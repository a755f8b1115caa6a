"""The shopping conversation: what the user is looking for right now, and what to answer.

No tkinter here (the Thonny split): `Bot.respond(text)` returns a plain `Reply` that the GUI renders,
the tests inspect and the history stores. The bot keeps the state of the current request
(`RequestState`: item, colours, excluded colours, gender, usage, attributes, excluded attributes, last
seeds; what a message carries over of it is the table at `RequestState`):

- greeting / help / other -> a short answer with an example request;
- shop with an item -> a new request: "Looking for: <chips>" and the images;
- refine -> changes only what the message names ("make it red" keeps the item and changes the colour;
  "same but for women" changes the gender; "show me more" draws new seeds of the same request);
- no item known yet -> a short clarifying question; the next message that names an item completes it;
- an item the catalogue has nothing of for the gender asked ("dresses for men") -> says so in one
  sentence and offers the nearest item it has for that gender; "yes" takes the offer; nothing is drawn;
- excluded colours ("not black") never reach the caption, and images or products that look like an
  excluded colour are left out (new seeds are drawn in their place); excluded attributes ("nothing too
  shiny") never reach the caption either, and products whose titles name them rank after the others.

The service is `app.chat.service.ModelService` (or any object with `detect` and `generate`); the optional
catalogue methods (`similar_products`, `describe_image`, `variants`) are used when present.
All methods here run on the worker thread: they may take seconds.
"""
from __future__ import annotations

import colorsys
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from models.captions import canonical_caption

log = logging.getLogger(__name__)

SIMILAR_K = 8              # products in a "Similar products" strip
CANDIDATES = 3             # an answer's images are picked among this many seeds' draws per image
VARIATION_STRENGTH = 0.2   # "More like this": how far variations move from the seed's latent (0..1); at
                           # psi 1, 0.5 left 60% of variations nearest the clicked card of four, 0.2 87% (of
                           # 240, on prompts apart from those it was chosen on), 0.026 from it in pixels
EXCLUDE_ROUNDS = 3         # extra draws allowed to replace images that show an excluded colour
MAX_SHOWN_SEEDS = 64       # seeds of one request remembered across restarts ("show me more" avoids their products)

EXAMPLES = [
    "a red dress for a party",
    "navy blue formal shirts for men",
    "white sneakers, anything but black",
    "a striped t-shirt for women",
]
REFINE_EXAMPLES = ["make it green", "same but for women", "with long sleeves", "not black", "show me more"]
CLARIFY_ITEMS = "a dress, a shirt, jeans, sneakers or a handbag"

# Words that make a message with a new item keep the rest of the request ("same but in shirts", "instead show me
# shoes"); see the table at RequestState. "but" counts only at the start: inside a request it is a conjunction
# ("a green saree but nothing too shiny"); "also", "too", "as well" add an item, they do not change this one.
_CARRY_OVER = re.compile(r"^\W*but\b|\b(same|instead|what about|how about|make (it|them)|change (it|them|that|to)"
                         r"|switch (it |them )?to|rather)\b", re.I)
_YES = re.compile(r"^\W*(yes|yeah|yep|yup|sure|ok|okay|please|go ahead|why not|sounds good|alright|all right)\b",
                  re.I)
POSSESSIVE = {"Men": "men\u2019s", "Women": "women\u2019s", "Boys": "boys\u2019", "Girls": "girls\u2019",
              "Unisex": "unisex"}
GREETING_EXAMPLES = [EXAMPLES[3], "black sneakers for men", "a yellow kurta for a festival", "a denim jacket"]
_THANKS = re.compile(r"\b(thanks|thank you|thank u|thx|ty|cheers|appreciate)\b", re.I)

# Catalogue colour label -> family, for "does this image/product show an excluded colour?".
COLOUR_FAMILIES = {
    "black": ["Black"],
    "white": ["White", "Off White", "Cream"],
    "grey": ["Grey", "Grey Melange", "Charcoal", "Silver"],
    "red": ["Red", "Maroon", "Burgundy"],
    "pink": ["Pink", "Magenta", "Rose", "Peach"],
    "orange": ["Orange", "Rust", "Copper"],
    "yellow": ["Yellow", "Mustard", "Gold"],
    "green": ["Green", "Olive", "Sea Green", "Fluorescent Green", "Lime Green"],
    "blue": ["Blue", "Navy Blue", "Turquoise Blue", "Teal"],
    "purple": ["Purple", "Lavender", "Mauve"],
    "brown": ["Brown", "Coffee Brown", "Mushroom Brown", "Tan", "Bronze", "Khaki", "Taupe"],
    "beige": ["Beige", "Skin", "Nude"],
}
_FAMILY_OF = {label.lower(): family for family, labels in COLOUR_FAMILIES.items() for label in labels}


def colour_family(label: str | None) -> str | None:
    """'Navy Blue' -> 'blue'; None for labels without a single colour (Multi, Metallic) or unknown."""
    return _FAMILY_OF.get((label or "").strip().lower())


def image_colour_family(image) -> str | None:
    """A rough colour family of the item in a product-style image (on a light background)."""
    import numpy as np

    arr = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
    px = arr.reshape(-1, 3)
    fg = px[px.min(axis=1) < 0.86]  # not the near-white background
    if len(fg) < 0.04 * len(px):
        return "white"
    r, g, b = (float(v) for v in np.median(fg, axis=0))
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    hue = h * 360
    if v < 0.22:
        return "black"
    if s < 0.16:
        return "white" if v > 0.85 else "grey"
    if s < 0.35 and 20 <= hue < 55 and v > 0.7:
        return "beige"
    if hue < 15 or hue >= 345:
        return "red"
    if hue < 40:
        return "brown" if v < 0.6 else "orange"
    if hue < 70:
        return "yellow" if v > 0.55 else "green"
    if hue < 170:
        return "green"
    if hue < 260:
        return "blue"
    if hue < 300:
        return "purple"
    return "pink"


# ------------------------------------------------------------------------------------------ plain objects


@dataclass
class Chip:
    label: str  # what the chip shows: "Red", "not Black", "Dresses", "Women", "Party", "long sleeve"
    kind: str   # item | colour | not_colour | gender | usage | attribute | not_attribute ("not shiny")


@dataclass
class ShownImage:
    image: Any                    # PIL.Image, 64x64 RGB
    seed: int
    caption: str
    variation: int | None = None  # "More like this": the second seed mixed into `seed`'s latent
    prompt: str = ""              # what the user typed, for the saved file's metadata
    regenerable: bool = True      # False for variants of a photo (drawing them again needs the photo)
    reference: Any = None         # the photo this is a variant of (PIL image; not stored in the history)
    number: int | None = None     # which of the "More like this" variations (1, 2, ...)

    @property
    def label(self) -> str:
        if self.variation is None:
            return f"seed {self.seed}"
        return f"variation {self.number} of seed {self.seed}" if self.number else f"variation of seed {self.seed}"

    def record(self) -> dict:
        return {"seed": self.seed, "variation": self.variation, "number": self.number, "caption": self.caption,
                "regenerable": self.regenerable}


@dataclass
class Reply:
    text: str                                  # the whole answer as plain text (history, tests, logs)
    kind: str = "text"                         # text | images | clarify | error
    headline: str | None = None                # shown before the chips, e.g. "Looking for:"
    chips: list[Chip] = field(default_factory=list)
    note: str | None = None                    # a second line: what changed, what was left out
    images: list[ShownImage] = field(default_factory=list)
    similar: list[dict] = field(default_factory=list)  # id, title, articleType, baseColour, score, thumbnail
    caption: str | None = None
    request: dict | None = None                # the request state after this turn

    def record(self) -> dict:
        """A JSON-able copy for the chat history (images as seeds: they can be drawn again)."""
        return {
            "role": "bot", "kind": self.kind, "text": self.text, "headline": self.headline,
            "chips": [[c.label, c.kind] for c in self.chips], "note": self.note, "caption": self.caption,
            "images": [im.record() for im in self.images],
            "similar": [{k: p.get(k) for k in ("id", "title", "articleType", "baseColour")} for p in self.similar],
        }


@dataclass
class RequestState:
    """What the shopper is looking for now. What a message carries over of it (`Bot.respond`):

    | the message                                         | e.g.                                   | keeps           |
    |-----------------------------------------------------|----------------------------------------|-----------------|
    | names no item                                       | "make it red", "not black", "same but  | everything;     |
    |                                                     | for women", "also in red", "nothing    | what it names   |
    |                                                     | shiny", "show me more"                 | changes (below) |
    | names an item while the request has none (the       | "something for a party" -> "a dress";  | everything      |
    | answer to "what kind of item?") or after the        | "kurtas then" after "men's kurtas      |                 |
    | bot's offer of another item                         | instead?"                              |                 |
    | names an item and says same / instead / what about  | "same but in shirts", "instead show    | all but the     |
    | / how about / make it / change it (to) / switch to  | me shoes", "but as a dress"            | item            |
    | / rather, or starts with "but"                      |                                        |                 |
    | names an item, none of those words                  | "I also need a green saree", "a saree  | nothing, not    |
    |                                                     | but nothing too shiny"                 | even excluded   |
    |                                                     |                                        | colours or the  |
    |                                                     |                                        | photo           |

    Within a kept request: named colours replace the colours and lift their exclusion; excluded colours
    add to the excluded ones and drop those colours; gender and usage replace; a named attribute replaces
    its kind ("long sleeve" for "short sleeve") and lifts its exclusion; excluded attributes add up.
    """

    article_type: str | None = None
    colours: list[str] = field(default_factory=list)
    exclude_colours: list[str] = field(default_factory=list)
    gender: str | None = None
    usage: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)  # the last set drawn, so refinements keep the layout
    # every seed drawn for this caption, so "show me more" avoids their products after a restart too
    shown_seeds: list[int] = field(default_factory=list)
    exclude_attributes: dict[str, list[str]] = field(default_factory=dict)  # "nothing too shiny": never captioned

    @property
    def empty(self) -> bool:
        return not (self.article_type or self.colours or self.exclude_colours or self.gender or self.usage
                    or self.attributes or self.exclude_attributes)

    def caption(self) -> str:
        values = [v for vs in self.attributes.values() for v in vs]
        return canonical_caption(self.article_type, self.colours, self.gender, self.usage, values)

    def chips(self) -> list[Chip]:
        chips = [Chip(c, "colour") for c in self.colours]
        chips += [Chip(v, "attribute") for vs in self.attributes.values() for v in vs]
        if self.article_type:
            chips.append(Chip(self.article_type, "item"))
        if self.gender:
            chips.append(Chip(self.gender, "gender"))
        if self.usage:
            chips.append(Chip(self.usage, "usage"))
        chips += [Chip(f"not {c}", "not_colour") for c in self.exclude_colours]
        chips += [Chip(f"not {v}", "not_attribute") for vs in self.exclude_attributes.values() for v in vs]
        return chips

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> RequestState:
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(
                article_type=data.get("article_type") or None,
                colours=[str(c) for c in data.get("colours") or []],
                exclude_colours=[str(c) for c in data.get("exclude_colours") or []],
                gender=data.get("gender") or None, usage=data.get("usage") or None,
                attributes={str(k): [str(v) for v in vs] for k, vs in (data.get("attributes") or {}).items()},
                seeds=[int(s) for s in data.get("seeds") or []],
                shown_seeds=[int(s) for s in data.get("shown_seeds") or []][-MAX_SHOWN_SEEDS:],
                exclude_attributes={str(k): [str(v) for v in vs]
                                    for k, vs in (data.get("exclude_attributes") or {}).items()},
            )
        except (TypeError, ValueError, AttributeError):
            log.warning("ignoring an unreadable saved request state: %r", data)
            return cls()

    def apply(self, detection) -> list[str]:
        """Change what the detection names, keep the rest; returns what changed, in words."""
        changes = []
        if detection.colours:
            self.colours = list(detection.colours)
            self.exclude_colours = [c for c in self.exclude_colours if c not in detection.colours]
            changes.append(f"colour to {' and '.join(c.lower() for c in detection.colours)}")
        if detection.exclude_colours:
            new = [c for c in detection.exclude_colours if c not in self.exclude_colours]
            self.exclude_colours += new
            self.colours = [c for c in self.colours if c not in detection.exclude_colours]
            if new:
                changes.append(f"no {' or '.join(c.lower() for c in new)}")
        if detection.gender and detection.gender != self.gender:
            self.gender = detection.gender
            changes.append(f"for {detection.gender.lower()}")
        if detection.usage and detection.usage != self.usage:
            self.usage = detection.usage
            changes.append(f"{detection.usage.lower()} wear")
        for name, values in (detection.attributes or {}).items():
            if values and self.attributes.get(name) != list(values):
                self.attributes[name] = list(values)
                changes.append(" ".join(values))
            _remove(self.exclude_attributes, name, values)
        for name, values in (getattr(detection, "exclude_attributes", None) or {}).items():
            new = [v for v in values if v not in self.exclude_attributes.get(name, [])]
            if new:
                self.exclude_attributes[name] = self.exclude_attributes.get(name, []) + new
                changes.append(f"not {' or '.join(new)}")
            _remove(self.attributes, name, values)
        return changes


def _remove(table: dict[str, list[str]], name: str, values) -> None:
    """Drop `values` from table[name], and the name when nothing is left."""
    kept = [v for v in table.get(name, []) if v not in values]
    if kept:
        table[name] = kept
    else:
        table.pop(name, None)


def state_from_detection(detection) -> RequestState:
    state = RequestState(article_type=detection.article_types[0] if detection.article_types else None)
    state.apply(detection)
    return state


class Settingslike:
    """What the bot reads from the app settings (app.chat.storage.Settings has these fields)."""

    images_per_request: int = 4
    seed_mode: str = "random"
    fixed_seed: int = 0


def _pick_seeds(n: int, start: int | None = None) -> list[int]:
    first = random.randrange(0, 2**31 - n) if start is None else start
    return list(range(first, first + n))


# -------------------------------------------------------------------------------------------------- the bot


class Bot:
    def __init__(self, service, settings=None, state: dict | None = None):
        self.service = service
        self.settings = settings if settings is not None else Settingslike()
        self.state = RequestState.from_dict(state)
        self.reference = None          # the uploaded image the current request started from, if any
        # The catalogue (similar products, describing photos); the window sets it from the loading result.
        self.catalogue_ready = hasattr(service, "similar_products") or hasattr(service, "describe_image")
        self.catalogue_error: str | None = None
        self.generation_error: str | None = None  # set when the generator could not be loaded
        self._variation_counter = 0
        self.offer: str | None = None  # the item type offered in place of one the catalogue lacks for the gender
        self._greetings = 0
        self._shown: list = []  # images shown for the current text request ("show me more" avoids them)

    # -- public entry points (worker thread)

    def reset(self) -> None:
        self._shown = []
        self.state = RequestState()
        self.reference = None

    def respond(self, text: str, check: Callable[[], None] = lambda: None) -> Reply:
        text = (text or "").strip()
        if not text:
            return Reply("Type what you are looking for, e.g. " + _quote(EXAMPLES[0]) + ".")
        detection = self.service.detect(text)
        check()
        offer, self.offer = self.offer, None
        if offer and _YES.search(text) and not detection.article_types:  # "yes" to "men's kurtas instead?"
            self.state.article_type = offer
            self.state.apply(detection)
            return self._draw_reply(text, self._seeds(), None, check)
        if offer and detection.article_types:  # "kurtas then": the answer to the offer keeps the request
            return self._shop_item(text, detection, check, keep=True)
        intent = detection.intent
        has_filters = bool(detection.colours or detection.exclude_colours or detection.gender or detection.usage
                           or detection.attributes or getattr(detection, "exclude_attributes", None))
        if detection.article_types:
            return self._shop_item(text, detection, check)
        if intent == "greeting" and not has_filters:
            return self._greeting()
        if intent == "help":
            return self._help()
        if intent == "other" and not has_filters:
            if _THANKS.search(text):
                return Reply("You're welcome! Ask for something else whenever you like, e.g. "
                             f"{_quote(EXAMPLES[1])}.")
            return Reply("Sorry, I didn't catch an item in that. I find clothes, shoes and accessories: try "
                         + ", ".join(_quote(e) for e in EXAMPLES[:3]) + ".")
        # shop or refine without a new item: change only what the message names.
        return self._refine(text, detection, check)

    def more_like(self, caption: str, seed: int, prompt: str = "",
                  check: Callable[[], None] = lambda: None, reference=None) -> Reply:
        """Variations around one image: its seed's latent mixed with a little of new seeds; for a variant
        of a photo (`reference`), variants of that photo near the clicked one."""
        n = self._n()
        if reference is not None:
            images = self._variant_variations(reference, caption, seed, n, prompt)
        else:
            images = self._variations(caption, seed, n, prompt)
        check()
        similar, note = self._similar(caption, [im.image for im in images], self._excluded_families())
        return Reply(f"More like seed {seed}: {caption}", "images", headline=f"More like seed {seed}:",
                     chips=self.state.chips() if self.state.caption() == caption else [],
                     note=note, images=images, similar=similar, caption=caption, request=self.state.to_dict())

    def similar_to(self, image, caption: str, seed: int | None = None) -> Reply:
        label = f"seed {seed}" if seed is not None else "this image"
        if not (self.catalogue_ready and hasattr(self.service, "similar_products")):
            return Reply("Similar products need the product catalogue, which is not available"
                         + (f" ({self.catalogue_error})." if self.catalogue_error else " in this build."), "error")
        products, note = self._similar(caption, [image], self._excluded_families(), raise_errors=True)
        if not products:
            return Reply(f"I found no products similar to {label}.", "text")
        return Reply(f"Products similar to {label} ({caption}):", "images", headline=f"Products similar to {label}:",
                     note=note, similar=products, caption=caption)

    def redraw(self, caption: str, items: list[dict], prompt: str = "") -> Reply:
        """Draw a stored set again from its seeds (history restored after a restart)."""
        images = []
        plain = [it for it in items if it.get("variation") is None]
        if plain:
            seeds = [int(it["seed"]) for it in plain]
            images += [ShownImage(im, s, caption, prompt=prompt)
                       for s, im in zip(seeds, self._generate(caption, seeds).images)]
        for it in items:
            if it.get("variation") is not None:
                images += self._variations(caption, int(it["seed"]), 1, prompt, [int(it["variation"])])
        similar, note = self._similar(caption, [im.image for im in images], self._excluded_families())
        return Reply(f"Again: {caption}", "images", images=images, similar=similar, note=note, caption=caption)

    def respond_image(self, image, text: str = "", name: str = "",
                      check: Callable[[], None] = lambda: None) -> Reply:
        """An image attached in the chat: describe it, draw variants (changed by `text`), similar products."""
        detection = self.service.detect(text) if text.strip() else None
        result = analyse_upload(self.service, image, detection, self._seeds(), self._excluded_families(),
                                catalogue=self.catalogue_ready, catalogue_error=self.catalogue_error)
        check()
        if result.state is not None:
            self.state = result.state
            self.state.seeds = [im.seed for im in result.reply.images]
            self.reference = image
        result.reply.request = self.state.to_dict()
        return result.reply

    # Writes the words of a reply: an app.chat.llm.ReplyWriter (the window sets it), or None (the built-in text).
    writer = None

    def finish(self, text: str, reply: Reply, check: Callable[[], None] = lambda: None,
               progress: Callable[[object], None] | None = None) -> Reply:
        """Where a reply's text becomes final: the language model's words when a writer is set (streamed to
        `progress`), the built-in ones otherwise. The chips, images and products stay the bot's either way."""
        if self.writer is None:
            return reply
        return self.writer.write(text, reply, check, progress)

    # -- conversation steps

    def _greeting(self) -> Reply:
        """Short, and not the welcome the window already shows: an example it does not list, another each time,
        or the request under way."""
        example = _quote(GREETING_EXAMPLES[self._greetings % len(GREETING_EXAMPLES)])
        self._greetings += 1
        if self.state.article_type:
            return Reply(f"Hello again! Still after {self.state.caption()}? Say {_quote('show me more')} "
                         f"or try {example}.")
        return Reply(f"Hello! What are you shopping for? Try {example}.")

    def _help(self) -> Reply:
        return Reply("Describe an item with any colour, style, occasion or who it's for, e.g. "
                     + ", ".join(_quote(e) for e in EXAMPLES) + ". Then refine it: "
                     + ", ".join(_quote(e) for e in REFINE_EXAMPLES) + ". You can also attach a photo "
                     "(the Attach button or the Upload tab) to get variants of it and similar products. "
                     "Under each image: Save, More like this and Similar products.")

    def _shop_item(self, text: str, detection, check, keep: bool = False) -> Reply:
        keep = keep or (self.state.article_type and _CARRY_OVER.search(text)) or (not self.state.article_type
                                                                                  and not self.state.empty)
        if keep:  # "same but in shirts", or the answer to "what kind of item?"
            self.state.article_type = detection.article_types[0]
            changes = [f"item to {self.state.article_type.lower()}"] + self.state.apply(detection)
        else:
            self.state = state_from_detection(detection)
            self.reference = None
            changes = []
        note = None
        if len(detection.article_types) > 1:
            note = (f"One item at a time: showing {detection.article_types[0].lower()} first "
                    f"(then ask for {', '.join(a.lower() for a in detection.article_types[1:])}).")
        elif changes and keep and self.state.seeds:
            note = "Changed " + ", ".join(changes) + "."
        seeds = self._seeds()
        return self._draw_reply(text, seeds, note, check)

    def _refine(self, text: str, detection, check) -> Reply:
        changes = self.state.apply(detection)
        if not self.state.article_type:
            if self.state.empty:
                return Reply("What are you looking for? For example " + CLARIFY_ITEMS + ".", "clarify")
            return Reply(f"What kind of item should it be? For example {CLARIFY_ITEMS}.", "clarify", headline="So far:",
                         chips=self.state.chips(), request=self.state.to_dict())
        if changes:  # same seeds: the same designs, changed as asked
            if len(self.state.seeds) == self._n():
                return self._draw_reply(text, self.state.seeds, "Changed " + ", ".join(changes) + ".", check,
                                        same_seeds=True)
            seeds = self._seeds()
            note = "Changed " + ", ".join(changes) + "."
        else:  # "show me more", "another one", "different ones": never one already shown
            last = max(self.state.seeds) if self.state.seeds else None
            seeds = self._seeds(after=last)
            note = "New designs for the same request."
            return self._draw_reply(text, seeds, note, check, avoid=self._shown or self._shown_before())
        return self._draw_reply(text, seeds, note, check)

    def _draw_reply(self, text: str, seeds: list[int], note: str | None, check, avoid: list = (),
                    same_seeds: bool = False) -> Reply:
        caption = self.state.caption()
        chips = self.state.chips()
        headline = "Looking for:"
        plain = f"{headline} " + " · ".join(c.label for c in chips)
        missing = self._missing_for_gender()
        if missing is not None:
            return missing
        if self.generation_error:
            return Reply(f"{plain}. I can't draw images right now: {self.generation_error}", "error",
                         headline=headline, chips=chips, note=f"I can't draw images right now: "
                         f"{self.generation_error}", caption=caption, request=self.state.to_dict())
        excluded = self._excluded_families()
        if self.reference is not None and hasattr(self.service, "variants"):
            images, dropped = self._draw_variants(self.reference, caption, seeds, excluded, text, check)
        else:
            images, dropped = self._draw(caption, seeds, excluded, text, check, list(avoid), same_seeds)
            self._shown = list(avoid) + [im.image for im in images]
            earlier = self.state.shown_seeds if avoid else []
            self.state.shown_seeds = (earlier + [im.seed for im in images])[-MAX_SHOWN_SEEDS:]
        self.state.seeds = [im.seed for im in images] or seeds
        similar, similar_note = self._similar(caption, [im.image for im in images], excluded)
        notes = [n for n in (note, _dropped_note(dropped, self.state.exclude_colours), similar_note) if n]
        return Reply(plain, "images", headline=headline, chips=chips, note=" ".join(notes) or None,
                     images=images, similar=similar, caption=caption, request=self.state.to_dict())

    def _shown_before(self) -> list:
        """The images shown for this request in an earlier run of the app, drawn again from their seeds
        (this run has shown none yet)."""
        seeds = self.state.shown_seeds
        if not seeds or self.reference is not None:
            return []
        return list(self._generate(self.state.caption(), seeds).images)

    # -- drawing

    def _n(self) -> int:
        return max(1, min(8, int(getattr(self.settings, "images_per_request", 4))))

    def _seeds(self, after: int | None = None) -> list[int]:
        n = self._n()
        if getattr(self.settings, "seed_mode", "random") == "fixed":
            start = after + 1 if after is not None else int(getattr(self.settings, "fixed_seed", 0))
            return list(range(start, start + n))
        return _pick_seeds(n)

    def _generate(self, caption: str, seeds: list[int]):
        return self.service.generate(caption, seeds)

    def _generate_distinct(self, caption: str, seeds: list[int], avoid: list):
        """The seeds' pool widened to CANDIDATES per image, the most distinct draws kept (services without
        `generate_distinct` draw the seeds as they are)."""
        distinct = getattr(self.service, "generate_distinct", None)
        if not callable(distinct):
            return self._generate(caption, seeds)
        pool = list(range(seeds[0], seeds[0] + CANDIDATES * len(seeds)))
        return distinct(caption, pool, len(seeds), avoid)

    def _draw(self, caption, seeds, excluded, prompt, check, avoid: list = (),
              same_seeds: bool = False) -> tuple[list[ShownImage], int]:
        """The images for `seeds` (picked among more seeds' draws to differ from each other and from `avoid`,
        where the service can, unless `same_seeds`: the designs already shown, changed); those showing an
        excluded colour are replaced by later seeds."""
        n = len(seeds)
        generated = self._generate(caption, seeds) if same_seeds else self._generate_distinct(caption, seeds, avoid)
        images = [ShownImage(im, s, caption, prompt=prompt) for s, im in zip(generated.seeds, generated.images)]
        if not excluded:
            return images, 0
        keep = [im for im in images if self._family(im.image) not in excluded]
        dropped = n - len(keep)
        next_seed = max(seeds[0] + CANDIDATES * n, max(im.seed for im in images) + 1)
        for _ in range(EXCLUDE_ROUNDS):
            if len(keep) >= n:
                break
            check()
            extra = list(range(next_seed, next_seed + 2 * (n - len(keep))))
            next_seed = extra[-1] + 1
            more = [ShownImage(im, s, caption, prompt=prompt)
                    for s, im in zip(extra, self._generate(caption, extra).images)]
            keep += [im for im in more if self._family(im.image) not in excluded]
        return keep[:n], dropped

    def _draw_variants(self, image, caption, seeds, excluded, prompt, check):
        generated, _ = self.service.variants(image, text=caption, seeds=seeds)
        out = [ShownImage(im, s, generated.caption, prompt=prompt, regenerable=False, reference=image)
               for s, im in zip(generated.seeds, generated.images)]
        keep = [im for im in out if not excluded or self._family(im.image) not in excluded]
        return keep or out, len(out) - len(keep)

    def _variation_seeds(self, n: int) -> list[int]:
        if getattr(self.settings, "seed_mode", "random") == "fixed":
            seeds = [self._variation_counter + i + 1 for i in range(n)]
            self._variation_counter += n
            return seeds
        return _pick_seeds(n)

    def _variant_variations(self, reference, caption: str, seed: int, n: int, prompt: str) -> list[ShownImage]:
        variation_seeds = self._variation_seeds(n)
        images = self.service.variant_variations(reference, caption, seed, variation_seeds)
        return [ShownImage(im, seed, caption, variation=v, prompt=prompt, regenerable=False, reference=reference,
                           number=i) for i, (v, im) in enumerate(zip(variation_seeds, images), 1)]

    def _variations(self, caption: str, seed: int, n: int, prompt: str = "",
                    variation_seeds: list[int] | None = None) -> list[ShownImage]:
        if variation_seeds is None:
            variation_seeds = self._variation_seeds(n)
        custom = getattr(self.service, "variations", None)  # None from it: the text-only generator drew it
        images = custom(caption, seed, variation_seeds, VARIATION_STRENGTH) if callable(custom) else None
        if images is None:
            images = latent_variations(self.service, caption, seed, variation_seeds, VARIATION_STRENGTH)
        if images is None:  # no access to the latent: new seeds of the same caption
            seeds = [seed + 1 + i for i in range(n)]
            return [ShownImage(im, s, caption, prompt=prompt)
                    for s, im in zip(seeds, self._generate(caption, seeds).images)]
        return [ShownImage(im, seed, caption, variation=v, prompt=prompt, number=i)
                for i, (v, im) in enumerate(zip(variation_seeds, images), 1)]

    # -- colours and products

    def _excluded_families(self) -> set[str]:
        return {f for f in (colour_family(c) for c in self.state.exclude_colours) if f}

    def _family(self, image) -> str | None:
        describe = getattr(self.service, "describe_image", None)
        if callable(describe) and self.catalogue_ready:
            try:
                return colour_family(describe(image).get("baseColour"))
            except Exception:  # noqa: BLE001 - the heuristic below is a fine fallback
                log.exception("describe_image failed; using the colour heuristic")
        return image_colour_family(image)

    def _similar(self, caption, images, excluded, raise_errors: bool = False) -> tuple[list[dict], str | None]:
        if not (self.catalogue_ready and hasattr(self.service, "similar_products")):
            return [], None
        k = SIMILAR_K * (3 if self.state.exclude_attributes else 1) + 8
        try:
            found = self.service.similar_products(caption=caption, images=images, k=k)
        except Exception as exc:
            if raise_errors:
                raise
            log.exception("similar products failed")
            return [], f"(Similar products are unavailable: {exc}.)"
        kept = [p for p in found if colour_family(p.get("baseColour")) not in excluded]
        return without_attributes(kept, self.state.exclude_attributes, self.service.detect)[:SIMILAR_K], None

    def _missing_for_gender(self) -> Reply | None:
        """The reply when the catalogue has nothing of the item for the gender asked: one sentence and the
        nearest items it has for that gender (`self.offer`, taken by "yes"); None when it has some."""
        state, unavailable = self.state, getattr(self.service, "unavailable", None)
        if not (callable(unavailable) and state.article_type and state.gender):
            return None
        try:
            found = unavailable(state.article_type, state.gender)
        except Exception:  # noqa: BLE001 - drawing anyway beats failing the turn
            log.exception("the catalogue check for %s / %s failed", state.article_type, state.gender)
            return None
        if not found:
            return None
        nearest = [t.lower() for t in found.get("nearest") or []][:2]
        text = f"The catalogue has no {state.article_type.lower()} for {state.gender.lower()}"
        if nearest:
            self.offer = found["nearest"][0]
            text += f": {POSSESSIVE.get(state.gender, state.gender.lower())} {' or '.join(nearest)} instead?"
        else:
            text += ". Try another item or drop the gender."
        return Reply(text, "clarify", request=state.to_dict())


# ----------------------------------------------------------------------------------------------- uploads


@dataclass
class UploadResult:
    reply: Reply
    state: RequestState | None          # what the image shows (changed by the text), or None
    attributes: dict | None = None      # describe_image's answer: articleType, baseColour, caption, confidence


def analyse_upload(service, image, detection=None, seeds: list[int] | None = None,
                   excluded: set[str] = frozenset(), catalogue: bool = True,
                   catalogue_error: str | None = None, strength: float | None = None) -> UploadResult:
    """A reference image (+ optional change such as "in red") -> description, variants, similar products.

    `catalogue`: whether the image models are loaded (describe_image, variants and similar products
    need them); without them the answer says why instead.
    """
    seeds = seeds or _pick_seeds(4)
    describe = getattr(service, "describe_image", None)
    variants = getattr(service, "variants", None)
    if not catalogue or (not callable(describe) and not callable(variants)):
        why = f" ({catalogue_error})" if catalogue_error else " in this build"
        return UploadResult(Reply(f"I can't analyse photos right now: the image search models are not available"
                                  f"{why}. Describe what you want in words instead, e.g. {_quote(EXAMPLES[0])}.",
                                  "error"), None)
    text = detection.text if detection is not None else ""
    if callable(variants):
        from models.editing import NotEditable

        try:
            generated, described = variants(image, text=text, seeds=seeds, strength=strength)
        except NotEditable as exc:
            return UploadResult(Reply(f"I can't make variants of this photo: {exc}.", "error"), None)
        described = described or {}
        original = described.get("original") or described
        caption = generated.caption
        pairs = list(zip(generated.seeds, generated.images))
        regenerable = False
    else:
        original = described = describe(image)
        pairs, caption, regenerable = [], None, True
    seen = _state_from_description(original)
    state = _state_from_description(described)  # the service may already have applied the text
    if detection is not None:
        state.apply(detection)
        if detection.article_types:
            state.article_type = detection.article_types[0]
    changes = _differences(seen, state)
    if caption is None:  # no image-conditioned variants: draw the described (and changed) caption
        caption = state.caption()
        generated = service.generate(caption, seeds)
        pairs = list(zip(generated.seeds, generated.images))
    images = [ShownImage(im, s, caption, prompt=text or "uploaded image", regenerable=regenerable,
                         reference=None if regenerable else image) for s, im in pairs]
    if excluded:
        images = [im for im in images if image_colour_family(im.image) not in excluded] or images
    note_parts = [n for n in (_confidence_note(original.get("confidence")),) if n]
    if changes:
        note_parts.append("Changed " + ", ".join(changes) + ".")
    products: list[dict] = []
    try:
        if callable(getattr(service, "similar_to_image", None)):
            products = service.similar_to_image(image, text, k=SIMILAR_K + 8)
        elif hasattr(service, "similar_products"):
            products = service.similar_products(caption=caption if changes else None,
                                                images=[im.image for im in images] if changes else [image],
                                                k=SIMILAR_K + 8)
        products = [p for p in products if colour_family(p.get("baseColour")) not in excluded]
        products = without_attributes(products, state.exclude_attributes, service.detect)[:SIMILAR_K]
    except Exception as exc:  # noqa: BLE001 - the variants are still worth showing
        log.exception("similar products for an upload failed")
        note_parts.append(f"(Similar products are unavailable: {exc}.)")
    headline = "Variants of your photo:" if changes else "This looks like:"
    chips = state.chips() if changes else seen.chips()
    plain = f"{headline} " + " \u00b7 ".join(c.label for c in chips)
    reply = Reply(plain, "images", headline=headline, chips=chips, note=" ".join(note_parts) or None,
                  images=images, similar=products, caption=caption)
    return UploadResult(reply, state if not state.empty else None, original)


def without_attributes(products: list[dict], excluded: dict[str, list[str]], detect) -> list[dict]:
    """Products whose titles name an excluded attribute ("Printed" for "no print", read by the keyword
    detector `detect`) after all the others, each group in its order."""
    unwanted = {(name, v) for name, values in (excluded or {}).items() for v in values}
    if not unwanted:
        return products

    def carries(product) -> bool:
        found = detect(product.get("title") or "").attributes
        return any((name, v) in unwanted for name, values in found.items() for v in values)

    marks = [carries(p) for p in products]
    return [p for p, m in zip(products, marks) if not m] + [p for p, m in zip(products, marks) if m]


def _differences(before: RequestState, after: RequestState) -> list[str]:
    """What a change text did, in words: "item to dresses", "colour to red", "for women", ..."""
    out = []
    if after.article_type != before.article_type and after.article_type:
        out.append(f"item to {after.article_type.lower()}")
    if after.colours != before.colours and after.colours:
        out.append(f"colour to {' and '.join(c.lower() for c in after.colours)}")
    if after.gender != before.gender and after.gender:
        out.append(f"for {after.gender.lower()}")
    if after.usage and after.usage != before.usage:
        out.append(f"{after.usage.lower()} wear")
    out += [" ".join(values) for name, values in after.attributes.items() if before.attributes.get(name) != values]
    out += [f"no {c.lower()}" for c in after.exclude_colours if c not in before.exclude_colours]
    return out


def _state_from_description(info: dict) -> RequestState:
    colour = info.get("baseColour")
    return RequestState(article_type=info.get("articleType") or None, colours=[colour] if colour else [],
                        gender=info.get("gender") or None)


def _confidence_note(confidence) -> str | None:
    """describe_image's confidence: one number, or one per attribute ({"articleType": 0.8, ...})."""
    if isinstance(confidence, dict):
        names = {"articleType": "type", "baseColour": "colour", "gender": "gender"}
        parts = [f"{names[k]} {v:.0%}" for k, v in confidence.items()
                 if k in names and isinstance(v, (int, float)) and not math.isnan(v)]
        return f"(Sure of {', '.join(parts)}.)" if parts else None
    if isinstance(confidence, (int, float)) and not math.isnan(confidence):
        return f"({confidence:.0%} sure.)"
    return None


def latent_variations(service, caption: str, seed: int, variation_seeds: list[int],
                      strength: float = VARIATION_STRENGTH):
    """Images whose latent is `seed`'s, moved a little towards each variation seed's; None without access.

    z = sqrt(1 - a^2) * z(seed) + a * z(v) keeps z standard normal, so the images stay in distribution.
    z(seed) is the latent the generator itself used for that seed (its truncation, and its redraw of a
    seed whose first draw is broken), so strength 0 gives exactly the image shown for the seed.
    """
    generator = getattr(service, "generator", None)
    encoder = getattr(service, "encoder", None)
    net = getattr(generator, "net", None)
    if net is None or encoder is None or not hasattr(generator, "config"):
        return None
    import torch

    from models.data import tensor_to_images

    device = getattr(generator, "device", torch.device("cpu"))
    text = encoder.encode([caption])[0].reshape(1, -1).to(device)
    with torch.inference_mode():
        base = _seed_latent(generator, net, text, seed)
        moves = _noise(generator, variation_seeds)
        z = math.sqrt(1 - strength**2) * base + strength * moves
        return tensor_to_images(net(z, text.expand(len(variation_seeds), -1)))


def _noise(generator, seeds: list[int], attempt: int = 0):
    """The generator's own (truncated) noise for seeds; plain seed noise for generators without `noise()`."""
    if hasattr(generator, "noise"):
        return generator.noise(seeds, attempt) if attempt else generator.noise(seeds)
    from models.sampling import seed_noise

    return seed_noise(seeds, generator.config.z_dim).to(getattr(generator, "device", "cpu")) * float(
        getattr(generator, "truncation", 1.0))


def _seed_latent(generator, net, text, seed: int):
    """The z that `generator.generate` draws `seed` with, following its broken-draw redraws if it has them."""
    import models.generate as gen

    z = _noise(generator, [seed])
    redraws, limit = getattr(gen, "MAX_REDRAWS", 0), getattr(gen, "OUTLIER_DISTANCE", None)
    if not redraws or limit is None:
        return z
    import torch

    typical = net(torch.zeros(1, generator.config.z_dim, device=z.device), text)
    for attempt in range(1, redraws + 1):
        if (net(z, text) - typical).abs().mean() <= limit:
            break
        z = _noise(generator, [seed], attempt)
    return z


def _dropped_note(dropped: int, excluded: list[str]) -> str | None:
    if not dropped:
        return None
    colours = " or ".join(c.lower() for c in excluded)
    return f"Left out {dropped} image{'s' if dropped > 1 else ''} that looked {colours}."


def _quote(text: str) -> str:
    return f"\u201c{text}\u201d"
