"""End to end: `python main.py` as a user runs it, on a private Xvfb display, typed into with xdotool.

Measures the time until the window is visible and from Enter to the images (both written to
test-artifacts/e2e-timings.json), and keeps screenshots in test-artifacts/ (gitignored). With
UPDATE_SCREENSHOT=1 the first answer's screenshot is also copied to docs/screenshot.png for the README;
E2E_CATALOG=PATH starts the app with `--catalog PATH` (similar products when no catalogue is bundled).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gui_support import start_xvfb, stop
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.gui]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
WINDOW_NAME = "FashionGAN"
FIXTURE_IMAGES = Path(__file__).parent / "fixtures" / "kaggle" / "images"


def xdo(display: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(["xdotool", *args], env=os.environ | {"DISPLAY": display}, capture_output=True,
                          text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"xdotool {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def bot_records_with_images(home: Path) -> list[dict]:
    try:
        data = json.loads((home / "data" / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m for m in data.get("messages", []) if m.get("role") == "bot" and m.get("images")]


def user_texts(home: Path) -> list[str]:
    try:
        data = json.loads((home / "data" / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m.get("text") for m in data.get("messages", []) if m.get("role") == "user"]


def screenshot(display: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["import", "-window", "root", str(path)], env=os.environ | {"DISPLAY": display}, check=True,
                   timeout=60, capture_output=True)
    return path


@pytest.fixture
def xvfb():
    for tool in ("Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install xvfb xdotool imagemagick)")
    display, proc = start_xvfb()
    yield display
    stop(proc)


def test_launch_type_request_and_screenshot(xvfb, tmp_path):
    display = xvfb
    home = tmp_path / "home"
    env = os.environ | {"DISPLAY": display, "FASHIONGAN_HOME": str(home), "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1"}
    log_path = tmp_path / "app-output.txt"
    started = time.monotonic()
    with open(log_path, "wb") as out:
        catalog = ["--catalog", os.environ["E2E_CATALOG"]] if os.environ.get("E2E_CATALOG") else []
        app = subprocess.Popen([sys.executable, "main.py", *catalog], cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        window = wait_for(lambda: xdo(display, "search", "--onlyvisible", "--name", WINDOW_NAME, check=False),
                          60, "the window").split()[0]
        visible_s = time.monotonic() - started

        # Type at once: the models are still loading, so the message waits and is answered when they are.
        # (Once the app has logged that its window is up and focused: keys typed earlier go nowhere.)
        app_log = home / "logs" / "fashiongan.log"
        wait_for(lambda: app_log.exists() and "window shown" in app_log.read_text(), 60, "the app's start", 0.05)
        xdo(display, "mousemove", "--window", window, "500", "740")
        xdo(display, "windowfocus", "--sync", window, check=False)
        xdo(display, "type", "--delay", "30", "a red dress for a party")
        sent = time.monotonic()
        xdo(display, "key", "Return")
        wait_for(lambda: user_texts(home) == ["a red dress for a party"], 60, "the message to be sent", 0.05)
        wait_for(lambda: len(bot_records_with_images(home)) >= 1, 240, "the first images", 0.05)
        first_images_s = time.monotonic() - sent
        time.sleep(1.5)  # let the bubble settle and scroll
        first_shot = screenshot(display, ARTIFACTS / "e2e-first-answer.png")

        # A refinement with the models loaded: the time a user waits for images.
        xdo(display, "type", "--delay", "30", "make it blue")
        sent = time.monotonic()
        xdo(display, "key", "Return")
        records = wait_for(lambda: len(bot_records_with_images(home)) >= 2 and bot_records_with_images(home),
                           120, "the refined images", 0.02)
        refine_s = time.monotonic() - sent
        assert "blue" in records[-1]["caption"] and "dresses" in records[-1]["caption"]
        assert [c[0] for c in records[-1]["chips"]].count("Blue") == 1

        time.sleep(1.5)  # let the last bubble settle and scroll
        shot = screenshot(display, ARTIFACTS / "e2e-chat.png")
        with Image.open(shot) as im:
            colours = im.convert("RGB").getcolors(maxcolors=1_000_000)
            assert colours is None or len(colours) > 200, "the screenshot looks blank"
            assert im.size[0] >= 800

        if os.environ.get("UPDATE_SCREENSHOT"):
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(first_shot, ROOT / "docs" / "screenshot.png")

        # The Upload tab: Ctrl+O opens Tk's file dialog, whose file-name box has the focus.
        xdo(display, "mousemove", "--window", window, "95", "49", "click", "1")  # the "Upload" tab
        time.sleep(0.5)
        xdo(display, "key", "ctrl+o")
        time.sleep(1.5)
        fixture = sorted(FIXTURE_IMAGES.glob("*.jpg"))[0]
        xdo(display, "type", "--delay", "20", str(fixture))
        xdo(display, "key", "Return")
        wait_for(lambda: "reference image opened" in app_log.read_text(), 60, "the reference image", 0.1)
        xdo(display, "mousemove", "--window", window, "600", "125", "click", "1")  # the change box
        xdo(display, "type", "--delay", "30", "in red")
        xdo(display, "key", "Return")
        wait_for(lambda: "upload variants shown" in app_log.read_text(), 60, "the variants", 0.1)
        time.sleep(1.0)
        screenshot(display, ARTIFACTS / "e2e-upload.png")

        timings = {"window_visible_s": round(visible_s, 3), "first_images_incl_model_load_s": round(first_images_s, 2),
                   "refine_to_images_s": round(refine_s, 2)}
        (ARTIFACTS / "e2e-timings.json").write_text(json.dumps(timings, indent=1))
        print(timings)
        assert visible_s < 10, timings  # the 1 s target is measured and reported; this only catches hangs

        xdo(display, "key", "ctrl+q")
        assert app.wait(30) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        output = log_path.read_text(errors="replace")
        (ARTIFACTS / "e2e-app-output.txt").parent.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-app-output.txt").write_text(output)
    assert "Traceback" not in output, output
    app_log = (home / "logs" / "fashiongan.log").read_text()
    assert "window shown" in app_log
    history = json.loads((home / "data" / "history.json").read_text())
    assert [m["text"] for m in history["messages"] if m["role"] == "user"] == ["a red dress for a party",
                                                                                "make it blue"]
