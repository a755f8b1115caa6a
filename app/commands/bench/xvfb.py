"""A private virtual X display (Xvfb) for headless runs: the bench's window timings and the GUI tests."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def start_xvfb(screen: str = "1180x820x24", first: int = 200, timeout: float = 20.0) -> tuple[str, subprocess.Popen]:
    """Start `Xvfb :N` on the first free display number from `first`; returns (":N", process).
    Raises RuntimeError when Xvfb is missing or no display starts."""
    if shutil.which("Xvfb") is None:
        raise RuntimeError("Xvfb is not installed (apt-get install xvfb)")
    for number in range(first, first + 300):
        if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", screen, "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                return f":{number}", proc
            if proc.poll() is not None:
                break  # lost a race for this number: try the next one
            time.sleep(0.05)
        stop_process(proc)
    raise RuntimeError("could not start Xvfb on any display number")


def stop_process(proc: subprocess.Popen | None, wait: float = 5.0) -> None:
    """Terminate, then kill if it lingers; None or an ended process is left alone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _die_with_parent() -> None:
    """Linux: the display gets SIGTERM when its parent dies, so a crash leaves no display behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
