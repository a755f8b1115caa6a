"""The Saved tab: the images the user kept, newest first, with the prompt and seed from their metadata."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from tkinter import ttk

from app.chat.storage import SavedImage, Storage, read_saved
from app.gui import to_photo

log = logging.getLogger(__name__)

ROW_THUMB = 64


class SavedTab(ttk.Frame):
    def __init__(self, master, storage: Storage, dialogs):
        super().__init__(master, padding=14)
        self.storage = storage
        self.dialogs = dialogs
        self._photos: dict[str, object] = {}   # tree item id -> PhotoImage (Tk keeps no reference)
        self._paths: dict[str, Path] = {}
        self.loaded = False
        self._build()

    def _build(self) -> None:
        top = ttk.Frame(self)
        top.pack(fill="x", pady=(0, 8))
        ttk.Label(top, text="Saved images", style="Title.TLabel").pack(side="left")
        ttk.Button(top, text="Open folder", command=self.open_folder).pack(side="right")
        ttk.Button(top, text="Refresh", command=self.refresh).pack(side="right", padx=(0, 6))
        self.count_label = ttk.Label(self, text="", style="Muted.TLabel")
        self.count_label.pack(anchor="w", pady=(0, 6))
        body = ttk.Frame(self)
        body.pack(fill="both", expand=True)
        self.tree = ttk.Treeview(body, columns=("prompt", "seed", "file", "saved"), show="tree headings",
                                 selectmode="browse")
        self.tree.heading("#0", text="Image")
        self.tree.column("#0", width=ROW_THUMB + 40, stretch=False)
        for column, title, width in (("prompt", "Prompt", 320), ("seed", "Seed", 110), ("file", "File", 260),
                                     ("saved", "Saved", 140)):
            self.tree.heading(column, text=title, anchor="w")
            self.tree.column(column, width=width, anchor="w", stretch=column in ("prompt", "file"))
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.tree.pack(side="left", fill="both", expand=True)
        self.tree.bind("<Double-1>", self._open_selected)

    def refresh(self) -> None:
        self.tree.delete(*self.tree.get_children())
        self._photos.clear()
        self._paths.clear()
        for saved in reversed(self.storage.saved_images()):  # inserted at the top: newest ends first
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
        return [self._paths[i] for i in self.tree.get_children()]

    def _insert(self, saved: SavedImage) -> None:
        photo = None
        try:
            from PIL import Image

            with Image.open(saved.path) as im:
                photo = to_photo(im.convert("RGB"), ROW_THUMB, master=self)
        except (OSError, ValueError, SyntaxError):
            log.warning("cannot show %s", saved.path)
        seed = "" if saved.seed is None else str(saved.seed)
        if saved.variation is not None:
            seed += f" ~{saved.variation}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.created)) if saved.created else ""
        prompt = saved.prompt or saved.caption
        if saved.caption and saved.caption != saved.prompt:
            prompt = f"{saved.prompt} \u2192 {saved.caption}" if saved.prompt else saved.caption
        item = self.tree.insert("", 0, text="", image=photo or "", values=(prompt, seed, saved.path.name, when))
        if photo is not None:
            self._photos[item] = photo
        self._paths[item] = saved.path

    def _update_count(self) -> None:
        n = len(self._paths)
        self.count_label.configure(text=f"{n} image{'s' if n != 1 else ''} in {self.storage.saved_dir}" if n
                                   else f"Nothing saved yet: use Save under an image. Files go to "
                                        f"{self.storage.saved_dir}")

    def destroy(self) -> None:
        self._photos.clear()  # released on the main thread (see chat.Bubble.destroy)
        super().destroy()

    def open_folder(self) -> None:
        self.storage.saved_dir.mkdir(parents=True, exist_ok=True)
        _open_with_system(self.storage.saved_dir, self.dialogs)

    def _open_selected(self, event=None) -> None:
        selected = self.tree.selection()
        if selected:
            _open_with_system(self._paths[selected[0]], self.dialogs)


def _open_with_system(path: Path, dialogs) -> None:
    try:
        if sys.platform.startswith("win"):
            os.startfile(path)  # noqa: S606 - the user asked to open their own folder
        elif sys.platform == "darwin":
            subprocess.Popen(["open", str(path)])
        else:
            subprocess.Popen(["xdg-open", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        dialogs.info("Saved images", f"The files are in:\n{path}\n\n(Could not open a file manager: {exc})")

