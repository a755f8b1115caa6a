"""The desktop window (tkinter + ttk). `window.run_app(args)` is the way in.

Layout (the IDLE pattern): one `ttk.Notebook` with one `Frame` subclass per tab, `chat.ChatView`,
`upload.UploadTab`, `saved.SavedTab`; `window.App` owns the worker thread, the status bar, the menus
and the settings (`settings.py` builds those two; `loading.py` is the model-loading job). Nothing in this
package does model work: it submits jobs to `app.chat.worker.Worker` and renders the plain
`app.chat.bot.Reply` objects that come back.

This module holds what every tab shares: colours, ttk styles, image conversion and the message-box
wrapper that tests replace with a recording fake.
"""
from __future__ import annotations

import tkinter as tk
from tkinter import filedialog, messagebox, ttk
from tkinter import font as tkfont

# Palette (light theme).
BG = "#f6f7f9"          # window background
SURFACE = "#ffffff"     # transcript, cards
BORDER = "#d8dde3"
TEXT = "#1f2328"
MUTED = "#66707a"
ACCENT = "#2563eb"
ACCENT_DARK = "#1d4ed8"
USER_BG = "#2563eb"
USER_FG = "#ffffff"
BOT_BG = "#eef1f5"
ERROR_BG = "#fdecea"
ERROR_FG = "#9f1c1c"
CHIP_COLOURS = {  # kind -> (background, foreground)
    "item": ("#e0e7ff", "#3730a3"),
    "colour": ("#fef3c7", "#92400e"),
    "not_colour": ("#fee2e2", "#991b1b"),
    "not_attribute": ("#ffe4e6", "#9f1239"),
    "gender": ("#dcfce7", "#166534"),
    "usage": ("#f3e8ff", "#6b21a8"),
    "attribute": ("#e0f2fe", "#075985"),
}
SWATCHES = {  # catalogue colour -> a dot shown in its chip
    "Black": "#111111", "White": "#ffffff", "Blue": "#2563eb", "Brown": "#7c4a21", "Grey": "#8b8f94",
    "Red": "#dc2626", "Green": "#16a34a", "Navy Blue": "#1e2a5a", "Pink": "#ec4899", "Purple": "#7e22ce",
    "Yellow": "#facc15", "Beige": "#e8d8b8", "Maroon": "#7f1d1d", "Orange": "#f97316", "Olive": "#6b7a2a",
    "Cream": "#f5f0dc", "Silver": "#c0c4c8", "Charcoal": "#36393d", "Gold": "#d4a017", "Off White": "#f4f1ea",
    "Peach": "#f8b897", "Khaki": "#b5a36b", "Lavender": "#b9a7e6", "Teal": "#0f766e", "Magenta": "#c026d3",
    "Tan": "#c49a6c", "Mustard": "#d1a21b", "Rust": "#b7410e", "Turquoise Blue": "#22b8cf",
    "Burgundy": "#6d1a36", "Sea Green": "#2e8b57", "Rose": "#f43f5e", "Mauve": "#b784a7",
}
DISPLAY_SIZE = 192      # generated 64x64 images shown 3x, nearest neighbour: crisp pixels
THUMB_SIZE = 84         # product thumbnails in a "Similar products" strip
IMAGE_FILETYPES = [("Images", "*.jpg *.jpeg *.png *.webp *.bmp *.gif *.tif *.tiff"), ("All files", "*")]


def configure_styles(root: tk.Misc) -> ttk.Style:
    """One look for the whole app: the 'clam' theme, a neutral palette, a blue accent button."""
    style = ttk.Style(root)
    if "clam" in style.theme_names():
        style.theme_use("clam")
    base = tkfont.nametofont("TkDefaultFont")
    base.configure(size=10)
    for name in ("TkTextFont", "TkMenuFont"):
        tkfont.nametofont(name).configure(size=10)
    root.option_add("*Font", base)
    style.configure(".", background=BG, foreground=TEXT)
    style.configure("TFrame", background=BG)
    style.configure("Surface.TFrame", background=SURFACE)
    style.configure("TLabel", background=BG, foreground=TEXT)
    style.configure("Muted.TLabel", background=BG, foreground=MUTED)
    style.configure("Status.TFrame", background="#e9ecf0")
    style.configure("Status.TLabel", background="#e9ecf0", foreground=TEXT)
    style.configure("StatusMuted.TLabel", background="#e9ecf0", foreground=MUTED)
    style.configure("Title.TLabel", background=BG, foreground=TEXT, font=(base.actual("family"), 12, "bold"))
    style.configure("Error.TLabel", background=BG, foreground=ERROR_FG)
    style.configure("TNotebook", background=BG, borderwidth=0)
    style.configure("TNotebook.Tab", padding=(16, 6))
    style.map("TNotebook.Tab", background=[("selected", SURFACE)])
    style.configure("TButton", padding=(10, 4))
    style.configure("Accent.TButton", background=ACCENT, foreground="white", bordercolor=ACCENT_DARK,
                    padding=(14, 4))
    style.map("Accent.TButton", background=[("disabled", "#9db5ef"), ("pressed", ACCENT_DARK),
                                            ("active", ACCENT_DARK)])
    style.configure("Card.TButton", padding=(6, 1), width=0, font=(base.actual("family"), 9))
    style.configure("Horizontal.TProgressbar", troughcolor="#dfe3e8", background=ACCENT, thickness=8)
    style.configure("Treeview", rowheight=72, background=SURFACE, fieldbackground=SURFACE)
    style.configure("TLabelframe", background=BG)
    style.configure("TLabelframe.Label", background=BG, foreground=TEXT)
    style.configure("TRadiobutton", background=BG)
    style.configure("TCheckbutton", background=BG)
    return style


def to_photo(image, size: int | None = None, master: tk.Misc | None = None, crisp: bool = True):
    """PIL image -> Tk PhotoImage, fitted into size x size (nearest neighbour when `crisp`).

    The caller must keep a reference to the result: Tk does not (the image goes blank otherwise).
    """
    from PIL import Image, ImageTk

    if size is not None:
        w, h = image.size
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        resample = Image.Resampling.NEAREST if crisp else Image.Resampling.LANCZOS
        image = image.resize(new, resample)
    return ImageTk.PhotoImage(image.convert("RGB"), master=master)


class Dialogs:
    """The message boxes and file pickers the app uses; tests pass a recording fake with the same methods."""

    def __init__(self, root: tk.Misc):
        self.root = root

    def error(self, title: str, message: str) -> None:
        messagebox.showerror(title, message, parent=self.root)

    def info(self, title: str, message: str) -> None:
        messagebox.showinfo(title, message, parent=self.root)

    def ask_yes_no(self, title: str, message: str) -> bool:
        return bool(messagebox.askyesno(title, message, parent=self.root))

    def ask_open_image(self, initialdir: str | None = None) -> str | None:
        path = filedialog.askopenfilename(parent=self.root, title="Choose an image", filetypes=IMAGE_FILETYPES,
                                          initialdir=initialdir or None)
        return path or None


def bind_wheel(widget: tk.Misc, target) -> None:
    """Scroll `target` (a Text or Canvas) by pixels when the wheel turns over `widget`."""

    def scroll(event):
        if getattr(event, "num", None) == 4 or getattr(event, "delta", 0) > 0:
            target.yview_scroll(-60, "pixels")
        else:
            target.yview_scroll(60, "pixels")
        return "break"

    for sequence in ("<MouseWheel>", "<Button-4>", "<Button-5>"):
        widget.bind(sequence, scroll, add=False)
