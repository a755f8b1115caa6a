"""Drag and drop of image files onto the window, through TkDND (PyPI `tkinterdnd2`).

Plain Tk has no drag and drop. When TkDND loads, a file dropped on the Upload tab opens there and a
file dropped on the Chat tab is attached to the conversation; without it (no binary for this
platform, or the package missing) the window works as before with "Choose image" and Ctrl+O, and
the log says why.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

URI_LIST = "text/uri-list"  # what file managers send; TkDND turns it into a Tcl list of paths


def enable(root) -> bool:
    """Load TkDND into the window's Tcl interpreter; False (and a log line) where it cannot."""
    try:
        from tkinterdnd2 import TkinterDnD

        TkinterDnD.require(root)
    except Exception as exc:  # noqa: BLE001 - ImportError, TclError: drag and drop is an extra
        log.warning("drag and drop unavailable (%s): files open with Choose image or Ctrl+O", exc)
        return False
    return True


def accept_files(widget, on_paths: Callable[[list[str]], None]) -> None:
    """Make `widget` (and what TkDND finds inside it) a drop target for files and for text naming a file."""
    from tkinterdnd2 import COPY, DND_FILES, DND_TEXT

    def dropped(event):
        paths = paths_from_drop(event.type, event.data, widget.tk.splitlist)
        if paths:
            on_paths(paths)
        return COPY

    widget.drop_target_register(DND_FILES, DND_TEXT)
    widget.dnd_bind("<<Drop>>", dropped)


def paths_from_drop(kind: str, data: str, split_list: Callable[[str], Iterable[str]]) -> list[str]:
    """Local file paths in dropped data. A file drop (`text/uri-list`) arrives as a Tcl list of paths;
    dropped text may hold paths or file:// URIs, one per line. Web links and comment lines are left out."""
    items = split_list(data) if kind.startswith(URI_LIST) else str(data).splitlines()
    paths = []
    for item in items:
        item = str(item).strip()
        if not item or item.startswith("#"):
            continue
        if "://" in item or item.startswith("file:"):
            parsed = urlparse(item)
            if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
                continue  # a web page or another machine's file: nothing to open here
            item = unquote(parsed.path)
        paths.append(item)
    return paths
