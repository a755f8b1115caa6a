"""Helpers for the GUI tests: a private Xvfb display, a recording fake for message boxes, event pumping."""
from __future__ import annotations

import os
import subprocess
import time

from app.commands.bench import xvfb as app_xvfb

SCREEN = "1180x820x24"  # the window's default size: a root-window screenshot shows just the app


def start_xvfb(screen: str = SCREEN) -> tuple[str, subprocess.Popen]:
    """Start `Xvfb :N` on a free display number; returns (":N", process). Raises RuntimeError if it can't."""
    return app_xvfb.start_xvfb(screen, first=90 + os.getpid() % 50, timeout=15)


def stop(proc: subprocess.Popen | None) -> None:
    app_xvfb.stop_process(proc)


class RecordingDialogs:
    """Stands in for app.gui.Dialogs: records every call, answers from scripted lists."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []
        self.yes_no_answers: list[bool] = []
        self.open_answers: list[str | None] = []

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(title, message) for kind, title, message in self.calls if kind == "error"]

    def error(self, title, message):
        self.calls.append(("error", title, message))

    def info(self, title, message):
        self.calls.append(("info", title, message))

    def ask_yes_no(self, title, message):
        self.calls.append(("ask_yes_no", title, message))
        return self.yes_no_answers.pop(0) if self.yes_no_answers else False

    def ask_open_image(self, initialdir=None):
        self.calls.append(("ask_open_image", str(initialdir) if initialdir is not None else "", ""))
        return self.open_answers.pop(0) if self.open_answers else None

    @property
    def open_folders(self) -> list[str]:
        """The folder each open dialog started in, in order."""
        return [folder for kind, folder, _ in self.calls if kind == "ask_open_image"]


def pump(root, until, timeout: float = 60.0, what: str = "") -> None:
    """Run the Tk event loop until `until()` is true; generous timeouts for a loaded 2-core machine."""
    deadline = time.monotonic() + timeout
    while True:
        root.update()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or until}")
        time.sleep(0.01)


def descendants(widget):
    stack = list(widget.winfo_children())
    while stack:
        w = stack.pop()
        yield w
        stack.extend(w.winfo_children())
