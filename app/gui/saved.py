"""The Saved tab: the images the user kept, newest first, as a grid of cards.

Each card shows the image, the whole prompt (wrapped), the seed and the file name, so two saves of the same
prompt never look alike. The cards are embedded in a read-only `tk.Text` that wraps them into rows as wide
as the tab. "Open folder" and double-clicking a card hand the folder or file to the desktop (xdg-open on
Linux); where there is none, the tab says so and shows the path as selectable text to copy.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import ttk

from app.chat.storage import SavedImage, Storage, read_saved
from app.gui import BORDER, MUTED, SURFACE, TEXT, to_photo
from app.gui.chat import _font, fit_lines

log = logging.getLogger(__name__)

CARD_IMAGE = 192          # saved PNGs are 64x64 images at 4x: shown at 3x, nearest neighbour (crisp)
CARD_TEXT_WIDTH = CARD_IMAGE  # the card's text wraps to this many pixels
OPEN_CHECK_MS = 2500      # a file manager that exits with an error this soon could not open the path
WHEEL_TAG = "SavedWheel"  # bindtag of every widget in the grid: the wheel scrolls it


def open_with_system(path: Path) -> tuple[subprocess.Popen | None, str | None]:
    """Hand `path` to the desktop (a file manager for a folder, the viewer for an image).

    Returns (the process, if one was started; why it could not be opened, or None)."""
    try:
        if sys.platform.startswith("win"):
            os.startfile(path)  # noqa: S606 - the user asked to open their own file
            return None, None
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        if shutil.which(opener) is None:
            return None, f"No file manager is available on this computer ({opener} is not installed)"
        process = subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return process, None
    except OSError as exc:
        log.warning("cannot open %s: %s", path, exc)
        return None, f"No file manager could be started ({exc.strerror or exc})"


class SavedCard(tk.Frame):
    """One saved image: the picture, its prompt (and caption), seed, file name and date."""

    def __init__(self, master, saved: SavedImage, on_open):
        super().__init__(master, bg=SURFACE, highlightthickness=1, highlightbackground=BORDER, padx=6, pady=6)
        self.saved = saved
        self.photo = None
        try:
            from PIL import Image

            with Image.open(saved.path) as im:
                self.photo = to_photo(im.convert("RGB"), CARD_IMAGE, master=self)
        except (OSError, ValueError, SyntaxError):
            log.warning("cannot show %s", saved.path)
        self.image_label = tk.Label(self, image=self.photo or "", text="" if self.photo else "(cannot show)",
                                    bg=SURFACE, fg=MUTED, width=0 if self.photo else 24,
                                    height=0 if self.photo else 10)
        self.image_label.pack()
        self.labels: dict[str, tk.Label] = {}
        self._label("prompt", saved.prompt or saved.caption or "(no prompt)", _font(self, 9, "bold"), TEXT)
        if saved.caption and saved.prompt and saved.caption != saved.prompt:
            self._label("caption", f"drawn as: {saved.caption}", _font(self, 8), MUTED)
        seed = "seed \u2013" if saved.seed is None else f"seed {saved.seed}"
        if saved.variation is not None:
            seed += f" \u00b7 variation {saved.variation}"
        self._label("seed", seed, _font(self, 9), TEXT)
        self._label("file", saved.path.name, _font(self, 8), MUTED)
        if saved.created:
            self._label("saved", time.strftime("saved %Y-%m-%d %H:%M", time.localtime(saved.created)),
                        _font(self, 8), MUTED)
        self.open_button = ttk.Button(self, text="Open", style="Card.TButton", command=lambda: on_open(self))
        self.open_button.pack(anchor="w", pady=(4, 0))
        for widget in (self, self.image_label, *self.labels.values()):
            widget.bind("<Double-1>", lambda e: on_open(self))

    def _label(self, name: str, text: str, font: tuple, fg: str) -> None:
        label = tk.Label(self, text=fit_lines(self, text, font, CARD_TEXT_WIDTH, None), bg=SURFACE, fg=fg,
                         font=font, justify="left", anchor="w", bd=0, padx=0)
        label.pack(anchor="w", pady=(3 if name == "prompt" else 1, 0))
        self.labels[name] = label

    def destroy(self) -> None:
        self.photo = None  # released on the main thread (see chat.Bubble.destroy)
        super().destroy()


class SavedTab(ttk.Frame):
    def __init__(self, master, storage: Storage, dialogs):
        super().__init__(master, padding=14)
        self.storage = storage
        self.dialogs = dialogs
        self.cards: list[SavedCard] = []  # newest first
        self.loaded = False
        self._check_id = None
        self._build()

    def _build(self) -> None:
        top = ttk.Frame(self)
        top.pack(fill="x", pady=(0, 8))
        ttk.Label(top, text="Saved images", style="Title.TLabel").pack(side="left")
        self.open_button = ttk.Button(top, text="Open folder", command=self.open_folder)
        self.open_button.pack(side="right")
        ttk.Button(top, text="Refresh", command=self.refresh).pack(side="right", padx=(0, 6))
        self.count_label = ttk.Label(self, text="", style="Muted.TLabel")
        self.count_label.pack(anchor="w", pady=(0, 6))
        self._build_notice()
        body = ttk.Frame(self)
        body.pack(fill="both", expand=True)
        self.grid_view = tk.Text(body, wrap="char", state="disabled", bg=SURFACE, bd=0, highlightthickness=1,
                                 highlightbackground=BORDER, padx=8, pady=8, cursor="arrow", takefocus=False)
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.grid_view.yview)
        self.grid_view.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.grid_view.pack(side="left", fill="both", expand=True)
        for sequence in ("<MouseWheel>", "<Button-4>", "<Button-5>"):
            self.grid_view.bind_class(WHEEL_TAG, sequence, self._on_wheel)
        self.grid_view.bindtags((WHEEL_TAG, *self.grid_view.bindtags()))

    def _build_notice(self) -> None:
        """Shown when the desktop cannot open a path: why, and the path as text to select or copy."""
        self.notice = ttk.Frame(self, padding=(0, 0, 0, 8))
        self.notice_label = ttk.Label(self.notice, text="", wraplength=900, justify="left")
        self.notice_label.pack(anchor="w")
        row = ttk.Frame(self.notice)
        row.pack(fill="x", pady=(4, 0))
        self.path_var = tk.StringVar(self, "")
        self.path_entry = ttk.Entry(row, textvariable=self.path_var, state="readonly")
        self.path_entry.pack(side="left", fill="x", expand=True)
        ttk.Button(row, text="Copy path", command=self.copy_path).pack(side="left", padx=(6, 0))
        ttk.Button(row, text="Close", command=self.hide_notice).pack(side="left", padx=(6, 0))

    # -- contents

    def refresh(self) -> None:
        for card in self.cards:
            card.destroy()
        self.cards.clear()
        self.grid_view.configure(state="normal")
        self.grid_view.delete("1.0", "end")
        self.grid_view.configure(state="disabled")
        for saved in reversed(self.storage.saved_images()):  # each goes first: newest ends first
            self._insert(saved)
        self.loaded = True
        self._update_count()

    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.refresh()

    def add(self, path: Path) -> None:
        if not self.loaded:
            self.refresh()
            return
        self._insert(read_saved(path))
        self._update_count()

    @property
    def paths(self) -> list[Path]:
        return [card.saved.path for card in self.cards]

    def _insert(self, saved: SavedImage) -> None:
        card = SavedCard(self.grid_view, saved, self._open_card)
        self.grid_view.configure(state="normal")
        self.grid_view.window_create("1.0", window=card, padx=5, pady=5, align="top")
        self.grid_view.configure(state="disabled")
        self.cards.insert(0, card)
        stack = [card]
        while stack:
            widget = stack.pop()
            widget.bindtags((WHEEL_TAG, *widget.bindtags()))
            stack.extend(widget.winfo_children())

    def _update_count(self) -> None:
        n = len(self.cards)
        self.count_label.configure(text=f"{n} image{'s' if n != 1 else ''} in {self.storage.saved_dir}" if n
                                   else f"Nothing saved yet: use Save under an image. Files go to "
                                        f"{self.storage.saved_dir}")

    def _on_wheel(self, event) -> str:
        up = getattr(event, "num", None) == 4 or getattr(event, "delta", 0) > 0
        self.grid_view.yview_scroll(-60 if up else 60, "pixels")
        return "break"

    # -- opening

    def open_folder(self) -> bool:
        """The saved images' folder in the file manager; False (and the path shown here) when it can't be."""
        self.storage.saved_dir.mkdir(parents=True, exist_ok=True)
        return self.open_path(self.storage.saved_dir)

    def _open_card(self, card: SavedCard) -> None:
        self.open_path(card.saved.path)

    def open_path(self, path: Path) -> bool:
        process, problem = open_with_system(path)
        if problem:
            self.show_path(problem, path)
            return False
        self.hide_notice()
        if process is not None:  # an opener without a program for the path exits with an error at once
            if self._check_id is not None:
                self.after_cancel(self._check_id)
            self._check_id = self.after(OPEN_CHECK_MS, lambda: self._check_opened(process, path))
        return True

    def _check_opened(self, process: subprocess.Popen, path: Path) -> None:
        self._check_id = None
        code = process.poll()
        if code not in (None, 0):
            self.show_path(f"The file manager could not open it (xdg-open exited with status {code})", path)

    def show_path(self, problem: str, path: Path) -> None:
        what = "folder" if path.is_dir() else "file"
        self.notice_label.configure(text=f"{problem}. The {what} is here; select the path or copy it:")
        self.path_var.set(str(path))
        if not self.notice.winfo_ismapped():
            self.notice.pack(fill="x", before=self.grid_view.master)
        if isinstance(self.master, ttk.Notebook):
            self.master.select(self)
        self.path_entry.selection_range(0, "end")

    def hide_notice(self) -> None:
        self.notice.pack_forget()

    def copy_path(self) -> None:
        self.clipboard_clear()
        self.clipboard_append(self.path_var.get())

    def destroy(self) -> None:
        if self._check_id is not None:
            self.after_cancel(self._check_id)
            self._check_id = None
        self.cards.clear()
        self.path_var = None  # Tk variables die on the main thread
        super().destroy()
