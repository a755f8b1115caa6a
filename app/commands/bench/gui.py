"""The window's timings: `main.py` started under Xvfb (or $DISPLAY), requests typed with xdotool.

The app runs with a temporary FASHIONGAN_HOME; its log and history file say when the models were ready
and each answer arrived. A bare Tk window, timed the same way, is the floor for the window's start-up.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from app.commands.bench.report import (
    ROOT,
    TARGET_MEMORY_MB,
    TARGET_WINDOW_S,
    Report,
    Stage,
    percentile,
    round_or_none,
    say,
)
from app.commands.bench.xvfb import start_xvfb, stop_process

WINDOW_NAME = "FashionGAN"   # the main window's title starts with this
FLOOR_WINDOW = "fashiongan-bench-tk-floor"
INPUT_XY = ("500", "740")    # a point inside the chat's input box (window coordinates, default size)
READY_LINE = re.compile(r"models ready|loaded catalogue in|similar products unavailable|loading the models failed")
GUI_PROMPTS = ["a red dress for a party", "make it blue", "black leather jacket for men", "white sneakers",
               "a green skirt for women"]
TK_FLOOR = (f"import tkinter as tk; r = tk.Tk(); r.title({FLOOR_WINDOW!r}); r.geometry('1180x780'); "
            "r.update(); r.after(1500, r.destroy); r.mainloop()")


class GuiUnavailable(Exception):
    pass


def start_display() -> tuple[str, subprocess.Popen | None]:
    """A private Xvfb display (":N", process), else $DISPLAY (None), else GuiUnavailable."""
    if shutil.which("xdotool") is None:
        raise GuiUnavailable("xdotool is not installed (apt-get install xdotool xvfb)")
    if shutil.which("Xvfb") is None:
        if os.environ.get("DISPLAY"):
            return os.environ["DISPLAY"], None
        raise GuiUnavailable("no X server: neither Xvfb nor $DISPLAY (apt-get install xvfb xdotool)")
    try:
        return start_xvfb(first=200 + os.getpid() % 100)
    except RuntimeError as exc:
        raise GuiUnavailable(str(exc)) from exc


def _xdo(display: str, *args: str) -> str:
    done = subprocess.run(["xdotool", *args], env=os.environ | {"DISPLAY": display}, capture_output=True,
                          text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else ""


def _wait(predicate: Callable[[], object], timeout: float, interval: float = 0.02, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(interval)
    return None


def _window_visible(display: str, name: str, proc: subprocess.Popen, timeout: float) -> tuple[str, float] | None:
    """Start already happened; poll until a visible window named `name` exists: (window id, seconds)."""
    start = time.monotonic()
    found = _wait(lambda: _xdo(display, "search", "--onlyvisible", "--name", name), timeout, proc=proc)
    return (found.split()[0], time.monotonic() - start) if found else None


def _bot_records(home: Path) -> list[dict]:
    try:
        data = json.loads((home / "data" / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m for m in data.get("messages", []) if isinstance(m, dict) and m.get("role") == "bot"]


def _ready_at(log_path: Path) -> float | None:
    """Wall-clock time of the log line saying the models are loaded (asctime has milliseconds)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if READY_LINE.search(line):
            try:
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                return time.time()
    return None


def _vm_hwm_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM, the live equivalent of ru_maxrss) of a running process, Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def app_command() -> list[str]:
    if getattr(sys, "frozen", False):  # the PyInstaller build: the executable is the app
        return [sys.executable]
    return [sys.executable, str(ROOT / "main.py")]


def measure_gui(report: Report, turns: int, timeout: float) -> None:
    try:
        display, xvfb = start_display()
    except GuiUnavailable as exc:
        report.notes.append(f"window not measured: {exc}")
        say(f"skipping the window: {exc}")
        return
    home = Path(tempfile.mkdtemp(prefix="fashiongan-bench-"))
    env = os.environ | {"DISPLAY": display, "FASHIONGAN_HOME": str(home), "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1"}
    try:
        say(f"window: bare Tk floor on {display}")
        floor = _time_tk_floor(display, env)
        say("window: starting main.py")
        _measure_app_window(report, display, env, home, floor, turns, timeout)
    finally:
        stop_process(xvfb)
        shutil.rmtree(home, ignore_errors=True)


