"""Where the app keeps the user's things: chat history, saved images, settings and logs.

Everything lives under `platformdirs.user_data_dir("FashionGAN")` (logs under `user_log_dir`), never
inside the install or the PyInstaller bundle. Set FASHIONGAN_HOME to put it all under one folder
instead (tests, portable installs): FASHIONGAN_HOME/data and FASHIONGAN_HOME/logs.

Every file is written atomically (a temporary file in the same folder, then `os.replace`), so a crash
never leaves half a history behind (the temporary files a killed write leaves are removed at the next
start); a history that cannot be read is renamed aside, never deleted. Messages past MAX_HISTORY move to
history-archive.jsonl: nothing the user wrote is dropped silently.
No tkinter here: the GUI and the tests use the same code.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)

APP_NAME = "FashionGAN"
ENV_HOME = "FASHIONGAN_HOME"  # one folder for data and logs (tests, portable installs)
HISTORY_VERSION = 1
MAX_HISTORY = 2000            # messages kept in the history; older ones move to the archive when saving
STALE_TEMP_S = 60             # a temporary file this old is a killed write's leftover, not a write in progress
SAVE_SCALE = 4                # saved images are 64x64 outputs upscaled 4x (nearest: exact pixels)
SOFTWARE = "FashionGAN Multimodal Search"
PHOTO_SUFFIX = ".photo"       # kept photos are the user's bytes as they were (JPEG, PNG, ...): opened by content


def user_data_dir() -> Path:
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home) / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_log_dir() -> Path:
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home) / "logs"
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # see temp_files_of
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def temp_files_of(path: Path) -> list[Path]:
    """The temporary files atomic_write_text makes for `path` (never `path` itself)."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def append_json_lines(path: Path, records: list[dict]) -> None:
    """Append one JSON line per record in one write, synced to disk. A write cut off by a crash leaves at most a
    partial last line, which the next append starts after (and read_json_lines skips)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        at_line_start = fh.tell() == 0
        if not at_line_start:
            fh.seek(-1, os.SEEK_END)
            at_line_start = fh.read(1) == b"\n"
        text = "".join(json.dumps(r) + "\n" for r in records)  # ASCII: lone surrogates survive
        fh.write((text if at_line_start else "\n" + text).encode("ascii"))
        fh.flush()
        os.fsync(fh.fileno())


def read_json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file; unreadable lines (a write cut off by a crash) are skipped and logged."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if line.strip():
                    log.warning("%s line %d unreadable: skipped", path, number)
    return records


# --------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    images_per_request: int = 4   # 1..8
    device: str = "auto"          # auto | cpu | cuda
    seed_mode: str = "random"     # random | fixed
    fixed_seed: int = 0           # first seed when seed_mode is fixed
    last_folder: str = ""         # where the last image was opened from; the open dialog starts there
    llm_url: str = ""             # a language model writes the replies (app.chat.llm): its OpenAI-compatible
    llm_model: str = ""           # base URL and model name; "" (the default): the built-in replies
    llm_key: str = field(default="", repr=False)  # its API key, if it needs one (kept here, never logged)

    def validated(self) -> Settings:
        """A copy with every field in its valid range (bad values fall back to the defaults)."""
        default = Settings()
        try:
            n = min(8, max(1, int(self.images_per_request)))
        except (TypeError, ValueError):
            n = default.images_per_request
        try:
            seed = min(2**31 - 100, max(0, int(self.fixed_seed)))
        except (TypeError, ValueError):
            seed = default.fixed_seed
        device = self.device if self.device in ("auto", "cpu", "cuda") else default.device
        mode = self.seed_mode if self.seed_mode in ("random", "fixed") else default.seed_mode
        folder = self.last_folder if isinstance(self.last_folder, str) else default.last_folder
        url, model, key = (v.strip() if isinstance(v, str) else "" for v in (self.llm_url, self.llm_model,
                                                                             self.llm_key))
        return Settings(n, device, mode, seed, folder, url, model, key)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}).validated()


def open_dialog_folder(last_folder: str = "") -> Path:
    """Where the open-image dialog starts: the last folder used, else the user's Pictures folder, else home."""
    if last_folder and Path(last_folder).is_dir():
        return Path(last_folder)
    try:
        import platformdirs

        pictures = Path(platformdirs.user_pictures_dir())
    except Exception:  # noqa: BLE001 - no pictures folder on this platform: home is fine
        pictures = None
    if pictures is not None and pictures.is_dir():
        return pictures
    return Path.home()


