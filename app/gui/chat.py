"""The Chat tab: a transcript of bubbles, keyword chips and inline images, and the message box.

The transcript is a read-only `tk.Text` (as in Thonny's chat) in which every message is one embedded
frame on its own line: appending a message adds one line and never re-renders the history, Tk only
maps the embedded frames that are on screen, and there is no 32k-pixel limit of a scrolled canvas.
Image sets beyond the newest `MAX_LIVE_SETS` are folded, which releases their PhotoImages, so memory stays
flat in long conversations. A folded set, like a turn restored from the history, shows placeholders and is
drawn again from its seeds (on the worker) when it scrolls into view, not before: `ChatView.defer` runs
such work for the bubbles on screen only.

The view knows nothing about models: it calls the callbacks it was given (`ChatActions`) and renders
`app.chat.bot.Reply` objects (or their history records).
"""
from __future__ import annotations

import logging
import tkinter as tk
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from tkinter import ttk

from app.chat.history import can_redraw
from app.gui import (
    BORDER,
    BOT_BG,
    CHIP_COLOURS,
    DISPLAY_SIZE,
    ERROR_BG,
    ERROR_FG,
    MUTED,
    SURFACE,
    SWATCHES,
    TEXT,
    THUMB_SIZE,
    USER_BG,
    USER_FG,
    to_photo,
)

log = logging.getLogger(__name__)

MAX_LIVE_SETS = 40      # image sets kept drawn; older ones are folded (drawn again when shown)
IMAGES_PER_ROW = 4
LAZY_MS = 120           # after the view stops moving this long, what came into view is drawn
TILE_WIDTH = THUMB_SIZE + 12  # a similar product's tile: its text wraps to this many pixels
TITLE_LINES = 4         # a product title longer than this many lines ends in an ellipsis
WHEEL_TAG = "ChatWheel"  # bindtag added to every widget inside the transcript: the wheel scrolls it
HINT = "Enter to send \u00b7 Shift+Enter for a new line \u00b7 \u2191 recalls your last message"


@dataclass
class ChatActions:
    """What the buttons in the chat do; the window supplies these."""

    send: Callable[[str], None]
    attach: Callable[[], None]
    save: Callable[[object], None]            # a ShownImage
    more_like: Callable[[object], None]       # a ShownImage
    similar: Callable[[object], None]         # a ShownImage
    redraw: Callable[..., object]             # (Bubble, history record, auto=False) -> request id: draw again
    cancel: Callable[[int], bool] = lambda request_id: False  # a redraw that is not needed any more
    photo: Callable[[str], object] = lambda name: None        # a kept photo's name -> PIL image (or None)


def attachment_text(text: str, name: str) -> str:
    """The user's bubble for an attached photo, live and restored alike."""
    return f"{text}\n(attached {name})" if text else f"(attached {name})"


def _font(widget: tk.Misc, size: int | None = None, weight: str = "normal") -> tuple:
    from tkinter import font as tkfont

    base = tkfont.nametofont("TkDefaultFont")
    return (base.actual("family"), size or base.actual("size"), weight)


