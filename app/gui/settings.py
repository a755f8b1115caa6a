"""The main window's menu bar and its Preferences dialog (app.gui.window.App supplies what they act on)."""
from __future__ import annotations

import os
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass, replace
from tkinter import ttk
from typing import TYPE_CHECKING

from app.chat.llm import ENV_URL
from app.gui import BG

if TYPE_CHECKING:
    from app.gui.window import App

DEVICE_LABELS = {"auto": "Automatic (GPU if available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}
LLM_URL_HINT = "http://localhost:11434/v1"  # Ollama's OpenAI-compatible API: what the URL box offers when empty


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
    """Images per request, device, seed mode, who writes the replies. OK applies (and reloads the models if the
    device changed)."""

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
        self._build_llm(row=3)
        buttons = ttk.Frame(self)
        buttons.grid(row=4, column=0, columnspan=2, sticky="e", pady=(12, 0))
        ttk.Button(buttons, text="Cancel", command=self.destroy).pack(side="right")
        self.ok_button = ttk.Button(buttons, text="OK", style="Accent.TButton", command=self.ok)
        self.ok_button.pack(side="right", padx=(0, 6))
        self.bind("<Return>", lambda e: self.ok())
        self.bind("<Escape>", lambda e: self.destroy())
        app.root.update_idletasks()
        x = app.root.winfo_rootx() + max(0, (app.root.winfo_width() - self.winfo_reqwidth()) // 2)
        y = app.root.winfo_rooty() + max(0, (app.root.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")

    def _build_llm(self, row: int) -> None:
        """Replies: built-in (the default), or written by a language model (app.chat.llm) at a base URL, with
        a model name, an optional API key and Test connection."""
        s = self.app.settings
        self.llm_on = tk.BooleanVar(self, bool(s.llm_url))
        self.llm_url = tk.StringVar(self, s.llm_url or LLM_URL_HINT)
        self.llm_model = tk.StringVar(self, s.llm_model)
        self.llm_key = tk.StringVar(self, s.llm_key)
        ttk.Label(self, text="Replies").grid(row=row, column=0, sticky="nw", pady=4)
        box = ttk.Frame(self)
        box.grid(row=row, column=1, sticky="w", pady=4)
        ttk.Radiobutton(box, text="Built-in (the default)", value=False, variable=self.llm_on,
                        command=self._llm_toggled).grid(row=0, column=0, columnspan=3, sticky="w")
        ttk.Radiobutton(box, text="Written by a language model (OpenAI-compatible server)", value=True,
                        variable=self.llm_on, command=self._llm_toggled).grid(row=1, column=0, columnspan=3,
                                                                              sticky="w")
        self.llm_entries = []
        for i, (label, var, extra) in enumerate((("Base URL", self.llm_url, {}), ("Model", self.llm_model, {}),
                                                 ("API key", self.llm_key, {"show": "\u2022"}))):
            ttk.Label(box, text=label).grid(row=2 + i, column=0, sticky="w", padx=(22, 6), pady=2)
            entry = ttk.Entry(box, textvariable=var, width=36, **extra)
            entry.grid(row=2 + i, column=1, columnspan=2, sticky="w", pady=2)
            self.llm_entries.append(entry)
        ttk.Label(box, text="(optional)", style="Muted.TLabel").grid(row=4, column=3, sticky="w", padx=(4, 0))
        self.test_button = ttk.Button(box, text="Test connection", command=self.test_connection)
        self.test_button.grid(row=5, column=1, sticky="w", pady=(4, 0))
        self.llm_entries.append(self.test_button)
        self.test_result = ttk.Label(box, text="", style="Muted.TLabel", wraplength=380, justify="left")
        self.test_result.grid(row=6, column=0, columnspan=4, sticky="w", padx=(22, 0), pady=(2, 0))
        url, model = getattr(self.app, "llm_args", (None, None))
        if url or os.environ.get(ENV_URL):
            self.override = ttk.Label(box, style="Muted.TLabel", wraplength=380, justify="left",
                                      text=f"This session uses {url or os.environ[ENV_URL]} "
                                           f"(--llm-url or {ENV_URL}), whatever is set here.")
            self.override.grid(row=7, column=0, columnspan=4, sticky="w", padx=(22, 0), pady=(2, 0))
        self._llm_toggled()

    def _llm_toggled(self) -> None:
        state = "normal" if self.llm_on.get() else "disabled"
        for entry in self.llm_entries:
            entry.configure(state=state)

    def _llm_config(self):
        """What the boxes say, as an app.chat.llm.LLMConfig; ValueError for a URL that is not one."""
        from app.chat.llm import LLMConfig, check_url

        return LLMConfig(check_url(self.llm_url.get()), self.llm_model.get().strip(), self.llm_key.get().strip())

    def test_connection(self) -> int | None:
        """GET /models on the worker (the queue as every job); the answer, in one line, under the button."""
        from app.chat.llm import describe_connection
        from app.chat.worker import ERROR, RESULT

        try:
            config = self._llm_config()
        except ValueError as exc:
            self.test_result.configure(text=str(exc), style="Error.TLabel")
            return None
        waiting = " (once the models have loaded)" if self.app.model_state == "loading" else ""
        self.test_result.configure(text=f"Testing {config.where} \u2026{waiting}", style="Muted.TLabel")

        def on_event(event) -> None:
            if self.test_result is None or not self.test_result.winfo_exists():
                return  # the dialog was closed meanwhile
            if event.kind == RESULT:
                ok = event.data.startswith("Connected")
                self.test_result.configure(text=event.data, style="Muted.TLabel" if ok else "Error.TLabel")
            elif event.kind == ERROR:
                self.test_result.configure(text=f"Not connected: {event.data.message}", style="Error.TLabel")

        return self.app.submit(lambda job: describe_connection(config, job.check), on_event, group="llm-test",
                               supersede=True)

    def destroy(self) -> None:
        self.images = self.device = self.seed_mode = self.fixed_seed = None  # Tk variables die on this thread
        self.llm_on = self.llm_url = self.llm_model = self.llm_key = None
        self.test_result = None
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
        llm = {"llm_url": ""}
        if self.llm_on.get():
            try:
                config = self._llm_config()
            except ValueError as exc:  # said under the boxes; the dialog stays open
                self.test_result.configure(text=str(exc), style="Error.TLabel")
                return
            llm = {"llm_url": config.url, "llm_model": config.model, "llm_key": config.api_key}
        self.app.apply_settings(replace(self.app.settings, images_per_request=images, device=self.device.get(),
                                        seed_mode=self.seed_mode.get(), fixed_seed=seed, **llm))
        self.destroy()