# ------------------------------------------------------------------------------------------- saved images


@dataclass
class SavedImage:
    path: Path
    prompt: str
    caption: str
    seed: int | None
    variation: int | None
    created: float


@dataclass
class History:
    messages: list[dict]
    state: dict | None = None    # the bot's current request, so "make it red" works after a restart
    notice: str | None = None    # set when the file was unreadable and a fresh history was started


def slug(text: str, limit: int = 40) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:limit].strip("-") or "image"


class Storage:
    def __init__(self, data_dir: str | Path | None = None):
        self.root = Path(data_dir) if data_dir else user_data_dir()
        self.history_path = self.root / "history.json"
        self.archive_path = self.root / "history-archive.jsonl"  # messages moved out of the history (MAX_HISTORY)
        self.settings_path = self.root / "settings.json"
        self.saved_dir = self.root / "saved"
        self.photos_dir = self.root / "photos"  # copies of the photos attached in the chat (the history's)

    # -- history

    def load_history(self) -> History:
        self.remove_stale_temp_files()  # the app's start: a write killed last time may have left one
        if not self.history_path.exists():
            return History([])
        try:
            data = json.loads(self.history_path.read_text(encoding="utf-8"))
            messages = data["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise ValueError("messages is not a list of objects")
            state = data.get("state")
            return History(messages, state if isinstance(state, dict) else None)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
            aside = self.history_path.with_name(f"history.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.json")
            n = 1
            while aside.exists():
                n += 1
                aside = aside.with_name(f"history.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}.json")
            try:
                os.replace(self.history_path, aside)
            except OSError:
                log.exception("could not move the unreadable history aside")
            log.warning("chat history %s unreadable (%s); moved to %s", self.history_path, exc, aside)
            return History([], None, f"Your chat history could not be read, so a new one was started. "
                                     f"The old file was kept as {aside}.")

    def save_history(self, messages: list[dict], state: dict | None = None) -> list[dict]:
        """Write the history: the last MAX_HISTORY messages; the older ones are appended to the archive first
        (a crash in between archives them twice, never loses them). Returns the messages kept: hold on to
        those, not `messages`, or the same old messages are archived again at each save."""
        kept = messages[-MAX_HISTORY:]
        dropped = messages[:-MAX_HISTORY]
        if dropped:
            append_json_lines(self.archive_path, dropped)
            log.info("history over %d messages: %d older ones moved to %s", MAX_HISTORY, len(dropped),
                     self.archive_path)
        payload = {"version": HISTORY_VERSION, "messages": kept, "state": state}
        atomic_write_text(self.history_path, json.dumps(payload, indent=1))  # ASCII: lone surrogates survive
        return kept

    def load_archive(self) -> list[dict]:
        """The messages moved out of the history, oldest first."""
        return read_json_lines(self.archive_path) if self.archive_path.exists() else []

    def remove_stale_temp_files(self, max_age_s: float = STALE_TEMP_S) -> list[Path]:
        """Delete the temporary files of killed atomic writes (older than max_age_s: a younger one may be
        another instance's write in progress). Returns what was deleted."""
        removed = []
        now = time.time()
        for path in [*temp_files_of(self.history_path), *temp_files_of(self.settings_path)]:
            try:
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    removed.append(path)
            except OSError as exc:  # gone already (another instance), or not ours to delete
                log.debug("cannot remove %s: %s", path, exc)
        if removed:
            log.info("removed %d temporary file(s) left by interrupted writes in %s", len(removed), self.root)
        return removed

    def clear_history(self) -> None:
        """An empty history; the photos it kept go with it (saved images stay)."""
        self.save_history([], None)
        for path in self.photos_dir.glob(f"*{PHOTO_SUFFIX}") if self.photos_dir.is_dir() else []:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)

    # -- photos attached in the chat

    def keep_photo(self, source: str | Path) -> str:
        """Copy a photo the user attached into the data folder, so the turn can be drawn again after a restart
        (their own file may move or go). Returns its name for the history record; the same bytes are kept once.
        Raises OSError."""
        data = Path(source).read_bytes()
        name = hashlib.sha256(data).hexdigest()[:24] + PHOTO_SUFFIX
        path = self.photos_dir / name
        if not path.exists():
            self.photos_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.photos_dir, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return name

    def photo_path(self, name: str) -> Path:
        """The kept photo a history record names; ValueError for a name that is not one keep_photo gives."""
        if not isinstance(name, str) or not re.fullmatch(r"[0-9a-f]{24}" + re.escape(PHOTO_SUFFIX), name):
            raise ValueError(f"not a kept photo: {name!r}")
        return self.photos_dir / name

    # -- settings

    def load_settings(self) -> Settings:
        try:
            return Settings.from_dict(json.loads(self.settings_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return Settings()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("settings %s unreadable (%s); using the defaults", self.settings_path, exc)
            return Settings()

    def save_settings(self, settings: Settings) -> None:
        atomic_write_text(self.settings_path, json.dumps(asdict(settings.validated()), indent=1))

    # -- saved images

    def save_image(self, image, prompt: str, seed: int | None, caption: str = "",
                   variation: int | None = None) -> Path:
        """Save as PNG with prompt, caption and seed in its text chunks; never overwrites a file."""
        from PIL import Image, PngImagePlugin

        self.saved_dir.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", prompt or "")
        info.add_text("caption", caption or "")
        if seed is not None:
            info.add_text("seed", str(seed))
        if variation is not None:
            info.add_text("variation", str(variation))
        info.add_text("Source-Size", f"{image.width}x{image.height}")
        info.add_text("Software", SOFTWARE)
        info.add_text("Creation Time", time.strftime("%Y-%m-%dT%H:%M:%S"))
        big = image.convert("RGB").resize((image.width * SAVE_SCALE, image.height * SAVE_SCALE),
                                          Image.Resampling.NEAREST)
        stem = slug(caption or prompt)
        stem += f"_seed{seed}" if seed is not None else ""
        stem += f"_v{variation}" if variation is not None else ""
        for n in range(1, 10_000):
            path = self.saved_dir / (f"{stem}.png" if n == 1 else f"{stem}-{n}.png")
            try:
                with open(path, "xb") as fh:  # exclusive create: an existing file is never replaced
                    big.save(fh, format="PNG", pnginfo=info)
                log.info("saved %s", path)
                return path
            except FileExistsError:
                continue
        raise OSError(f"too many saved images named {stem} in {self.saved_dir}")

    def saved_images(self) -> list[SavedImage]:
        """The saved PNGs, newest first, with the metadata they carry."""
        if not self.saved_dir.is_dir():
            return []
        out = []
        for path in self.saved_dir.glob("*.png"):
            out.append(read_saved(path))
        return sorted(out, key=lambda s: s.created, reverse=True)


def read_saved(path: str | Path) -> SavedImage:
    from PIL import Image

    path = Path(path)
    text: dict = {}
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, ValueError, SyntaxError):  # a foreign or damaged file in the folder
        log.warning("cannot read %s", path)

    def as_int(value):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    try:
        created = path.stat().st_mtime
    except OSError:
        created = 0.0
    return SavedImage(path, text.get("prompt", ""), text.get("caption", ""), as_int(text.get("seed")),
                      as_int(text.get("variation")), created)
