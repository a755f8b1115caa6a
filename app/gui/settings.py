"""The main window's menu bar and its Preferences dialog (app.gui.window.App supplies what they act on)."""
from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass, replace
from tkinter import ttk
from typing import TYPE_CHECKING

from app.gui import BG

if TYPE_CHECKING:
    from app.gui.window import App

DEVICE_LABELS = {"auto": "Automatic (GPU if available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}


@dataclass
class MenuActions:
    """What the menu entries do; the window supplies these."""

    attach: Callable[[], object]          # File > Attach image to chat
    open_saved: Callable[[], object]      # File > Open saved images folder
    clear_history: Callable[[], object]
    quit: Callable[[], object]
    preferences: Callable[[], object]     # Settings > Preferences (the dialog below)
    ask_help: Callable[[], object]        # Help > What can I ask? (sends "help" to the chat)
    show_paths: Callable[[], object]      # Help > Where are my files?


def build_menu(root: tk.Tk, actions: MenuActions) -> tk.Menu:
    """File, Settings and Help, set as `root`'s menu bar."""
    menubar = tk.Menu(root)
    file = tk.Menu(menubar, tearoff=False)
    file.add_command(label="Attach image to chat\u2026", accelerator="Ctrl+O", command=actions.attach)
    file.add_command(label="Open saved images folder", command=actions.open_saved)
    file.add_separator()
    file.add_command(label="Clear history\u2026", command=actions.clear_history)
    file.add_separator()
    file.add_command(label="Quit", accelerator="Ctrl+Q", command=actions.quit)
    menubar.add_cascade(label="File", menu=file)
    settings = tk.Menu(menubar, tearoff=False)
    settings.add_command(label="Preferences\u2026", accelerator="Ctrl+,", command=actions.preferences)
    menubar.add_cascade(label="Settings", menu=settings)
    helpmenu = tk.Menu(menubar, tearoff=False)
    helpmenu.add_command(label="What can I ask?", command=actions.ask_help)
    helpmenu.add_command(label="Where are my files?", command=actions.show_paths)
    menubar.add_cascade(label="Help", menu=helpmenu)
    root.configure(menu=menubar)
    return menubar


class SettingsDialog(tk.Toplevel):
    """Images per request, device, seed mode. OK applies (and reloads the models if the device changed)."""

    def __init__(self, app: App):
        super().__init__(app.root, bg=BG, padx=16, pady=14)
        self.app = app
        self.title("Preferences")
        self.transient(app.root)
        self.resizable(False, False)
        s = app.settings
        self.images = tk.IntVar(self, s.images_per_request)
        self.device = tk.StringVar(self, s.device)
        self.seed_mode = tk.StringVar(self, s.seed_mode)
        self.fixed_seed = tk.StringVar(self, str(s.fixed_seed))

        ttk.Label(self, text="Images per request").grid(row=0, column=0, sticky="w", pady=4)
        self.images_box = ttk.Spinbox(self, from_=1, to=8, width=5, textvariable=self.images)
        self.images_box.grid(row=0, column=1, sticky="w")
        ttk.Label(self, text="Device").grid(row=1, column=0, sticky="nw", pady=4)
        devices = ttk.Frame(self)
        devices.grid(row=1, column=1, sticky="w", pady=4)
        for value, label in DEVICE_LABELS.items():
            ttk.Radiobutton(devices, text=label, value=value, variable=self.device).pack(anchor="w")
        ttk.Label(self, text="Seeds").grid(row=2, column=0, sticky="nw", pady=4)
        seeds = ttk.Frame(self)
        seeds.grid(row=2, column=1, sticky="w", pady=4)
        ttk.Radiobutton(seeds, text="Random (new designs every time)", value="random",
                        variable=self.seed_mode).pack(anchor="w")
        fixed = ttk.Frame(seeds)
        fixed.pack(anchor="w")
        ttk.Radiobutton(fixed, text="Fixed, starting at", value="fixed", variable=self.seed_mode).pack(side="left")
        ttk.Entry(fixed, textvariable=self.fixed_seed, width=10).pack(side="left", padx=(6, 0))
        buttons = ttk.Frame(self)
        buttons.grid(row=3, column=0, columnspan=2, sticky="e", pady=(12, 0))
        ttk.Button(buttons, text="Cancel", command=self.destroy).pack(side="right")
        self.ok_button = ttk.Button(buttons, text="OK", style="Accent.TButton", command=self.ok)
        self.ok_button.pack(side="right", padx=(0, 6))
        self.bind("<Return>", lambda e: self.ok())
        self.bind("<Escape>", lambda e: self.destroy())
        app.root.update_idletasks()
        x = app.root.winfo_rootx() + max(0, (app.root.winfo_width() - self.winfo_reqwidth()) // 2)
        y = app.root.winfo_rooty() + max(0, (app.root.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")

    def destroy(self) -> None:
        self.images = self.device = self.seed_mode = self.fixed_seed = None  # Tk variables die on this thread
        super().destroy()

    def ok(self) -> None:
        try:
            images = int(self.images.get())
        except (tk.TclError, ValueError):
            images = self.app.settings.images_per_request
        try:
            seed = int(self.fixed_seed.get())
        except ValueError:
            seed = self.app.settings.fixed_seed
        self.app.apply_settings(replace(self.app.settings, images_per_request=images, device=self.device.get(),
                                        seed_mode=self.seed_mode.get(), fixed_seed=seed))
        self.destroy()