class Bubble(tk.Frame):
    """One message. Bot bubbles are filled later (`show_reply`), in place: the history is not redrawn."""

    def __init__(self, view: ChatView, role: str):
        bg = USER_BG if role == "user" else BOT_BG
        super().__init__(view.log, bg=bg, padx=12, pady=8)
        self.view = view
        self.role = role
        self.bg = bg
        self.photos: list = []          # PhotoImages of this bubble (Tk keeps no reference)
        self.cards: list[ImageCard] = []
        self.strip: ProductStrip | None = None
        self.grid_frame: tk.Frame | None = None
        self.record: dict | None = None
        self.done = role == "user"
        self.redraw_id: int | None = None  # the request drawing this bubble's set again, if any
        self.redraw_started = False
        self.words: tk.Label | None = None  # where a language model's words come in while it writes

    # -- content

    def clear(self) -> None:
        for child in self.winfo_children():
            child.destroy()
        self.photos.clear()
        self.cards.clear()
        self.strip = None
        self.grid_frame = None
        self.words = None
        self.configure(bg=BOT_BG)
        self.bg = BOT_BG

    def add_text(self, text: str, fg: str | None = None, muted: bool = False, bold: bool = False) -> tk.Label:
        label = tk.Label(self, text=text, bg=self.bg, fg=MUTED if muted else (fg or TEXT), justify="left",
                         anchor="w", wraplength=self.view.wrap_width(),
                         font=_font(self, 9 if muted else None, "bold" if bold else "normal"))
        label.pack(anchor="w", fill="x")
        return label

    def add_chips(self, headline: str | None, chips: list) -> tk.Frame:
        row = tk.Frame(self, bg=self.bg)
        row.pack(anchor="w", pady=(0, 4))
        if headline:
            tk.Label(row, text=headline, bg=self.bg, fg=TEXT, font=_font(self, None, "bold")).pack(side="left",
                                                                                                 padx=(0, 6))
        for chip in chips:
            label, kind = (chip.label, chip.kind) if hasattr(chip, "label") else (chip[0], chip[1])
            Chip(row, label, kind).pack(side="left", padx=2)
        return row

    def show_reply(self, reply, record: dict | None = None) -> None:
        """Render an app.chat.bot.Reply into this (pending) bubble; `record`: its history record, if the
        caller has one (reply.record() otherwise)."""
        self.clear()
        if reply.kind == "error":
            self.configure(bg=ERROR_BG)
            self.bg = ERROR_BG
        if reply.chips:
            self.add_chips(reply.headline, reply.chips)
            if reply.kind == "images" and (getattr(reply, "written", False) or (record or {}).get("written")):
                self.add_text(reply.text)  # a language model's words (app.chat.llm)
            if reply.kind == "clarify" or reply.kind == "error":
                self.add_text(reply.text if reply.kind == "clarify" else (reply.note or reply.text),
                              fg=ERROR_FG if reply.kind == "error" else None)
            elif reply.note:
                self.add_text(reply.note, muted=True)
        elif reply.headline and reply.kind == "images":
            self.add_text(reply.headline, bold=True)
            if reply.note:
                self.add_text(reply.note, muted=True)
        else:
            self.add_text(reply.text, fg=ERROR_FG if reply.kind == "error" else None)
            if reply.note:
                self.add_text(reply.note, muted=True)
        if reply.images:
            grid = self.grid_frame = tk.Frame(self, bg=self.bg)
            grid.pack(anchor="w", pady=(6, 0))
            for i, item in enumerate(reply.images):
                card = ImageCard(grid, item, self.view.card_buttons(item))
                card.grid(row=i // IMAGES_PER_ROW, column=i % IMAGES_PER_ROW, padx=(0, 8), pady=(0, 8), sticky="n")
                self.cards.append(card)
            self.view._track_live(self)
        if reply.similar:
            self.strip = ProductStrip(self, reply.similar, bg=self.bg)
            self.strip.pack(anchor="w", fill="x", pady=(2, 0))
            if not reply.images:
                self.view._track_live(self)
        self.record = record if record is not None else reply.record()
        self.done = True
        self.view._bubble_changed(self)

    def stream(self, part) -> None:
        """A reply a language model is writing (app.chat.llm, progress events): first the bot's own reply, whose
        chips, images and products show at once, with the words to come under the chips; then all the words so
        far, each time. show_reply draws the final reply."""
        from app.chat.llm import Words

        if not isinstance(part, Words):
            if part.chips or part.images or part.similar:
                self.show_reply(part)
                self.words = self.add_text("\u2026")
                if part.chips:
                    self.words.pack_configure(after=self.winfo_children()[0])  # under the chips row
                self.done = False
            return
        if self.words is None:  # a reply of words only: they are the bubble
            self.clear()
            self.words = self.add_text("")
        self.words.configure(text=part.text)
        self.view._bubble_changed(self)

    def show_error(self, message: str) -> None:
        self.clear()
        self.configure(bg=ERROR_BG)
        self.bg = ERROR_BG
        self.add_text(message, fg=ERROR_FG)
        self.done = True
        self.view._bubble_changed(self)

    def show_record(self, record: dict, problem: str | None = None, retry: bool = True) -> None:
        """A bot message from the history (or a folded one): text and chips; its images as placeholders,
        drawn again from their seeds once it is on screen. `problem`: why they are not drawn (shown instead;
        with Show again when `retry`)."""
        self._show_stored(record)
        if problem:
            self.add_text(problem, muted=True)
            self._add_folded_row(record, button=retry and can_redraw(record))
        elif can_redraw(record):
            self._add_placeholders(record, "")
            self.view.defer(self, lambda: self.view.actions.redraw(self, record, auto=True), models=True)
        else:
            self._add_folded_row(record, button=False)
        self.done = True
        self.view._bubble_changed(self)

    def drawing(self, record: dict) -> None:
        """The stored set is being drawn again: placeholders where the images will be."""
        self._show_stored(record)
        self._add_placeholders(record, "Drawing again \u2026")
        self.done = False
        self.view._bubble_changed(self)

    def _show_stored(self, record: dict) -> None:
        self.view.undefer(self)
        self.clear()
        if record.get("kind") == "error":
            self.configure(bg=ERROR_BG)
            self.bg = ERROR_BG
        chips = record.get("chips") or []
        if chips:
            self.add_chips(record.get("headline"), chips)
            if record.get("written") and record.get("kind") == "images":
                self.add_text(record.get("text", ""))  # a language model's words
            if record.get("kind") in ("clarify", "error"):
                self.add_text(record.get("text", ""))
            elif record.get("note"):
                self.add_text(record["note"], muted=True)
        elif record.get("headline") and record.get("kind") == "images":
            self.add_text(record["headline"], bold=True)
            if record.get("note"):
                self.add_text(record["note"], muted=True)
        else:
            self.add_text(record.get("text", ""))
            if record.get("note"):
                self.add_text(record["note"], muted=True)
        self.record = record

    def fold(self) -> None:
        """Drop the drawn images of an old set (memory); it is drawn again when it is shown again."""
        self.strip = None
        if self.record:
            self.show_record(self.record)
        else:
            self.clear()

    def _add_placeholders(self, record: dict, status: str) -> None:
        """One empty tile per stored image, the size of an ImageCard, so the layout barely moves when the
        images come; the summary row (and Show again) under them."""
        images = record.get("images") or []
        if images:
            grid = tk.Frame(self, bg=self.bg)
            grid.pack(anchor="w", pady=(6, 0))
            for i, item in enumerate(images):
                tile = tk.Frame(grid, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER,
                                width=DISPLAY_SIZE + 38, height=DISPLAY_SIZE + 55)  # an ImageCard's size
                tile.pack_propagate(False)
                tile.grid(row=i // IMAGES_PER_ROW, column=i % IMAGES_PER_ROW, padx=(0, 8), pady=(0, 8), sticky="n")
                tk.Label(tile, text=f"{_image_label(item)}\n{status}" if status else _image_label(item), bg=SURFACE,
                         fg=MUTED, font=_font(tile, 9)).pack(expand=True)
        self._add_folded_row(record, button=not status)

    def _add_folded_row(self, record: dict, button: bool = True) -> None:
        images = record.get("images") or []
        products = record.get("similar") or []
        if not images and not products:
            return
        row = tk.Frame(self, bg=self.bg)
        row.pack(anchor="w", pady=(4, 0))
        parts = []
        if images:
            seeds = ", ".join(str(im.get("seed")) for im in images[:8])
            parts.append(f"{len(images)} image{'s' if len(images) > 1 else ''} (seeds {seeds})")
        if products:
            parts.append(f"{len(products)} similar products")
        tk.Label(row, text=" \u00b7 ".join(parts), bg=self.bg, fg=MUTED, font=_font(self, 9)).pack(side="left")
        if button and can_redraw(record):
            ttk.Button(row, text="Show again", style="Card.TButton",
                       command=lambda: self.view.actions.redraw(self, record)).pack(side="left", padx=8)
        self.view._wheel_bind(row)

    def destroy(self) -> None:
        # Drop image references here, on the main thread: a PhotoImage left in a reference cycle
        # would be freed by whichever thread next runs the garbage collector, and Tk is single-threaded.
        self.view.undefer(self)
        self.photos.clear()
        self.cards.clear()
        self.strip = None
        self.grid_frame = None
        super().destroy()

    def pending(self, text: str) -> None:
        self.clear()
        self.add_text(text, muted=True)
        self.done = False
        self.view._bubble_changed(self)


def _image_label(item: dict) -> str:
    """ShownImage.label for a stored image: "seed 12", "variation 2 of seed 12"."""
    if item.get("variation") is None:
        return f"seed {item.get('seed')}"
    return f"variation {item['number']} of seed {item.get('seed')}" if item.get("number") else \
        f"variation of seed {item.get('seed')}"


class Chip(tk.Frame):
    """A keyword chip: coloured by kind, with a colour dot for colours."""

    def __init__(self, master, label: str, kind: str):
        bg, fg = CHIP_COLOURS.get(kind, ("#e5e7eb", TEXT))
        super().__init__(master, bg=bg, padx=7, pady=1)
        self.label = label
        self.kind = kind
        swatch = SWATCHES.get(label.removeprefix("not ")) if kind in ("colour", "not_colour") else None
        if swatch:
            dot = tk.Canvas(self, width=10, height=10, bg=bg, highlightthickness=0)
            dot.create_oval(1, 1, 9, 9, fill=swatch, outline="#888888")
            if kind == "not_colour":
                dot.create_line(0, 10, 10, 0, fill="#991b1b", width=2)
            dot.pack(side="left", padx=(0, 4))
        tk.Label(self, text=label, bg=bg, fg=fg, font=_font(self, 9, "bold")).pack(side="left")


class ImageCard(tk.Frame):
    """A generated image (3x, crisp) with its seed and action buttons (Save, More like this, Similar)."""

    def __init__(self, master, item, buttons: list[tuple[str, Callable]] = (), size: int = DISPLAY_SIZE):
        super().__init__(master, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER, padx=4, pady=4)
        self.item = item
        self.photo = to_photo(item.image, size, master=self)
        self.image_label = tk.Label(self, image=self.photo, bg=SURFACE, bd=0)
        self.image_label.pack()
        tk.Label(self, text=item.label, bg=SURFACE, fg=MUTED, font=_font(self, 9)).pack(anchor="w", pady=(2, 2))
        self.buttons: dict[str, ttk.Button] = {}
        if buttons:
            row = tk.Frame(self, bg=SURFACE)
            row.pack(fill="x")
            for text, fn in buttons:
                button = ttk.Button(row, text=text, style="Card.TButton", command=lambda f=fn: f(self.item))
                button.pack(side="left", padx=(0, 3))
                self.buttons[text] = button

    def destroy(self) -> None:
        self.photo = None  # released on the main thread (see Bubble.destroy)
        self.buttons.clear()
        super().destroy()


class ProductStrip(tk.Frame):
    """'Similar products': catalogue thumbnails with their title, colour and type, in one row.

    Every tile is TILE_WIDTH wide; its text wraps to that width (the title to at most TITLE_LINES lines),
    and the tiles of a row grow to the tallest one, so no label is ever clipped by its tile.
    """

    def __init__(self, master, products: list[dict], bg: str = BOT_BG, title: str = "Similar products"):
        super().__init__(master, bg=bg)
        self.products = products
        self.photos: list = []
        tk.Label(self, text=title, bg=bg, fg=TEXT, font=_font(self, 9, "bold")).pack(anchor="w", pady=(2, 4))
        row = tk.Frame(self, bg=bg)
        row.pack(anchor="w")
        self.tiles: list[tk.Frame] = []
        self.labels: list[tuple[tk.Label, tk.Label]] = []  # (title, colour and type) per tile
        for product in products:
            tile = tk.Frame(row, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER, padx=4, pady=4)
            tile.pack(side="left", fill="y", padx=(0, 6))
            tk.Frame(tile, bg=SURFACE, width=TILE_WIDTH, height=1).pack()  # sets the tile's width
            thumb = product.get("thumbnail")
            if thumb is not None:
                photo = to_photo(thumb, THUMB_SIZE, master=tile, crisp=False)
                self.photos.append(photo)
                tk.Label(tile, image=photo, bg=SURFACE, height=THUMB_SIZE).pack()
            title_font = _font(tile, 8)
            title_text = fit_lines(tile, str(product.get("title") or product.get("id") or ""), title_font,
                                   TILE_WIDTH, TITLE_LINES)
            name = tk.Label(tile, text=title_text, bg=SURFACE, fg=TEXT, font=title_font, justify="left", anchor="nw",
                            bd=0, padx=0)
            name.pack(anchor="w", fill="x")
            detail_font = _font(tile, 7)
            parts = [str(product[k]) for k in ("baseColour", "articleType") if product.get(k)]
            detail = tk.Label(tile, text=wrap_parts(tile, parts, detail_font, TILE_WIDTH), bg=SURFACE, fg=MUTED,
                              font=detail_font, justify="left", anchor="w", bd=0, padx=0)
            detail.pack(anchor="w")
            self.tiles.append(tile)
            self.labels.append((name, detail))

    def destroy(self) -> None:
        self.photos.clear()  # released on the main thread (see Bubble.destroy)
        self.tiles.clear()
        self.labels.clear()
        super().destroy()


def _measure(widget: tk.Misc, font: tuple, text: str) -> int:
    return int(widget.tk.call("font", "measure", font, text))


def fit_lines(widget: tk.Misc, text: str, font: tuple, width: int, lines: int | None = 2) -> str:
    """Word-wrap `text` into lines of at most `width` pixels: at most `lines` of them, the last ending in
    an ellipsis if the text goes on (`lines=None`: as many as it takes, nothing cut). A word wider than
    `width` is broken where it reaches the edge."""
    out: list[str] = []
    words = text.split()
    while words and (lines is None or len(out) < lines):
        line = words.pop(0)
        while _measure(widget, font, line) > width and len(line) > 1:  # one word wider than the line
            cut = len(line) - 1
            while cut > 1 and _measure(widget, font, line[:cut]) > width:
                cut -= 1
            words.insert(0, line[cut:])
            line = line[:cut]
        while words and _measure(widget, font, f"{line} {words[0]}") <= width:
            line = f"{line} {words.pop(0)}"
        out.append(line)
    if words and out:  # more text than lines: the last line says so
        line = out[-1]
        while line and _measure(widget, font, line + "\u2026") > width:
            line = line[:-1]
        out[-1] = line.rstrip() + "\u2026"
    return "\n".join(out)


def wrap_parts(widget: tk.Misc, parts: list[str], font: tuple, width: int, separator: str = " \u00b7 ") -> str:
    """Short labels ("Navy Blue", "Casual Shoes") on one line when they fit in `width` pixels, else one per
    line, each wrapped: never cut."""
    joined = separator.join(parts)
    if _measure(widget, font, joined) <= width:
        return joined
    return "\n".join(fit_lines(widget, part, font, width, None) for part in parts)


class ChatView(ttk.Frame):
    def __init__(self, master, actions: ChatActions):
        super().__init__(master)
        self.actions = actions
        self.bubbles: list[Bubble] = []
        self._live: deque[Bubble] = deque()
        self._sent: list[str] = []
        self._recall_index: int | None = None
        self._scroll_id = None
        self._stick = True  # follow the newest message until the user scrolls up
        self._keep: Bubble | None = None  # a bubble drawn again at the user's request: the view stays on it
        self._deferred: dict[Bubble, tuple[Callable[[], object], bool]] = {}  # see defer()
        self._lazy_id = None
        self.models_ready = False  # set by the window once the models are loaded: deferred redraws may run
        self.similar_enabled = True  # the window turns it off when there is no catalogue
        self._build()

    # -- layout

    def _build(self) -> None:
        body = ttk.Frame(self, style="Surface.TFrame")
        body.pack(fill="both", expand=True)
        self.log = tk.Text(body, wrap="none", state="disabled", bg=SURFACE, bd=0, highlightthickness=0,
                           padx=14, pady=10, cursor="arrow", takefocus=False, spacing1=4, spacing3=4)
        self.scrollbar = ttk.Scrollbar(body, orient="vertical", command=self._on_scrollbar)
        self.log.configure(yscrollcommand=self._on_yscroll)
        self.scrollbar.pack(side="right", fill="y")
        self.log.pack(side="left", fill="both", expand=True)
        self.log.tag_configure("user", justify="right")
        self.log.tag_configure("bot", justify="left")
        self.log.tag_configure("notice", justify="center", foreground=MUTED)
        self.log.bind_class(WHEEL_TAG, "<MouseWheel>", self._on_wheel)
        self.log.bind_class(WHEEL_TAG, "<Button-4>", self._on_wheel)
        self.log.bind_class(WHEEL_TAG, "<Button-5>", self._on_wheel)
        self.log.bindtags((WHEEL_TAG, *self.log.bindtags()))
        self.log.bind("<Configure>", self._on_resize)

        bar = ttk.Frame(self, padding=(10, 8, 10, 4))
        bar.pack(fill="x")
        box = tk.Frame(bar, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER,
                       highlightcolor="#7aa2f7")
        box.pack(side="left", fill="x", expand=True)
        self.input = tk.Text(box, height=3, wrap="word", bd=0, bg=SURFACE, fg=TEXT, padx=8, pady=6,
                             insertbackground=TEXT, undo=True, highlightthickness=0)
        self.input.pack(fill="both", expand=True)
        self.input.bind("<Return>", self._on_return)
        self.input.bind("<KP_Enter>", self._on_return)
        self.input.bind("<Shift-Return>", self._on_shift_return)
        self.input.bind("<Up>", self._on_up)
        self.input.bind("<Down>", self._on_down)
        buttons = ttk.Frame(bar)
        buttons.pack(side="left", padx=(8, 0), fill="y")
        self.send_button = ttk.Button(buttons, text="Send", style="Accent.TButton", command=self.send)
        self.send_button.pack(fill="x")
        self.attach_button = ttk.Button(buttons, text="Attach\u2026", command=self.actions.attach)
        self.attach_button.pack(fill="x", pady=(4, 0))
        ttk.Label(self, text=HINT, style="Muted.TLabel", padding=(12, 0, 12, 6)).pack(anchor="w")

    def card_buttons(self, item) -> list[tuple[str, Callable]]:
        buttons = [("Save", self.actions.save)]
        if getattr(item, "regenerable", True) or getattr(item, "reference", None) is not None:
            buttons.append(("More like this", self.actions.more_like))
        if self.similar_enabled:
            buttons.append(("Similar", self.actions.similar))
        return buttons

    def wrap_width(self) -> int:
        width = self.log.winfo_width()
        if width < 100:
            width = 1000
        return max(280, min(760, int(width * 0.68)))

    # -- input

    def send(self) -> None:
        text = self.input.get("1.0", "end-1c").strip()
        if not text:
            return
        self.input.delete("1.0", "end")
        self._sent.append(text)
        self._recall_index = None
        self.actions.send(text)

    def _on_return(self, event) -> str:
        self.send()
        return "break"

    def _on_shift_return(self, event) -> str:
        self.input.insert("insert", "\n")
        self.input.see("insert")
        return "break"

    def _on_up(self, event):
        current = self.input.get("1.0", "end-1c")
        recalled = self._recall_index is not None and current == self._sent[self._recall_index]
        if not self._sent or (current.strip() and not recalled):
            return None  # normal cursor movement in a message being typed
        self._recall_index = len(self._sent) - 1 if self._recall_index is None else max(0, self._recall_index - 1)
        self._set_input(self._sent[self._recall_index])
        return "break"

    def _on_down(self, event):
        if self._recall_index is None or self.input.get("1.0", "end-1c") != self._sent[self._recall_index]:
            return None
        self._recall_index += 1
        if self._recall_index >= len(self._sent):
            self._recall_index = None
            self._set_input("")
        else:
            self._set_input(self._sent[self._recall_index])
        return "break"

    def _set_input(self, text: str) -> None:
        self.input.delete("1.0", "end")
        self.input.insert("1.0", text)
        self.input.mark_set("insert", "end-1c")

    def remember_sent(self, texts: list[str]) -> None:
        """Restored history: Up recalls messages of the last session too."""
        self._sent = list(texts)

    # -- transcript

    def _append(self, widget: tk.Widget, side: str) -> None:
        self.log.configure(state="normal")
        start = self.log.index("end-1c")
        self.log.window_create("end-1c", window=widget, align="top")
        self.log.insert("end-1c", "\n")
        self.log.tag_add(side, start, "end-1c")
        self.log.configure(state="disabled")
        self._wheel_bind(widget)
        self.scroll_to_end()

    def add_user(self, text: str, image=None) -> Bubble:
        bubble = Bubble(self, "user")
        if image is not None:
            photo = to_photo(image, 128, master=bubble, crisp=False)
            bubble.photos.append(photo)
            tk.Label(bubble, image=photo, bg=USER_BG).pack(anchor="e", pady=(0, 4))
        if text:
            tk.Label(bubble, text=shown_text(text), bg=USER_BG, fg=USER_FG, justify="left",
                     wraplength=self.wrap_width(), anchor="w").pack(anchor="e")
        self.bubbles.append(bubble)
        self._append(bubble, "user")
        return bubble

    def add_pending(self, text: str = "Thinking \u2026") -> Bubble:
        bubble = Bubble(self, "bot")
        bubble.pending(text)
        self.bubbles.append(bubble)
        self._append(bubble, "bot")
        return bubble

    def add_bot_text(self, text: str, error: bool = False) -> Bubble:
        bubble = Bubble(self, "bot")
        if error:
            bubble.show_error(text)
        else:
            bubble.add_text(text)
            bubble.done = True
        self.bubbles.append(bubble)
        self._append(bubble, "bot")
        return bubble

    def add_reply(self, reply) -> Bubble:
        bubble = self.add_pending("")
        bubble.show_reply(reply)
        return bubble

    def add_record(self, record: dict) -> Bubble:
        if record.get("role") == "user":
            text = record.get("text", "")
            bubble = self.add_user(attachment_text(text, record["attachment"]) if record.get("attachment") else text)
            if record.get("photo"):
                self.defer(bubble, lambda: self._show_kept_photo(bubble, record["photo"]))
            return bubble
        bubble = Bubble(self, "bot")
        bubble.show_record(record)
        self.bubbles.append(bubble)
        self._append(bubble, "bot")
        return bubble

    def _show_kept_photo(self, bubble: Bubble, name: str) -> None:
        """A restored attachment's thumbnail, from the copy the storage kept."""
        image = self.actions.photo(name)
        if image is None or not bubble.winfo_exists():
            return
        photo = to_photo(image, 128, master=bubble, crisp=False)
        bubble.photos.append(photo)
        label = tk.Label(bubble, image=photo, bg=USER_BG)
        label.pack(anchor="e", pady=(4, 0))  # under the text, as when it was attached
        self._wheel_bind(label)

    def add_notice(self, text: str) -> None:
        self.log.configure(state="normal")
        self.log.insert("end-1c", text + "\n", ("notice",))
        self.log.configure(state="disabled")
        self.scroll_to_end()

    def clear(self) -> None:
        self.log.configure(state="normal")
        self.log.delete("1.0", "end")
        self.log.configure(state="disabled")
        for bubble in self.bubbles:
            bubble.destroy()
        self.bubbles.clear()
        self._live.clear()
        self._deferred.clear()
        self._keep = None

    @property
    def cards(self) -> list[ImageCard]:
        return [card for bubble in self.bubbles for card in bubble.cards]

    def _track_live(self, bubble: Bubble) -> None:
        if bubble in self._live:
            return
        self._live.append(bubble)
        while len(self._live) > MAX_LIVE_SETS:
            self._live.popleft().fold()

    def _bubble_changed(self, bubble: Bubble) -> None:
        """A bubble was filled or drawn again: a new answer (the last bubble) scrolls into view; one drawn again
        at the user's request stays in view; any other leaves the view where it is."""
        self._wheel_bind(bubble)
        if bubble is self._keep:
            self._show_soon(bubble)
            if bubble.done:
                self._keep = None
        elif self.bubbles and bubble is self.bubbles[-1]:
            self.scroll_to_end()
        self._schedule_lazy()

    def keep_in_view(self, bubble: Bubble) -> None:
        """The user asked to draw this bubble again: keep the view on it while it changes size."""
        self._keep = bubble
        self._stick = False

    def _show_soon(self, bubble: Bubble) -> None:
        self.after(15, lambda: self._show_bubble(bubble))

    def _show_bubble(self, bubble: Bubble) -> None:
        """Scroll as little as needed to show the bubble: all of it if it fits, else its top."""
        if not bubble.winfo_exists():
            return
        self.log.tk.call(self.log._w, "sync")
        info = self.log.dlineinfo(str(bubble))
        height = self.log.winfo_height()
        if not info or info[1] < 0:
            self.log.yview(str(bubble))
        elif info[1] + info[3] > height:
            self.log.yview_scroll(min(info[1] + info[3] - height, info[1]), "pixels")
        self._stick = self.log.yview()[1] >= 0.999

    # -- work for what is on screen

    def defer(self, bubble: Bubble, action: Callable[[], object], models: bool = False) -> None:
        """Run `action` once `bubble` is on screen (and, with `models`, once the models are loaded)."""
        self._deferred[bubble] = (action, models)
        self._schedule_lazy()

    def undefer(self, bubble: Bubble) -> None:
        self._deferred.pop(bubble, None)

    def set_models_ready(self, ready: bool = True) -> None:
        self.models_ready = ready
        self._schedule_lazy()

    def _schedule_lazy(self) -> None:
        if self._lazy_id is not None:
            self.after_cancel(self._lazy_id)
        self._lazy_id = self.after(LAZY_MS, self._run_lazy)

    def _run_lazy(self) -> None:
        """Start what the bubbles now on screen wait for; cancel redraws of bubbles that left the screen
        before their turn came (they wait again)."""
        self._lazy_id = None
        waiting = [b for b in self.bubbles[-2 * MAX_LIVE_SETS:] if b.redraw_id is not None and not b.redraw_started]
        if not self._deferred and not waiting:
            return
        self.log.tk.call(self.log._w, "sync")
        for bubble, (action, models) in list(self._deferred.items()):
            if (self.models_ready or not models) and self.on_screen(bubble):
                del self._deferred[bubble]
                action()
        for bubble in waiting:
            if not self.on_screen(bubble) and self.actions.cancel(bubble.redraw_id):
                bubble.redraw_id = None
                bubble.show_record(bubble.record)  # waits again, until it is on screen

    def on_screen(self, bubble: Bubble) -> bool:
        """Whether any of the bubble is in the visible part of the transcript."""
        try:
            return bubble.winfo_exists() and bool(self.log.dlineinfo(str(bubble)))
        except tk.TclError:
            return False

    def _wheel_bind(self, widget: tk.Misc) -> None:
        stack = [widget]
        while stack:
            w = stack.pop()
            tags = w.bindtags()
            if WHEEL_TAG not in tags:
                w.bindtags((WHEEL_TAG, *tags))
            stack.extend(w.winfo_children())

    def _on_wheel(self, event) -> str:
        up = getattr(event, "num", None) == 4 or getattr(event, "delta", 0) > 0
        self.log.yview_scroll(-60 if up else 60, "pixels")
        self._user_scrolled(not up and self.log.yview()[1] >= 0.999)
        return "break"

    def _on_scrollbar(self, *args) -> None:
        self.log.yview(*args)
        self._user_scrolled(self.log.yview()[1] >= 0.999)

    def _user_scrolled(self, at_end: bool) -> None:
        """The user moved the view: it follows the newest message only if they left it at the end, and a
        scroll to the end still pending (an answer that just came) no longer happens."""
        self._stick = at_end
        self._keep = None
        if not at_end and self._scroll_id is not None:
            self.after_cancel(self._scroll_id)
            self._scroll_id = None

    def _on_yscroll(self, first, last) -> None:
        """The view or the content's height changed; stay on the newest message if we were there."""
        self.scrollbar.set(first, last)
        self._schedule_lazy()
        if self._stick and float(last) < 0.999 and self._scroll_id is None:
            self._scroll_id = self.after(15, self._scroll_now)

    def scroll_to_end(self) -> None:
        """Show the newest message once its size is known (after the pending geometry updates)."""
        self._stick = True
        self._keep = None
        if self._scroll_id is not None:
            self.after_cancel(self._scroll_id)
        self._scroll_id = self.after(15, self._scroll_now)

    def _scroll_now(self) -> None:
        self._scroll_id = None
        # Tk measures embedded windows lazily: bring the line heights up to date, then go to the end.
        self.log.tk.call(self.log._w, "sync")
        self.log.yview_moveto(1.0)

    def _on_resize(self, event) -> None:
        width = self.wrap_width()
        for bubble in self.bubbles[-200:]:  # the rest re-wrap if they are shown again
            for child in bubble.winfo_children():
                if isinstance(child, tk.Label) and child.cget("wraplength"):
                    child.configure(wraplength=width)

    def destroy(self) -> None:
        for after_id in (self._scroll_id, self._lazy_id):
            if after_id is not None:
                self.after_cancel(after_id)
        self._scroll_id = self._lazy_id = None
        self._deferred.clear()
        super().destroy()


SHOWN_CHARACTERS = 600  # a longer message is shown cut (it is sent and kept whole)


def shown_text(text: str) -> str:
    """A message as its bubble shows it: whole up to SHOWN_CHARACTERS, else its start and how much more."""
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS].rstrip()} \u2026 ({len(text) - SHOWN_CHARACTERS:,} more characters)"
