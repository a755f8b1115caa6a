"""Smoke tests of the frozen desktop app (PyInstaller onedir bundle from packaging/fashiongan.spec).

Slow: the build takes about 5 minutes on two cores. Set FASHIONGAN_FROZEN_DIR to an existing bundle
(e.g. dist/FashionGAN after `make package`) to skip the build. Every frozen run happens in a scratch
working directory with FASHIONGAN_HOME and the XDG folders pointed at a temporary folder, so the app can
only find its files through the bundle, and the test can check that it writes nothing inside it.

The GUI part starts `Xvfb` when DISPLAY is unset, waits for the window with `xdotool search`, records
the start-up time and saves screenshots under test-artifacts/ (ImageMagick's `import`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "fashiongan.spec"
APP_NAME = "FashionGAN"
EXE_NAME = APP_NAME + (".exe" if sys.platform == "win32" else "")
ARTIFACTS = ROOT / "test-artifacts"
BUILD_DIR = ROOT / "build" / "test-frozen"   # dist/ and work/ of the test's own build
BUILD_TIMEOUT = 40 * 60                      # seconds; about 5 minutes here
MAX_BUNDLE_BYTES = 1_000_000_000             # the size budget: 1.0 GB
RUN_TIMEOUT = 300                            # one frozen CLI run (model loading included)
GUI_RUNS = int(os.environ.get("FASHIONGAN_GUI_RUNS", "3"))  # start-ups measured; the median is reported
GUI_WINDOW_TIMEOUT = 60                      # seconds to wait for the window before failing
GUI_EXIT_TIMEOUT = 90                        # seconds for the app to quit after Ctrl+Q
GUI_STARTUP_BUDGET = float(os.environ.get("FASHIONGAN_STARTUP_BUDGET", "3.0"))  # median, seconds
DETECT_TEXTS = ["a red dress for a party", "formal shoes for men, not black"]
REPORT: dict = {}                            # measurements, written to test-artifacts/frozen-report.json


# ------------------------------------------------------------------------------------------ helpers


def bundle_listing(bundle: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file and folder in the bundle."""
    listing = {}
    for folder, dirs, files in os.walk(bundle):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            listing[str(path.relative_to(bundle))] = (st.st_size if name in files else -1, st.st_mtime_ns)
    return listing


def assert_bundle_unchanged(bundle: Path, before: dict) -> None:
    after = bundle_listing(bundle)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(after) & set(before) if after[k] != before[k] and before[k][0] != -1)
    assert not (added or removed or changed), (
        f"the frozen app wrote inside its bundle: added {added[:10]}, removed {removed[:10]}, "
        f"changed {changed[:10]}"
    )