def _time_tk_floor(display: str, env: dict) -> float | None:
    proc = subprocess.Popen([sys.executable, "-c", TK_FLOOR], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        found = _window_visible(display, FLOOR_WINDOW, proc, 60)
        return found[1] if found else None
    finally:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            stop_process(proc)


def _measure_app_window(report: Report, display: str, env: dict, home: Path, floor: float | None,
                        turns: int, timeout: float) -> None:
    out_path = home / "app-output.txt"
    log_path = home / "logs" / "fashiongan.log"
    started_wall, started = time.time(), time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(app_command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    details: dict = {}
    try:
        found = _window_visible(display, WINDOW_NAME, proc, 120)
        if not found:
            report.notes.append(f"window not measured: main.py showed no window ({_tail(out_path)})")
            return
        window, visible_s = found
        report.add(Stage("window_visible_s", "Window visible after launch", round(visible_s, 3), "s",
                         round_or_none(floor), "bare Tk window", f"< {TARGET_WINDOW_S:g} s",
                         visible_s < TARGET_WINDOW_S))
        # Typed at once: it waits behind the loading job and is answered when the models are ready.
        _type(display, window, GUI_PROMPTS[0])
        ready_wall = _wait(lambda: _ready_at(log_path), timeout, 0.05, proc)
        if ready_wall:
            report.add(Stage("models_ready_s", "Models ready after launch (app log)",
                             round(ready_wall - started_wall, 2), "s"))
        first = _wait(lambda: _bot_records(home), timeout, 0.05, proc)
        if first:
            report.add(Stage("first_reply_s", "First answer, typed when the window showed",
                             round(time.monotonic() - started, 2), "s",
                             note="from launch; includes loading the models"))
        latencies = _gui_turns(display, window, home, turns, timeout, proc)
        if latencies:
            report.add(Stage("gui_turn_p50_ms", "Chat turn in the window, Enter -> answer saved (p50)",
                             round(percentile(latencies, 50) * 1000, 1), "ms",
                             note=f"{len(latencies)} turns; includes typing the Enter key, Tk drawing, history write"))
            details["gui_turns_ms"] = [round(x * 1000, 1) for x in latencies]
        peak = _vm_hwm_mb(proc.pid)
        if peak is not None:
            report.add(Stage("app_memory_mb", "App peak resident memory (window process)", round(peak), "MB",
                             target=f"< {TARGET_MEMORY_MB:g} MB", ok=peak < TARGET_MEMORY_MB,
                             note="VmHWM (= ru_maxrss) after the answers above"))
        _xdo(display, "mousemove", "--window", window, *INPUT_XY)
        _xdo(display, "key", "ctrl+q")
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            report.notes.append("the window did not close on Ctrl+Q within 30 s")
    finally:
        stop_process(proc)
        output = out_path.read_text(errors="replace") if out_path.exists() else ""
        if "Traceback" in output:
            report.notes.append(f"main.py printed a traceback: {_tail(out_path)}")
        report.details["gui"] = details


def _type(display: str, window: str, text: str) -> None:
    _xdo(display, "mousemove", "--window", window, *INPUT_XY)
    _xdo(display, "type", "--delay", "12", text)
    _xdo(display, "key", "Return")


def _gui_turns(display: str, window: str, home: Path, turns: int, timeout: float, proc) -> list[float]:
    out = []
    for prompt in GUI_PROMPTS[1 : 1 + turns]:
        before = len(_bot_records(home))
        _xdo(display, "mousemove", "--window", window, *INPUT_XY)
        _xdo(display, "type", "--delay", "12", prompt)
        sent = time.monotonic()
        _xdo(display, "key", "Return")
        if not _wait(lambda n=before: len(_bot_records(home)) > n, timeout, 0.01, proc):
            break
        out.append(time.monotonic() - sent)
    return out


def _tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
    except OSError:
        return "no output"

