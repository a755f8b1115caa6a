"""The Upload tab: a reference photo (+ an optional change such as "in red") -> variants and similar products.

The tab only shows things; the window runs the work on the worker thread (`UploadActions`):
opening the file safely, describing it, drawing variants, retrieving products. A new "Generate"
replaces the one still running (superseded on the worker), and only the newest result is shown.
"""
from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import ttk

from app.gui import BORDER, ERROR_FG, MUTED, SURFACE, to_photo
from app.gui.chat import Chip, ImageCard, ProductStrip, _font

PREVIEW_SIZE = 200
DEFAULT_STRENGTH = 0.7  # the slider's start: models.editing.DEFAULT_STRENGTH (not imported: that is torch)
VARIANTS_PER_ROW = 4  # beside the photo, four 2x cards fit the default window, with the products below
CARD_SIZE = 128  # px: the photo and its variants at 2x
CHANGE_HINT = "Optional change, e.g. \u201cin red\u201d, \u201cwith long sleeves\u201d, \u201cfor women\u201d"


@dataclass
class UploadActions:
    choose: Callable[[], None]                  # pick a file, then the window calls `open_path`
    open_path: Callable[[str], None]            # open + describe on the worker
    generate: Callable[[object, str, float], None]  # (PIL image, change text, strength 0..1)
    save: Callable[[object], None]              # a ShownImage