def dir_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def write_report() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "frozen-report.json").write_text(json.dumps(REPORT, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The onedir bundle: FASHIONGAN_FROZEN_DIR if set, else a fresh build under build/test-frozen/."""
    given = os.environ.get("FASHIONGAN_FROZEN_DIR")
    if given:
        path = Path(given).resolve()
        if not (path / EXE_NAME).is_file():
            pytest.fail(f"FASHIONGAN_FROZEN_DIR={given} holds no {EXE_NAME}: build with `make package`")
        REPORT["bundle"] = str(path)
        return path
    if not (ROOT / "weights" / "generator.pt").exists():
        pytest.fail("weights/generator.pt is missing: it is shipped with the app, nothing to bundle")
    dist, work = BUILD_DIR / "dist", BUILD_DIR / "work"
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(dist),
           "--workpath", str(work), str(SPEC)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    REPORT["build_seconds"] = round(time.perf_counter() - start, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "frozen-build.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    assert proc.returncode == 0, f"PyInstaller failed; see test-artifacts/frozen-build.log\n{proc.stderr[-3000:]}"
    path = dist / APP_NAME
    REPORT["bundle"] = str(path)
    write_report()
    return path


@pytest.fixture(scope="module")
def listing_before(bundle: Path) -> dict:
    return bundle_listing(bundle)


@pytest.fixture
def frozen_env(tmp_path: Path) -> dict:
    """Environment for a frozen run: user data, caches and config under tmp_path, no Python paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    home = tmp_path / "user"
    env.update({
        "FASHIONGAN_HOME": str(home / "fashiongan"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    return env


def run_frozen(bundle: Path, args: list[str], env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([str(bundle / EXE_NAME), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=RUN_TIMEOUT)
    return proc, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ layout


def test_bundle_carries_its_files_and_fits_the_size_budget(bundle: Path):
    data = bundle / "_internal"
    for rel in ["weights/generator.pt", "assets/lexicon.json", "assets/title_nb.json",
                "assets/icons/fashiongan.png", "minilm/config.json", "minilm/tokenizer.json",
                "minilm/vocab.txt", "minilm/model.safetensors"]:
        assert (data / rel).is_file(), f"{rel} is missing from the bundle"
    assert list(data.glob("tkinterdnd2/tkdnd/*/pkgIndex.tcl")), "TkDND (drag and drop) is missing from the bundle"
    for rel in ["torch/test", "scipy", "spacy/tests"]:
        assert not (data / rel).exists(), f"{rel} should have been left out of the bundle"
    size = dir_size(bundle)
    REPORT["bundle_bytes"] = size
    biggest = sorted(((dir_size(p), p.name) for p in data.iterdir() if p.is_dir()), reverse=True)[:10]
    REPORT["biggest_folders_mb"] = {name: round(s / 1e6, 1) for s, name in biggest}
    write_report()
    assert size <= MAX_BUNDLE_BYTES, f"bundle is {size / 1e9:.2f} GB, over the 1.0 GB budget: {biggest}"


REQUIRED_DATA = ["weights/generator.pt", "weights/embedding.pt", "weights/SHA256SUMS", "assets/lexicon.json",
                 "assets/title_nb.json", "assets/catalog/catalog.npz", "assets/icons/fashiongan.png"]
SKIPPED_NAMES = {".gitattributes", ".gitkeep", "README.md"}  # what packaging/fashiongan.spec leaves out


def source_data_files() -> set[str]:
    """What packaging/fashiongan.spec bundles from weights/ and assets/, relative to the repository root."""
    files = {f"weights/{p.name}" for p in (ROOT / "weights").glob("*")
             if p.is_file() and (p.suffix in (".pt", ".json", ".md") or p.name == "SHA256SUMS")}
    for path in (ROOT / "assets").rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and path.name not in SKIPPED_NAMES and "__pycache__" not in rel.parts \
                and not any(part.startswith(".") for part in rel.relative_to("assets").parts):
            files.add(rel.as_posix())
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_weights_and_assets_are_the_source_ones(bundle: Path):
    """Every file of weights/ and assets/ in the bundle (lexicon, title model, generator and search weights,
    their SHA256SUMS, the catalogue, icons) has the sha256 of the source tree's file, and none is missing
    or extra: the frozen-vs-source comparisons below then compare the code alone."""
    data = bundle / "_internal"
    bundled = {p.relative_to(data).as_posix() for folder in ("weights", "assets") for p in (data / folder).rglob("*")
               if p.is_file()}
    expected = source_data_files()
    assert set(REQUIRED_DATA) <= expected, sorted(set(REQUIRED_DATA) - expected)
    assert bundled == expected, (f"missing from the bundle: {sorted(expected - bundled)}; "
                                 f"not in the source tree: {sorted(bundled - expected)}")
    differ = [rel for rel in sorted(expected) if sha256(data / rel) != sha256(ROOT / rel)]
    assert not differ, f"bundled files differ from the source tree's (rebuild the bundle): {differ}"


# ------------------------------------------------------------------------------------------ headless CLI


def test_frozen_detect_matches_source(bundle: Path, listing_before: dict, frozen_env: dict, tmp_path: Path):
    proc, seconds = run_frozen(bundle, ["detect", *DETECT_TEXTS], frozen_env, tmp_path)
    REPORT["detect_seconds"] = round(seconds, 2)
    write_report()
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(DETECT_TEXTS)

    from app.chat.detector import get_detector

    detector = get_detector()
    for text, got in zip(DETECT_TEXTS, lines):
        expected = detector(text).to_dict()
        assert set(got) == set(expected)
        assert got["text"] == text and got["caption"]
        # Same lexicon and title model (test_bundled_weights_and_assets_are_the_source_ones): same answer.
        assert got == expected, "the frozen detector disagrees with the source one"
    assert lines[0]["colours"] == ["Red"] and lines[0]["article_types"] == ["Dresses"]

    # Bad input: one line on stderr, exit status 2, no traceback.
    proc, _ = run_frozen(bundle, ["generate"], frozen_env, tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert_bundle_unchanged(bundle, listing_before)


def test_frozen_generate_matches_source(bundle: Path, listing_before: dict, frozen_env: dict, tmp_path: Path):
    from PIL import Image

    args = ["generate", "a red dress for a party", "--n", "2", "--seed", "1234", "--device", "cpu"]
    proc, seconds = run_frozen(bundle, [*args, "--out", str(tmp_path / "frozen")], frozen_env, tmp_path)
    REPORT["generate_seconds"] = round(seconds, 2)
    write_report()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"out": str(tmp_path / "frozen"), "prompts": 1, "images": 2}
    results = json.loads((tmp_path / "frozen" / "results.json").read_text(encoding="utf-8"))
    assert [img["seed"] for img in results[0]["images"]] == [1234, 1235]
    assert {"text", "detection", "caption", "images"} <= set(results[0])

    # The same seed from source, with the bundle's own weights: the very same pixels.
    weights = bundle / "_internal" / "weights" / "generator.pt"
    source = subprocess.run([sys.executable, str(ROOT / "main.py"), *args, "--weights", str(weights),
                             "--out", str(tmp_path / "source")], cwd=ROOT, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    assert source.returncode == 0, source.stderr[-3000:]
    for img in results[0]["images"]:
        frozen = Image.open(tmp_path / "frozen" / img["file"])
        assert frozen.size == (64, 64) and frozen.mode == "RGB"
        from_source = Image.open(tmp_path / "source" / img["file"])
        assert frozen.tobytes() == from_source.tobytes(), f"{img['file']} differs from the source build's"
    assert_bundle_unchanged(bundle, listing_before)


# ------------------------------------------------------------------------------------------ GUI


@pytest.fixture(scope="module")
def display():
    """DISPLAY to use: the current one, or a private Xvfb started for this module."""
    missing = [tool for tool in ("xdotool", "import") if not shutil.which(tool)]
    if os.environ.get("DISPLAY"):
        if missing:
            pytest.skip(f"{' and '.join(missing)} not installed (apt-get install xdotool imagemagick)")
        yield os.environ["DISPLAY"]
        return
    if not shutil.which("Xvfb"):
        missing.append("Xvfb")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install xvfb xdotool imagemagick)")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        number = fh.readline().strip()  # Xvfb writes the display number once it accepts clients
    if not number:
        xvfb.kill()
        pytest.fail("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def find_window(env: dict) -> str | None:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", APP_NAME], env=env,
                           capture_output=True, text=True)
    ids = found.stdout.split()
    return ids[0] if ids else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process (Linux), to tell slow code from a busy machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def launch_gui(bundle: Path, env: dict, cwd: Path) -> tuple[subprocess.Popen, str | None, float, float | None]:
    """Start the frozen app with no arguments: (process, window id or None if it exited, wall seconds to
    the visible window, CPU seconds the app had used by then)."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(bundle / EXE_NAME)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while time.perf_counter() - start < GUI_WINDOW_TIMEOUT:
        window = find_window(env)
        if window:
            return proc, window, time.perf_counter() - start, cpu_seconds(proc.pid)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc, None, time.perf_counter() - start, None


def close_gui(proc: subprocess.Popen, window: str | None, env: dict) -> tuple[bool, str, str]:
    """Ctrl+Q (the app's Quit) with the pointer over the window; SIGTERM if it has not exited in time.
    (graceful, stdout, stderr). Without a window manager the keyboard follows the pointer."""
    if window and proc.poll() is None:
        subprocess.run(["xdotool", "mousemove", "--window", window, "200", "200"], env=env, capture_output=True)
        subprocess.run(["xdotool", "windowfocus", window], env=env, capture_output=True)
        subprocess.run(["xdotool", "key", "--clearmodifiers", "ctrl+q"], env=env, capture_output=True)
    try:
        out, err = proc.communicate(timeout=GUI_EXIT_TIMEOUT)
        return proc.returncode == 0, out, err
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return False, out, err


def test_frozen_gui_opens_and_starts_fast(bundle: Path, listing_before: dict, frozen_env: dict,
                                          display: str, tmp_path: Path):
    from PIL import Image

    env = {**frozen_env, "DISPLAY": display}
    ARTIFACTS.mkdir(exist_ok=True)
    startups, cpu, graceful = [], [], []
    for run in range(GUI_RUNS):
        proc, window, seconds, cpu_used = launch_gui(bundle, env, tmp_path)
        if window is None:
            _, _, err = close_gui(proc, None, env)
            if proc.returncode == 2 and "not available in this build" in err:  # any ImportError in app.gui
                pytest.fail(f"the bundle cannot open its window (tkinter or app.gui missing): {err.strip()}")
            pytest.fail(f"no window titled {APP_NAME!r} after {seconds:.1f} s (exit status {proc.returncode})\n"
                        f"{err[-3000:]}")
        startups.append(seconds)
        cpu.append(cpu_used)
        if run == 0:
            time.sleep(2.0)  # let the first frame settle: the models keep loading in the background
            root_png, window_png = ARTIFACTS / "frozen-gui-root.png", ARTIFACTS / "frozen-gui-window.png"
            for target, name in ((root_png, "root"), (window_png, window)):
                shot = subprocess.run(["import", "-window", name, str(target)], env=env, capture_output=True,
                                      text=True, timeout=60)
                assert shot.returncode == 0, shot.stderr
            with Image.open(window_png) as shot:
                assert shot.width >= 200 and shot.height >= 150, shot.size
                colours = shot.convert("RGB").getcolors(maxcolors=1_000_000)
                assert colours is None or len(colours) > 8, "the window screenshot is blank"
        ok, _, err = close_gui(proc, window, env)
        graceful.append(ok)
        assert "Traceback" not in err, err[-3000:]
    REPORT["gui_startup_seconds"] = [round(s, 2) for s in startups]
    REPORT["gui_startup_median_seconds"] = round(statistics.median(startups), 2)
    REPORT["gui_startup_cpu_seconds"] = [None if c is None else round(c, 2) for c in cpu]
    REPORT["gui_quit_with_ctrl_q"] = graceful
    write_report()
    assert_bundle_unchanged(bundle, listing_before)
    user_files = [p for p in Path(env["FASHIONGAN_HOME"]).rglob("*") if p.is_file()]
    assert user_files, "the frozen GUI wrote nothing under FASHIONGAN_HOME (its log, at least, belongs there)"
    logs = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in user_files if p.suffix == ".log")
    assert "drag and drop unavailable" not in logs, logs[-3000:]
    forced = [run for run, ok in enumerate(graceful) if not ok]
    assert not forced, (f"the frozen app did not exit cleanly on Ctrl+Q in runs {forced} of {len(graceful)} "
                        "(terminated, or a non-zero exit status)")
    assert statistics.median(startups) <= GUI_STARTUP_BUDGET, (
        f"frozen GUI start-up {startups} s (CPU {cpu} s): median over the {GUI_STARTUP_BUDGET} s budget"
    )
