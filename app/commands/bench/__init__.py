"""`python main.py bench [--json]`: speed, memory and start-up measured on this machine.

Each stage is timed through the code the app runs (ModelService, Bot, Worker; `python main.py` itself
for the window) and next to its *floor*, the bare model work measured in the same run, so overhead
shows as a ratio: a chat turn against detector + text encoder forward + generator forward (4 images)
+ embedding forward and catalogue search; `generate()` against the generator's forward pass; the
window against a bare Tk window. The caption-embedding cache is cleared before every timed request,
so repeated captions cannot flatter the numbers (the hits it still counts happen inside one turn).

The window is measured under a private Xvfb display (or $DISPLAY) with xdotool: `main.py` is started
with a temporary FASHIONGAN_HOME, a request is typed as soon as the window shows, and its log and
history file say when the models were ready and the answer arrived. Without Xvfb/xdotool that part is
skipped with a note. The machine (CPU, cores, GPU, torch threads) and its load average are printed
with the numbers: on a busy machine every stage is slower.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from app.commands.bench.xvfb import start_xvfb, stop_process

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]  # the source tree (bench runs main.py from it)
DEFAULT_TURNS = 50           # chat turns timed; the README table uses at least 50
DEFAULT_REPS = 20            # timed repetitions of each model call (after one warm-up)
GEN_BATCHES = (1, 4, 16)     # generator batch sizes
TURN_IMAGES = 4              # images per chat turn (the app's default setting)
SIMILAR_K = 16               # products a chat turn asks the catalogue for (app.chat.bot: SIMILAR_K + 8)
TRAIN_STEPS = 3              # timed training steps (after one warm-up step)
GUI_TURNS = 3                # requests typed into the window once the models are ready
GUI_TIMEOUT_S = 600          # longest wait for the window's models and answers (a loaded machine is slow)
WINDOW_NAME = "FashionGAN"   # the main window's title starts with this
FLOOR_WINDOW = "fashiongan-bench-tk-floor"
INPUT_XY = ("500", "740")    # a point inside the chat's input box (window coordinates, default size)
READY_LINE = re.compile(r"models ready|loaded catalogue in|similar products unavailable|loading the models failed")

# Targets from issue 7, for a 2-core CPU machine.
TARGET_TURN_MS = 150.0
TARGET_TURN_RATIO = 2.0
TARGET_WINDOW_S = 1.0
TARGET_MEMORY_MB = 1536.0

COLOURS = ["red", "navy blue", "black", "white", "green", "yellow", "pink", "grey", "brown", "purple",
           "orange", "beige", "maroon", "olive", "teal"]
ITEMS = ["dress", "shirt", "jeans", "sneakers", "handbag", "t-shirt", "skirt", "jacket", "sweater", "heels",
         "shorts", "kurta", "backpack", "sandals", "trousers", "cap"]
WHO = ["", " for men", " for women", " for a party", " for the office", " for sports"]
OTHER_MESSAGES = ["hi there", "what can you do?", "thanks!", "make it green", "not black", "show me more",
                  "same but for women", "with long sleeves", "I need something for a wedding", "bye"]
GUI_PROMPTS = ["a red dress for a party", "make it blue", "black leather jacket for men", "white sneakers",
               "a green skirt for women"]
TK_FLOOR = (f"import tkinter as tk; r = tk.Tk(); r.title({FLOOR_WINDOW!r}); r.geometry('1180x780'); "
            "r.update(); r.after(1500, r.destroy); r.mainloop()")


def chat_prompts(n: int) -> list[str]:
    """`n` distinct shopping requests (up to 1,440), each naming a colour and an item: full turns."""
    out = []
    for i in range(n):  # colour x item pairs repeat only every 240 prompts, and then `who` differs
        colour, item = COLOURS[i % len(COLOURS)], ITEMS[i % len(ITEMS)]
        who = WHO[(i + i // (len(COLOURS) * len(ITEMS))) % len(WHO)]
        out.append(f"{'a ' if i % 2 else ''}{colour} {item}{who}")
    return out


# ------------------------------------------------------------------------------------------- results


@dataclass
class Stage:
    key: str
    label: str
    value: float | None               # None: not measured (see note)
    unit: str                         # ms | s | MB | msg/s | img/s
    floor: float | None = None        # the bare work, same unit, same run
    floor_label: str = ""
    target: str = ""                  # e.g. "< 150 ms"
    ok: bool | None = None            # target met (None: no target or not measured)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        # rates (bigger is better) compare the other way round: overhead is always >= 1
        return self.floor / self.value if self.unit.endswith("/s") else self.value / self.floor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return d


@dataclass
class Report:
    machine: dict
    settings: dict
    stages: dict[str, Stage] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, stage: Stage) -> Stage:
        self.stages[stage.key] = stage
        return stage

    def to_dict(self) -> dict:
        checks = [s.ok for s in self.stages.values() if s.ok is not None]
        return {"machine": self.machine, "settings": self.settings,
                "stages": {k: s.to_dict() for k, s in self.stages.items()}, "details": self.details,
                "notes": self.notes, "targets_met": all(checks) if checks else None}


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def timed(fn: Callable[[], object], reps: int, warmup: int = 1) -> list[float]:
    """Seconds per call, `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _samples(report: Report, key: str, seconds: list[float]) -> None:
    """Every timed call in ms, in the JSON: on a busy machine the spread says more than the median."""
    report.details.setdefault("samples_ms", {})[key] = [round(x * 1000, 2) for x in seconds]


def paired(measured: Callable[[], object], floor: Callable[[], object], reps: int,
           warmup: int = 1) -> tuple[list[float], list[float]]:
    """Both callables timed `reps` times, alternating, so that both see the same machine load."""
    for _ in range(warmup):
        measured()
        floor()
    a, b = [], []
    for _ in range(reps):
        for fn, out in ((measured, a), (floor, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return a, b


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- machine


def machine_info(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": _round(memory_gb, 1),
            "gpu": ", ".join(gpus) or "none", "device": device, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": _loadavg(), "time": datetime.now().isoformat(timespec="seconds")}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _round(x, digits=3):
    return None if x is None else round(float(x), digits)


def peak_rss_mb() -> float:
    """ru_maxrss of this process in MB (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ------------------------------------------------------------------------------------------- the window


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
                         _round(floor), "bare Tk window", f"< {TARGET_WINDOW_S:g} s",
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


# ------------------------------------------------------------------------------------------- models


def load_service(report: Report, device: str, threads: int = 0):
    from app.chat.service import ModelService

    say("loading the models (ModelService.load) ...")
    service = ModelService(device=device, threads=threads)
    start = time.perf_counter()
    service.load(lambda message: say(f"  {message}"))
    total = time.perf_counter() - start
    labels = {"detector": "keyword detector", "text_encoder": "text encoder", "generator": "generator",
              "search_model": "search (embedding) model", "catalogue": "catalogue"}
    for name, label in labels.items():
        if name in service.timings:
            report.add(Stage(f"load_{name}_s", f"Load {label}", round(service.timings[name], 3), "s",
                             note="includes first imports" if name in ("detector", "text_encoder") else ""))
    report.add(Stage("load_total_s", "Load all models (in process)", round(total, 2), "s"))
    if getattr(service, "catalog_error", None):
        report.notes.append(f"catalogue unavailable, retrieval not measured: {service.catalog_error}")
    return service


def measure_detector(report: Report, service, reps: int) -> None:
    messages = chat_prompts(150) + OTHER_MESSAGES * 5
    detector = service.detector
    detector("warm up")
    start = time.perf_counter()
    for text in messages:
        detector(text)
    per_call = time.perf_counter() - start
    start = time.perf_counter()
    list(detector.pipe(messages))
    batched = time.perf_counter() - start
    report.add(Stage("detector_msgs_per_s", "Keyword detector throughput (one call per message)",
                     round(len(messages) / per_call, 1), "msg/s", round(len(messages) / batched, 1),
                     "same pipeline, one batch (nlp.pipe)", note=f"{len(messages)} messages"))


def _clear_caption_cache(encoder) -> None:
    cache = getattr(encoder, "_cache", None)
    if isinstance(cache, dict):
        cache.clear()


def measure_encoder(report: Report, service, reps: int) -> None:
    import torch

    encoder = service.encoder
    texts = iter(chat_prompts(reps + 1))
    tokens = encoder.tokenize(["navy blue shirts, men"])

    def encode():
        _clear_caption_cache(encoder)
        encoder.encode([next(texts)])

    def bare():
        with torch.inference_mode():
            encoder.model(**{k: v.to(encoder.device) for k, v in tokens.items()})

    latencies, floors = paired(encode, bare, reps)
    _samples(report, "encoder_ms", latencies)
    report.add(Stage("encoder_ms", "Text encoder, one new caption (p50)", round(percentile(latencies, 50) * 1000, 2),
                     "ms", round(percentile(floors, 50) * 1000, 2), "MiniLM forward, tokens ready"))


def measure_generator(report: Report, service, reps: int) -> None:
    import torch

    from models.sampling import seed_noise

    gen = service.generator
    embedding = service.encoder.encode(["red dresses, party"])[0]
    for batch in GEN_BATCHES:
        seeds = list(range(batch))
        z = seed_noise(seeds, gen.config.z_dim).to(gen.device)
        text = embedding.reshape(1, -1).to(gen.device).expand(batch, -1)

        def forward(z=z, text=text):
            with torch.inference_mode():
                gen.net(z, text)
            if gen.device.type == "cuda":
                torch.cuda.synchronize()

        latencies, floors = paired(lambda s=seeds: gen.generate(embedding, s), forward, reps)
        _samples(report, f"generator_b{batch}_ms", latencies)
        p50, floor = percentile(latencies, 50), percentile(floors, 50)
        report.add(Stage(f"generator_b{batch}_ms", f"Generator, batch {batch} (p50)", round(p50 * 1000, 2), "ms",
                         round(floor * 1000, 2), "forward pass only"))
        report.add(Stage(f"generator_b{batch}_img_per_s", f"Generator images/s, batch {batch}",
                         round(batch / p50, 1), "img/s", round(batch / floor, 1), "forward pass only"))


def measure_retrieval(report: Report, service, reps: int) -> None:
    if getattr(service, "retriever", None) is None:
        report.add(Stage("retrieval_ms", "Retrieval: similar products (p50)", None, "ms",
                         note=f"not measured: {getattr(service, 'catalog_error', None) or 'no catalogue'}"))
        return
    retriever = service.retriever
    captions = iter(list(dict.fromkeys(service.detect(p).caption for p in chat_prompts(3 * reps + 3))) * 2)
    images = service.generator.generate(service.encoder.encode(["blue jeans"])[0], list(range(TURN_IMAGES)))
    vector = retriever.text_vectors(["blue jeans"])[0]

    def similar():
        _clear_caption_cache(service.encoder)
        service.similar_products(caption=next(captions), images=images, k=SIMILAR_K)

    def bare():
        retriever.model.embed_images(images)
        retriever.catalogue.search(vector, SIMILAR_K)

    latencies, floors = paired(similar, bare, reps)
    search = timed(lambda: retriever.catalogue.search(vector, SIMILAR_K), reps)
    _samples(report, "retrieval_ms", latencies)
    report.add(Stage("retrieval_ms", f"Retrieval: similar products for caption + {TURN_IMAGES} images (p50)",
                     round(percentile(latencies, 50) * 1000, 2), "ms", round(percentile(floors, 50) * 1000, 2),
                     "image embedding + catalogue search",
                     note=f"{len(retriever.catalogue)} products, k={SIMILAR_K}, includes the caption's encoding"))
    report.add(Stage("catalogue_search_ms", "Catalogue search alone (p50)", round(percentile(search, 50) * 1000, 3),
                     "ms", note=f"{len(retriever.catalogue)} products, exact matrix product"))


# ------------------------------------------------------------------------------------------- chat turns


class CacheCounter:
    """Wraps the service's text encoder: counts caption-embedding cache hits and misses."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.hits = self.misses = 0
        self._encode = encoder.encode
        encoder.encode = self.encode  # this process's own service object only

    def encode(self, texts, *args, **kwargs):
        cache = getattr(self.encoder, "_cache", {})
        for text in texts:
            if text in cache:
                self.hits += 1
            else:
                self.misses += 1
        return self._encode(texts, *args, **kwargs)

    def restore(self) -> None:
        self.encoder.encode = self._encode


class BenchSettings:
    images_per_request = TURN_IMAGES
    seed_mode = "random"
    fixed_seed = 0


def run_turns(service, prompts: list[str], clear_cache: bool = True,
              after: Callable[[str, object], None] | None = None) -> tuple[list[float], list[str], list]:
    """Each prompt as the window sends it: a Worker job calling Bot.respond (every prompt names a new item,
    so each is a new request). Returns seconds from submit to the result event, captions and replies.
    `after(prompt, reply)` runs after each turn, untimed (the floor is measured there, next to its turn)."""
    from app.chat.bot import Bot
    from app.chat.worker import CANCELLED, ERROR, RESULT, Worker

    worker = Worker(name="bench-worker").start()
    catalogue_ready = getattr(service, "retriever", None) is not None
    latencies, captions, replies = [], [], []
    bot = Bot(service, BenchSettings())
    bot.catalogue_ready = catalogue_ready
    try:
        for prompt in prompts:
            if clear_cache:
                _clear_caption_cache(service.encoder)
            start = time.perf_counter()
            request_id = worker.submit(lambda job, b=bot, p=prompt: b.respond(p, job.check), group="chat")
            while True:
                event = worker.events.get(timeout=600)
                if event.request_id == request_id and event.kind in (RESULT, ERROR, CANCELLED):
                    break
            latencies.append(time.perf_counter() - start)
            if event.kind != RESULT:
                raise RuntimeError(f"chat turn {prompt!r} failed: {getattr(event.data, 'message', event.kind)}")
            captions.append(event.data.caption)
            replies.append(event.data)
            if after is not None:
                after(prompt, event.data)
    finally:
        worker.stop()
    return latencies, captions, replies


def turn_floor(service, prompt: str, caption: str, images: list) -> float:
    """The bare model work of one turn, in seconds: detect + MiniLM forward + generator forward (4)
    + image embedding of the 4 images + catalogue search."""
    import numpy as np
    import torch

    from models.sampling import seed_noise

    start = time.perf_counter()
    service.detector(prompt)
    t_detect = time.perf_counter() - start
    tokens = service.encoder.tokenize([caption])
    gen = service.generator
    z = seed_noise(list(range(TURN_IMAGES)), gen.config.z_dim).to(gen.device)
    with torch.inference_mode():
        start = time.perf_counter()
        hidden = service.encoder.model(**{k: v.to(service.encoder.device) for k, v in tokens.items()})
        t_encode = time.perf_counter() - start
        text = hidden.last_hidden_state.mean(1)[:1].to(gen.device).expand(TURN_IMAGES, -1)
        start = time.perf_counter()
        gen.net(z, text)
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
        t_generate = time.perf_counter() - start
    t_search = 0.0
    retriever = getattr(service, "retriever", None)
    if retriever is not None and images:
        pixels = np.stack([np.asarray(im) for im in images])
        start = time.perf_counter()
        vector = retriever.model.embed_images(pixels).mean(0)
        retriever.catalogue.search(vector, SIMILAR_K)
        t_search = time.perf_counter() - start
    return t_detect + t_encode + t_generate + t_search


def measure_chat(report: Report, service, turns: int, one_thread_turns: int) -> None:
    import torch

    prompts = chat_prompts(turns + 1)
    say(f"chat: {turns} turns through Worker + Bot + ModelService ...")
    run_turns(service, prompts[:1])  # warm-up (first-call allocations), not counted
    counter = CacheCounter(service.encoder)
    floors: list[float] = []

    def floor_after(prompt: str, reply) -> None:  # right after its turn: the same machine load
        floors.append(turn_floor(service, prompt, reply.caption or "", [im.image for im in reply.images]))

    try:
        latencies, captions, replies = run_turns(service, prompts[1:], after=floor_after)
    finally:
        counter.restore()
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    floor50 = percentile(floors, 50)
    ratio = p50 / floor50 if floor50 else None
    ok = p50 * 1000 < TARGET_TURN_MS and (ratio is not None and ratio <= TARGET_TURN_RATIO)
    with_images = sum(1 for r in replies if r.images)
    with_products = sum(1 for r in replies if r.similar)
    report.add(Stage("chat_turn_p50_ms", f"Chat turn: detect + encode + generate {TURN_IMAGES} + retrieve (p50)",
                     round(p50 * 1000, 1), "ms", round(floor50 * 1000, 1), "bare model work (p50)",
                     f"< {TARGET_TURN_MS:g} ms and <= {TARGET_TURN_RATIO:g}x floor", ok,
                     f"{len(latencies)} distinct requests; {with_images} with images, {with_products} with products"))
    report.add(Stage("chat_turn_p95_ms", "Chat turn (p95)", round(p95 * 1000, 1), "ms",
                     round(percentile(floors, 95) * 1000, 1), "bare model work (p95)"))
    report.details["chat"] = {
        "turns": len(latencies), "distinct_prompts": len(set(prompts[1:])), "distinct_captions": len(set(captions)),
        "latencies_ms": [round(x * 1000, 1) for x in latencies], "floors_ms": [round(x * 1000, 1) for x in floors],
        "caption_cache": {"cleared_before_each_turn": True, "hits": counter.hits, "misses": counter.misses,
                          "note": "hits are the retrieval reusing the caption the generator encoded in the same turn"},
        "replies_with_images": with_images, "replies_with_products": with_products,
    }
    threads = torch.get_num_threads()
    if threads > 1 and one_thread_turns > 0:
        torch.set_num_threads(1)
        try:
            extra = chat_prompts(turns + 1 + one_thread_turns)[turns + 1 :]
            lat1, _, _ = run_turns(service, extra)
        finally:
            torch.set_num_threads(threads)
        report.add(Stage("chat_turn_p50_1thread_ms", "Chat turn with 1 torch thread (p50, for comparison)",
                         round(percentile(lat1, 50) * 1000, 1), "ms",
                         note=f"{len(lat1)} turns; the app uses {threads} threads"))
        if percentile(lat1, 50) < 0.5 * p50:
            report.notes.append(f"with 1 torch thread a chat turn took {percentile(lat1, 50) * 1000:.0f} ms against "
                                f"{p50 * 1000:.0f} ms with {threads}: torch's threads wait on each other while "
                                "other programs hold the cores (set --threads 1, or torch.set_num_threads(1))")


# ------------------------------------------------------------------------------------------- training


def measure_training(report: Report, device: str, steps: int) -> None:
    from dataclasses import fields

    from models.checkpoint import load_checkpoint
    from models.config import TrainConfig
    from models.resources import GENERATOR_WEIGHTS
    from models.training.gan import Trainer

    pack = ROOT / "tests" / "fixtures" / "pack" / "mini.npz"
    if not pack.exists():
        report.notes.append(f"training not measured: {pack} is missing (a source checkout has it)")
        return
    bundled = load_checkpoint(GENERATOR_WEIGHTS)
    gan, train = bundled["config"]["gan"], dict(bundled.get("train") or {})
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in train.items() if k in known}
    if base.get("image_encoder"):  # the bundled run's paths are relative to the repository
        encoder = Path(base["image_encoder"])
        encoder = encoder if encoder.is_absolute() else ROOT / encoder
        if encoder.exists():
            base["image_encoder"] = str(encoder)
        else:
            report.notes.append(f"training measured without the image condition ({encoder} not found)")
            base["image_encoder"] = ""
    with tempfile.TemporaryDirectory(prefix="fashiongan-bench-train-") as tmp:
        cfg = TrainConfig(**{**base, "data": str(pack), "data_format": "auto", "limit": 0, "holdout": False,
                             "g_width": gan["g_width"], "d_width": gan["d_width"], "steps": steps + 1,
                             "device": device, "threads": 0, "out": str(Path(tmp) / "run"),
                             "cache_dir": str(Path(tmp) / "cache"), "init_from": "",
                             "sample_every": 10**9, "checkpoint_every": 10**9, "log_every": 10**9})
        say(f"training: {steps} steps, batch {cfg.batch}, widths G{cfg.g_width}/D{cfg.d_width} on {pack.name}")
        trainer = Trainer(cfg)

        def step():
            for _ in range(cfg.n_critic):
                trainer.d_step()
            trainer.g_step()
            trainer.step += 1
            if trainer.device.type == "cuda":
                import torch

                torch.cuda.synchronize()

        seconds = timed(step, steps)
    images = cfg.batch * (cfg.n_critic + 1)
    report.add(Stage("train_img_per_s", "Training throughput (bundled configuration)",
                     round(images * len(seconds) / sum(seconds), 1), "img/s",
                     note=f"{len(seconds)} steps of batch {cfg.batch} (G and {cfg.n_critic} D pass), "
                          f"widths {cfg.g_width}/{cfg.d_width}, "
                          f"{'with' if cfg.image_encoder else 'without'} the image condition, "
                          f"{len(trainer.images)} products"))


# ------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3g} ms" if value < 10 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def render_table(report: Report) -> str:
    m = report.machine
    lines = [f"FashionGAN benchmark, {m['time']}",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB RAM, "
             f"GPU: {m['gpu']}; device {m['device']}",
             f"torch {m['torch']}, {m['torch_threads']} threads; Python {m['python']}; "
             f"load average {m['loadavg_start']} at start, {m.get('loadavg_end')} at end", ""]
    rows = [("Stage", "Measured", "Floor (same run)", "Ratio", "Target", "")]
    for s in report.stages.values():
        floor = f"{_fmt(s.floor, s.unit)} ({s.floor_label})" if s.floor else ""
        ratio = f"{s.ratio:.2f}x" if s.ratio is not None else ""
        status = "" if s.ok is None else ("ok" if s.ok else "MISSED")
        rows.append((s.label, _fmt(s.value, s.unit), floor, ratio, s.target, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    chat = report.details.get("chat")
    if chat:
        cache = chat["caption_cache"]
        lines += ["", f"Chat turns: {chat['turns']} distinct requests ({chat['distinct_captions']} distinct captions); "
                      f"caption-embedding cache cleared before each turn: {cache['misses']} misses, "
                      f"{cache['hits']} hits ({cache['note']})."]
    notes = [s for s in report.stages.values() if s.note]
    if notes:
        lines += [""] + [f"- {s.label}: {s.note}" for s in notes]
    lines += [f"Note: {n}" for n in report.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Report:
    from models.sampling import limit_torch_threads

    limit_torch_threads(args.threads)  # as the app decides, unless --threads says otherwise
    report = Report(machine_info(args.device), {"turns": args.turns, "reps": args.reps, "skip_gui": args.skip_gui,
                                                 "skip_train": args.skip_train, "threads": args.threads or "app's"})
    machine = report.machine
    if machine["loadavg_start"] and machine["loadavg_start"][0] > 0.5 * (machine["usable_cores"] or 1):
        report.notes.append(f"the machine was busy (load average {machine['loadavg_start'][0]} on "
                            f"{machine['usable_cores']} cores): every number is slower than on an idle machine")
    if args.skip_gui:
        report.notes.append("window not measured (--skip-gui)")
    else:
        measure_gui(report, args.gui_turns, args.gui_timeout)
    service = load_service(report, args.device, args.threads)
    say("detector, text encoder, generator, retrieval ...")
    measure_detector(report, service, args.reps)
    measure_encoder(report, service, args.reps)
    measure_generator(report, service, args.reps)
    measure_retrieval(report, service, args.reps)
    measure_chat(report, service, args.turns, min(20, args.turns) if args.threads != 1 else 0)
    peak = peak_rss_mb()
    report.add(Stage("service_memory_mb", "Peak resident memory, models + chat (bench process)", round(peak), "MB",
                     target=f"< {TARGET_MEMORY_MB:g} MB", ok=peak < TARGET_MEMORY_MB,
                     note="ru_maxrss before training; the window process is measured separately"))
    if args.skip_train:
        report.notes.append("training not measured (--skip-train)")
    else:
        measure_training(report, args.device, args.train_steps)
    machine["loadavg_end"] = _loadavg()
    return report


def cmd_bench(args: argparse.Namespace) -> None:
    from app.commands.errors import CliError

    if args.turns < 1 or args.reps < 1 or args.train_steps < 1:
        raise CliError("--turns, --reps and --train-steps must be at least 1")
    report = run(args)
    data = report.to_dict()
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=1, ensure_ascii=False), flush=True)
    else:
        print(render_table(report), flush=True)


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure start-up, model speed, chat turns, memory and training here",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--out", metavar="FILE", help="also write the JSON results to FILE")
    p.add_argument("--turns", type=int, default=DEFAULT_TURNS, help=f"chat turns to time (default {DEFAULT_TURNS})")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS,
                   help=f"repetitions per model call (default {DEFAULT_REPS})")
    p.add_argument("--skip-gui", action="store_true", help="do not start the window")
    p.add_argument("--skip-train", action="store_true", help="do not time training steps")
    p.add_argument("--gui-turns", type=int, default=GUI_TURNS, help="requests typed into the window")
    p.add_argument("--gui-timeout", type=float, default=GUI_TIMEOUT_S, help="seconds to wait for the window's models")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help=f"timed training steps (default {TRAIN_STEPS})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device for the models")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as the app decides: 1 on <= 2 cores)")
    p.set_defaults(func=cmd_bench)