class UploadTab(ttk.Frame):
    def __init__(self, master, actions: UploadActions):
        super().__init__(master, padding=14)
        self.actions = actions
        self.image = None            # the decoded reference (PIL RGB)
        self.path: str | None = None
        self.cards: list[ImageCard] = []
        self.strip: ProductStrip | None = None
        self._preview_photo = self._reference_photo = None
        self._build()

    def _build(self) -> None:
        left = ttk.Frame(self)
        left.pack(side="left", fill="y", padx=(0, 16))
        ttk.Label(left, text="Reference image", style="Title.TLabel").pack(anchor="w")
        ttk.Label(left, text="A photo of one clothing item or accessory.", style="Muted.TLabel",
                  wraplength=PREVIEW_SIZE).pack(anchor="w")
        frame = tk.Frame(left, bg=SURFACE, width=PREVIEW_SIZE + 8, height=PREVIEW_SIZE + 8,
                         highlightthickness=1, highlightbackground=BORDER)
        frame.pack_propagate(False)
        frame.pack(pady=(8, 8))
        self.preview = tk.Label(frame, bg=SURFACE, fg=MUTED, text="No image yet", font=_font(frame, 10))
        self.preview.pack(fill="both", expand=True)
        self.choose_button = ttk.Button(left, text="Choose image\u2026", command=self.actions.choose)
        self.choose_button.pack(fill="x")
        self.file_label = ttk.Label(left, text="", style="Muted.TLabel", wraplength=PREVIEW_SIZE)
        self.file_label.pack(anchor="w", pady=(6, 0))
        self.attributes_label = ttk.Label(left, text="", wraplength=PREVIEW_SIZE, justify="left")
        self.attributes_label.pack(anchor="w", pady=(4, 0))

        right = ttk.Frame(self)
        right.pack(side="left", fill="both", expand=True)
        ttk.Label(right, text="Variants", style="Title.TLabel").pack(anchor="w")
        row = ttk.Frame(right)
        row.pack(fill="x", pady=(8, 2))
        self.change = ttk.Entry(row)
        self.change.pack(side="left", fill="x", expand=True)
        self.change.bind("<Return>", lambda e: self.generate())
        self.generate_button = ttk.Button(row, text="Generate variants", style="Accent.TButton",
                                          command=self.generate, state="disabled")
        self.generate_button.pack(side="left", padx=(8, 0))
        ttk.Label(right, text=CHANGE_HINT, style="Muted.TLabel").pack(anchor="w")
        strength_row = ttk.Frame(right)
        strength_row.pack(fill="x", pady=(6, 0))
        ttk.Label(strength_row, text="Strength").pack(side="left")
        self.strength = tk.DoubleVar(value=DEFAULT_STRENGTH)
        self.strength_scale = ttk.Scale(strength_row, from_=0.0, to=1.0, variable=self.strength, length=220)
        self.strength.trace_add("write", lambda *_: self._show_strength())  # dragged or set: the label follows
        self.strength_scale.pack(side="left", padx=(8, 8))
        self.strength_label = ttk.Label(strength_row, text="", style="Muted.TLabel")
        self.strength_label.pack(side="left")
        self._show_strength()
        self.status = ttk.Label(right, text="Choose an image to start.", style="Muted.TLabel", wraplength=780,
                                justify="left")
        self.status.pack(anchor="w", pady=(10, 6))
        self.results = ttk.Frame(right)
        self.results.pack(fill="both", expand=True, anchor="nw")

    def _show_strength(self) -> None:
        value = self.strength.get()
        meaning = ("close to your photo" if value < 0.35 else "part of the way" if value < 0.75
                   else "the full change")
        self.strength_label.configure(text=f"{value:.2f} · {meaning}")

    # -- called by the window

    def allow_drops(self) -> None:
        self.status.configure(text="Choose an image, or drop one on this tab, to start.")
        self.preview.configure(text="Drop an image here")

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.configure(text=text, style="Error.TLabel" if error else "Muted.TLabel")
        if error:
            self.status.configure(foreground=ERROR_FG)

    def show_image(self, image, path: str, info: dict | None) -> None:
        """The reference image has been opened (and described) on the worker."""
        self.image = image
        self.path = path
        self._preview_photo = to_photo(image, PREVIEW_SIZE, master=self, crisp=False)
        self.preview.configure(image=self._preview_photo, text="")
        self.file_label.configure(text=f"{Path(path).name} \u00b7 {image.width}\u00d7{image.height}")
        self.attributes_label.configure(text=describe_text(info))
        self.generate_button.configure(state="normal")
        self.set_status("Add a change if you like, then Generate variants.")

    def show_result(self, reply) -> None:
        self.clear_results()
        if reply.kind == "error":
            self.set_status(reply.text, error=True)
            return
        self.set_status(f"{len(reply.images)} variants, with the seeds that draw them again.")
        if reply.chips:
            header = ttk.Frame(self.results)
            header.pack(anchor="nw", pady=(0, 4))
            ttk.Label(header, text="Drawn as:", font=_font(header, None, "bold")).pack(side="left", padx=(0, 6))
            for chip in reply.chips:
                Chip(header, chip.label, chip.kind).pack(side="left", padx=2)
        if reply.note:
            ttk.Label(self.results, text=reply.note, style="Muted.TLabel", wraplength=780,
                      justify="left").pack(anchor="nw", pady=(0, 6))
        grid = ttk.Frame(self.results)
        grid.pack(anchor="nw")
        rows = max(1, -(-len(reply.images) // VARIANTS_PER_ROW))
        self._reference_card(grid, rows)
        for i, item in enumerate(reply.images):
            card = ImageCard(grid, item, [("Save", self.actions.save)], size=CARD_SIZE)
            card.grid(row=i // VARIANTS_PER_ROW, column=1 + i % VARIANTS_PER_ROW, padx=(0, 8), pady=(0, 8), sticky="n")
            self.cards.append(card)
        if reply.similar:
            self.strip = ProductStrip(self.results, reply.similar, bg=ttk.Style().lookup("TFrame", "background"))
            self.strip.pack(anchor="nw", pady=(6, 0))

    def _reference_card(self, grid, rows: int) -> None:
        """The photo the variants were drawn from, at the variants' size, left of all their rows."""
        frame = tk.Frame(grid, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER)
        frame.grid(row=0, column=0, rowspan=rows, padx=(0, 14), pady=(0, 8), sticky="n")
        self._reference_photo = to_photo(self.image, CARD_SIZE, master=frame, crisp=False)
        tk.Label(frame, image=self._reference_photo, bg=SURFACE).pack(padx=4, pady=(4, 0))
        tk.Label(frame, text="Your photo", bg=SURFACE, fg=MUTED, font=_font(frame, 9)).pack(pady=(2, 4))

    def clear_results(self) -> None:
        for child in self.results.winfo_children():
            child.destroy()
        self.cards.clear()
        self.strip = None
        self._reference_photo = None

    def show_failure(self, message: str) -> None:
        """A file that could not be used: its error; the photo shown before (and its variants) stays."""
        if self.image is not None and self.path:
            message = f"{message}. Still showing {Path(self.path).name}."
        self.set_status(message, error=True)

    def destroy(self) -> None:
        self._preview_photo = self._reference_photo = None  # released on the main thread (see chat.Bubble.destroy)
        self.image = None
        self.cards.clear()
        self.strip = None
        super().destroy()

    def generate(self) -> None:
        if self.image is None:
            self.set_status("Choose an image first.", error=True)
            return
        self.set_status("Drawing variants \u2026")
        self.actions.generate(self.image, self.change.get().strip(), round(float(self.strength.get()), 2))


def describe_text(info: dict | None) -> str:
    if not info:
        return ""
    parts = [str(info[k]) for k in ("baseColour", "articleType", "gender") if info.get(k)]
    if not parts:
        return ""
    from app.chat.bot import _confidence_note

    note = _confidence_note(info.get("confidence"))
    return "Looks like: " + " \u00b7 ".join(parts) + (f"\n{note.strip('()')}" if note else "")
