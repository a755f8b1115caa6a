"""The main window: tabs, status bar, settings, and the bridge to the worker thread.

The menus and the Preferences dialog are in app/gui/settings.py; what loads the models on the worker thread
is in app/gui/loading.py.

`run_app(args)` shows the window first (tkinter only: no torch, transformers or spaCy on the main
thread), then loads the models on the worker thread. Messages sent meanwhile wait in the worker's
queue behind the loading job and are answered once it finishes. Every job's events come back
through `Worker.events`, drained every POLL_MS by `App._poll` (the only place results touch widgets);
events of requests the UI no longer waits for (cancelled, cleared) are dropped.
"""
from __future__ import annotations

import gc
import logging
import logging.handlers
import time
import tkinter as tk
import traceback
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from tkinter import ttk

from app.chat.history import bot_record
from app.chat.storage import Settings, Storage, open_dialog_folder, user_log_dir
from app.chat.worker import CANCELLED, ERROR, PROGRESS, RESULT, STARTED, Event, Job, Worker
from app.gui import BG, Dialogs, configure_styles, drops
from app.gui.chat import ChatActions, ChatView, attachment_text
from app.gui.loading import LoadResult, default_service_factory, limit_cpu_threads, load_service
from app.gui.saved import SavedTab
from app.gui.settings import MenuActions, SettingsDialog, build_menu
from app.gui.upload import UploadActions, UploadTab

log = logging.getLogger(__name__)

APP_TITLE = "FashionGAN \u00b7 Shopping Assistant"
POLL_MS = 30                # how often the UI drains the worker's events
MAX_EVENTS_PER_POLL = 40    # the rest wait for the next tick: the UI never stalls on a burst
RESTORE_MESSAGES = 80       # history messages drawn at start; older ones stay in the file
LOG_FILE = "fashiongan.log"
WEIGHTS_FIX = ("To fix it, reinstall FashionGAN, or put a generator checkpoint at that path. From a source "
               "checkout, export one from a training run:\n"
               "    python -m models.train --out runs/gan-v1 --export weights/generator.pt")


def setup_logging(level: str = "WARNING") -> Path:
    """Log to LOG_DIR/fashiongan.log (INFO and up, rotated) besides the console (at `level`)."""
    directory = user_log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOG_FILE
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    console_level = logging.getLevelName(str(level).upper())
    for existing in root.handlers:
        if isinstance(console_level, int):
            existing.setLevel(console_level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def open_upload(path: str):
    """A user's file -> RGB PIL image, or ValueError with a message for the chat."""
    from models.images import open_image

    return open_image(path)


class StatusBar(ttk.Frame):
    def __init__(self, master):
        super().__init__(master, style="Status.TFrame", padding=(10, 3))
        self.state = ttk.Label(self, text="starting ...", style="Status.TLabel")
        self.state.pack(side="left")
        self.detail = ttk.Label(self, text="", style="StatusMuted.TLabel")
        self.detail.pack(side="left", padx=(8, 0))
        self.device = ttk.Label(self, text="Device: \u2013", style="Status.TLabel")
        self.device.pack(side="right")
        self.settings = ttk.Label(self, text="", style="StatusMuted.TLabel")
        self.settings.pack(side="right", padx=(0, 16))
        # Determinate over the loading steps (app.chat.service.LOAD_STEPS): each step's message says
        # which one it is and how many there are.
        self.progress = ttk.Progressbar(self, mode="determinate", maximum=1, length=140)
        self.progress.pack(side="right", padx=(0, 16))

    def show(self, state: str, detail: str = "") -> None:
        self.state.configure(text=state)
        self.detail.configure(text=detail)


class App:
    def __init__(self, root: tk.Tk, *, storage: Storage | None = None, service_factory=None, dialogs=None,
                 catalog: str | None = None, autoload: bool = True, llm_url: str | None = None,
                 llm_model: str | None = None):
        self.root = root
        self.storage = storage or Storage()
        self.settings: Settings = self.storage.load_settings()
        self.dialogs = dialogs or Dialogs(root)
        self.service_factory = service_factory or default_service_factory(catalog)
        self.service = None
        self.bot = None
        self.model_state = "not loaded"   # loading | ready | failed
        self.load_error: str | None = None
        self.history: list[dict] = []
        self.bot_state: dict | None = None
        self.tk_errors: list[str] = []
        self._handlers: dict[int, Callable[[Event], None]] = {}
        self._chat_ids: set[int] = set()
        self._redraw_ids: set[int] = set()
        self._load_message = ""
        self._closed = False
        self.worker = Worker().start()
        self.llm_args = (llm_url, llm_model)  # --llm-url / --llm-model: before FASHIONGAN_LLM_URL and the settings
        self.writer = None                    # app.chat.llm.ReplyWriter: a language model writes the replies
        self._set_writer()

        root.title(APP_TITLE)
        root.geometry("1180x780")
        root.minsize(760, 540)
        root.configure(bg=BG)
        root.report_callback_exception = self._on_tk_error
        self._icon = None
        root.protocol("WM_DELETE_WINDOW", self.close)
        configure_styles(root)
        self._set_icon()
        self._build()
        self._restore_history()
        self._poll_id = root.after(POLL_MS, self._poll)
        if autoload:
            self.load_models()

    # ------------------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        self.menubar = build_menu(self.root, MenuActions(
            attach=self.attach_image, open_saved=lambda: self.saved.open_folder(), clear_history=self.clear_history,
            quit=self.close, preferences=self.open_settings, ask_help=lambda: self.send_message("help"),
            show_paths=self._show_paths))
        self.status = StatusBar(self.root)
        self.status.pack(side="bottom", fill="x")
        self.notebook = ttk.Notebook(self.root)
        self.notebook.pack(fill="both", expand=True)
        self.chat = ChatView(self.notebook, ChatActions(
            send=self.send_message, attach=self.attach_image, save=self.save_image,
            more_like=self.more_like_this, similar=self.similar_products, redraw=self.redraw,
            cancel=self.worker.cancel, photo=self._kept_thumbnail))
        self.upload = UploadTab(self.notebook, UploadActions(
            choose=self.choose_upload, open_path=self.open_upload_path, generate=self.generate_variants,
            save=self.save_image))
        self.saved = SavedTab(self.notebook, self.storage, self.dialogs)
        self.notebook.add(self.chat, text="Chat")
        self.notebook.add(self.upload, text="Upload")
        self.notebook.add(self.saved, text="Saved")
        self.notebook.bind("<<NotebookTabChanged>>", self._on_tab)
        self._show_settings_summary()
        self.chat.input.focus_set()
        self.root.bind("<Control-o>", lambda e: self._open_shortcut())
        self.root.bind("<Control-q>", lambda e: self.close())
        self.root.bind("<Control-comma>", lambda e: self.open_settings())
        self.drops_enabled = self._enable_drops()

    def _enable_drops(self) -> bool:
        """Files dropped on the Upload tab open there; on the Chat tab they are attached (TkDND)."""
        if not drops.enable(self.root):
            return False
        drops.accept_files(self.upload, lambda paths: self._open_dropped(paths, self.open_upload_path))
        drops.accept_files(self.chat, lambda paths: self._open_dropped(paths, self.attach_path))
        self.upload.allow_drops()
        return True

    def _open_dropped(self, paths: list[str], open_one: Callable[[str], object]) -> None:
        if len(paths) > 1:
            self.status.detail.configure(text=f"{len(paths)} files dropped: one image at a time, "
                                              f"so {Path(paths[0]).name} is used")
        self._remember_folder(paths[0])  # a folder the user works in: the open dialog starts there next
        open_one(paths[0])

    def _set_icon(self) -> None:
        from models.resources import ASSETS_DIR

        icon = ASSETS_DIR / "icons" / "fashiongan.png"
        try:
            self._icon = tk.PhotoImage(master=self.root, file=str(icon))
            self.root.iconphoto(True, self._icon)
        except (tk.TclError, OSError):
            log.info("no window icon (%s)", icon)

    def _on_tab(self, event=None) -> None:
        if self.notebook.select() == str(self.saved):
            self.saved.ensure_loaded()

    def _open_shortcut(self) -> None:
        if self.notebook.select() == str(self.upload):
            self.choose_upload()
        else:
            self.attach_image()

    def _show_settings_summary(self) -> None:
        s = self.settings
        seeds = "random seeds" if s.seed_mode == "random" else f"seeds from {s.fixed_seed}"
        replies = f" \u00b7 replies by {self.writer.config.model or self.writer.config.where}" if self.writer else ""
        self.status.settings.configure(text=f"{s.images_per_request} images \u00b7 {seeds}{replies}")

    def _show_paths(self) -> None:
        self.dialogs.info("Where are my files?", f"History and saved images:\n{self.storage.root}\n\n"
                                                 f"Log file:\n{user_log_dir() / LOG_FILE}")

    # -------------------------------------------------------------------------------------- the worker

    def submit(self, fn: Callable[[Job], object], on_event: Callable[[Event], None], group: str = "default",
               supersede: bool = False) -> int:
        request_id = self.worker.submit(fn, group=group, supersede=supersede)
        self._handlers[request_id] = on_event
        return request_id

    def _poll(self) -> None:
        """Drain the worker's events (main thread); reschedules itself until the window closes."""
        self._poll_id = None
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = self.worker.events.get_nowait()
            except Exception:  # queue.Empty
                break
            handler = self._handlers.get(event.request_id)
            if event.kind in (RESULT, ERROR, CANCELLED):
                self._handlers.pop(event.request_id, None)
                self._chat_ids.discard(event.request_id)
            if handler is None:
                continue  # a request the UI stopped waiting for: its late events are dropped
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop the loop
                self._on_tk_error(*_exc_info())
        self._update_queue_status()
        if not self._closed:
            self._poll_id = self.root.after(POLL_MS, self._poll)

    def _update_queue_status(self) -> None:
        if self.model_state != "loading":
            return
        waiting = len(self._chat_ids)
        parts = [self._load_message] + ([f"{waiting} message{'s' if waiting != 1 else ''} waiting"] if waiting else [])
        detail = " \u00b7 ".join(p for p in parts if p)
        if detail != self.status.detail.cget("text"):
            self.status.detail.configure(text=detail)

    def _bot(self):
        """The bot, on the worker thread (the loading job ran before any chat job)."""
        if self.bot is None:
            raise RuntimeError(f"the models are not loaded ({self.load_error or 'still loading'})")
        return self.bot

    # -------------------------------------------------------------------------------------- model loading

    def load_models(self) -> None:
        self.model_state = "loading"
        self._load_message = ""
        self.status.progress.configure(value=0)
        self.status.progress.pack(side="right", padx=(0, 16))
        self.status.show("loading models ...")
        device = self.settings.device
        self.submit(lambda job: self._load_job(job, device), self._on_load_event, group="load", supersede=True)

    def _load_job(self, job: Job, device: str) -> LoadResult:  # worker thread
        # A reload (new device) keeps the conversation's request; read here, where the bot lives.
        state = self.bot.state.to_dict() if self.bot is not None else self.bot_state
        limit_cpu_threads()
        service, result = load_service(self.service_factory, device, job.progress)
        error = result.error
        if getattr(service, "detector", None) is None and error:
            self.load_error = error
            self.service, self.bot = service, None
        else:
            from app.chat.bot import Bot

            bot = Bot(service, self.settings, state=state)
            bot.writer = self.writer
            bot.catalogue_ready = result.similar
            bot.catalogue_error = result.catalog_error
            bot.generation_error = error
            self.service, self.bot = service, bot
            if self.bot is not None and error is None:
                self.load_error = None
        return result

    def _on_load_event(self, event: Event) -> None:
        if event.kind == PROGRESS:
            self._show_load_progress(event.data)
        elif event.kind == RESULT:
            result: LoadResult = event.data
            # The models are hundreds of thousands of long-lived objects: keep the garbage collector off
            # them, so its full passes stay short and never stall the window.
            gc.freeze()
            self.status.progress.configure(value=self.status.progress.cget("maximum"))
            self.status.progress.pack_forget()
            self.status.device.configure(text=f"Device: {result.device}")
            self.chat.similar_enabled = result.similar
            if result.error:
                self.model_state = "failed"
                self.load_error = result.error
                self.status.show("models not loaded", "images can't be drawn (see the message)")
                generator = "generator" in (result.error_file or "") or "checkpoint" in result.error
                fix = WEIGHTS_FIX if generator else "Reinstalling FashionGAN restores the bundled model files."
                self.dialogs.error("Model files missing or damaged",
                                   f"The {'image generator' if generator else 'models'} could not be loaded.\n\n"
                                   f"File: {result.error_file}\nProblem: {result.error}\n\n{fix}\n\n"
                                   "The chat still understands requests, but cannot draw images until then.")
            else:
                self.model_state = "ready"
                detail = "" if result.similar else "similar products unavailable" if result.catalog_error else ""
                self.status.show("ready", detail)
                self.chat.set_models_ready()  # restored turns on screen are drawn again now
            if result.notice:
                self.chat.add_notice(result.notice)
        elif event.kind == ERROR:
            self.model_state = "failed"
            self.load_error = event.data.message
            self.status.progress.pack_forget()
            self.status.show("models not loaded", event.data.message)
            self.dialogs.error("Could not load the models", f"{event.data.message}\n\nDetails are in the log:\n"
                                                            f"{user_log_dir() / LOG_FILE}")

    def _show_load_progress(self, message) -> None:
        """A loading step starts (app.chat.service.LoadStep: its name, index and total): the bar shows the
        steps done, the status the one under way. Other messages (a part that is unavailable) are shown as
        they are; "ready" fills the bar."""
        index, total = getattr(message, "index", None), getattr(message, "total", None)
        if index is not None and total:
            self.status.progress.configure(maximum=total, value=index - 1)
            self._load_message = f"{message.name} \u2026"
            self.status.show(f"loading models \u00b7 step {index} of {total}", self._load_message)
        elif str(message) == "ready":
            self.status.progress.configure(value=self.status.progress.cget("maximum"))
        else:
            self._load_message = str(message).rstrip(". ")
            self.status.show(self.status.state.cget("text"), self._load_message)

    # ------------------------------------------------------------------------------------------- chat

    def send_message(self, text: str) -> int | None:
        text = text.strip()
        if not text:
            return None
        self.chat.add_user(text)
        self._record({"role": "user", "text": text, "time": time.time()})

        def job(job: Job):
            bot = self._bot()
            return bot.finish(text, bot.respond(text, job.check), job.check, job.progress)

        return self._chat_job(job)

    def _fingerprints(self) -> dict[str, str]:
        return dict(getattr(self.service, "fingerprints", None) or {})

    def _chat_job(self, fn: Callable[[Job], object], decorate: Callable | None = None,
                  photo_text: str | None = None) -> int:
        waiting = self.model_state == "loading"
        bubble = self.chat.add_pending("I'll answer as soon as the models are loaded \u2026" if waiting
                                       else "Thinking \u2026")

        def on_event(event: Event) -> None:
            if event.kind == STARTED:
                bubble.pending("Thinking \u2026")
            elif event.kind == PROGRESS:  # a language model writing the reply: its images, then its words
                bubble.stream(event.data)
            elif event.kind == RESULT:
                reply = event.data
                if decorate is not None:
                    decorate(reply)
                record = bot_record(reply, self._fingerprints(), photo_text)
                bubble.show_reply(reply, record)
                log.info("answered request %d: %s (%d images, %d products)", event.request_id, reply.kind,
                         len(reply.images), len(reply.similar))
                if reply.request is not None:
                    self.bot_state = reply.request
                self._record(record | {"time": time.time()})
            elif event.kind == ERROR:
                message = f"Sorry, that went wrong: {event.data.message}. (Details are in the log.)"
                bubble.show_error(message)
                self._record({"role": "bot", "kind": "error", "text": message, "time": time.time()})
            elif event.kind == CANCELLED:
                bubble.show_error("(cancelled)")

        request_id = self.submit(fn, on_event, group="chat")
        self._chat_ids.add(request_id)
        return request_id

    def more_like_this(self, item) -> int:
        self.chat.add_user(f"More like this ({item.label})")
        self._record({"role": "user", "text": f"More like this ({item.label})", "time": time.time()})
        reference = getattr(item, "reference", None)  # a variant of a photo: variants of that photo
        return self._chat_job(lambda job: self._bot().more_like(item.caption, item.seed, item.prompt, job.check,
                                                                reference=reference))

    def similar_products(self, item) -> int:
        self.chat.add_user(f"Similar products ({item.label})")
        self._record({"role": "user", "text": f"Similar products ({item.label})", "time": time.time()})
        return self._chat_job(lambda job: self._bot().similar_to(item.image, item.caption, item.seed))

    def redraw(self, bubble, record: dict, auto: bool = False) -> int | None:
        """Draw a stored (restored or folded) turn again, in place: when it scrolls into view (`auto`), or from
        its Show again button, and then the view stays on it."""
        from app.chat.history import NotRedrawable, redraw

        if not auto:
            self.chat.keep_in_view(bubble)
        if bubble.redraw_id is not None:  # asked again while a draw is on its way: that one is not needed
            self.worker.cancel(bubble.redraw_id)
            bubble.redraw_id = None
        if self.model_state == "failed":
            bubble.show_record(record, problem=f"Couldn't draw these again: the models are not loaded "
                                               f"({self.load_error}).")
            return None
        bubble.drawing(record)

        def job(job: Job):
            try:
                return redraw(self._bot(), record, self._open_kept_photo, job.check)
            except NotRedrawable as exc:  # expected (other weights, the photo gone): said on the turn
                log.info("not drawn again: %s", exc)
                return exc

        def on_event(event: Event) -> None:
            if event.kind != STARTED:
                self._redraw_ids.discard(event.request_id)
            if bubble.redraw_id != event.request_id:  # the view cancelled it, or drew the bubble anew
                return
            if event.kind == STARTED:
                bubble.redraw_started = True
                return
            bubble.redraw_id = None
            if event.kind == RESULT and isinstance(event.data, NotRedrawable):
                bubble.show_record(record, problem=f"{event.data}.", retry=False)
            elif event.kind == RESULT:
                bubble.show_reply(event.data, record)
            elif event.kind == ERROR:
                bubble.show_record(record, problem=f"Couldn't draw these again: {event.data.message}.")
            elif event.kind == CANCELLED:  # it left the screen before its turn: drawn when shown again
                bubble.show_record(record)

        request_id = self.submit(job, on_event, group="redraw")
        bubble.redraw_id, bubble.redraw_started = request_id, False
        self._redraw_ids.add(request_id)
        return request_id

    def _open_kept_photo(self, name: str):  # worker thread
        return open_upload(str(self.storage.photo_path(name)))

    def _kept_thumbnail(self, name: str):
        """A kept photo, small, for a restored attachment (main thread: decoded at a reduced size)."""
        from PIL import Image

        try:
            with Image.open(self.storage.photo_path(name)) as image:
                image.draft("RGB", (256, 256))  # JPEG: decode at 1/2..1/8 of the size, fast
                image.thumbnail((256, 256))
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            log.warning("cannot show the kept photo %s: %s", name, exc)
            return None

    def ask_image(self) -> str | None:
        """The open dialog, started in the last folder used (else Pictures, else home); remembers the folder."""
        path = self.dialogs.ask_open_image(initialdir=str(open_dialog_folder(self.settings.last_folder)))
        if path:
            self._remember_folder(path)
        return path or None

    def _remember_folder(self, path: str) -> None:
        folder = str(Path(path).resolve().parent)
        if folder == self.settings.last_folder:
            return
        self.settings.last_folder = folder
        try:
            self.storage.save_settings(self.settings)
        except OSError:
            log.exception("could not save the settings")

    def attach_image(self) -> int | None:
        path = self.ask_image()
        if not path:
            return None
        return self.attach_path(path)

    def attach_path(self, path: str) -> int:
        """An image attached in the chat, with the text in the box (if any) as the change to make."""
        text = self.chat.input.get("1.0", "end-1c").strip()
        self.chat.input.delete("1.0", "end")
        name = Path(path).name
        user = self.chat.add_user(attachment_text(text, name))
        user_record = {"role": "user", "text": text, "attachment": name, "time": time.time()}
        self._record(user_record)

        def job(job: Job):
            from app.chat.history import remember_photo

            try:
                image = open_upload(path)
            except ValueError as exc:
                log.warning("upload refused: %s", exc)
                from app.chat.bot import Reply

                return Reply(f"I couldn't use that file: {exc}", "error")
            try:  # a copy in the data folder: the turn can be drawn again after a restart
                kept = self.storage.keep_photo(path)
            except OSError as exc:
                log.warning("could not keep a copy of %s: %s", path, exc)
                kept = None
            remember_photo(image, kept)
            reply = self._bot().respond_image(image, text, name, job.check)
            reply = self._bot().finish(text or f"(sent a photo: {name})", reply, job.check, job.progress)
            reply.upload, reply.kept_photo = image, kept
            return reply

        def decorate(reply) -> None:
            image = getattr(reply, "upload", None)
            if image is not None:
                from app.gui import to_photo

                photo = to_photo(image, 128, master=user, crisp=False)
                user.photos.append(photo)
                tk.Label(user, image=photo, bg=user.bg).pack(anchor="e", pady=(4, 0))
            if getattr(reply, "kept_photo", None):
                user_record["photo"] = reply.kept_photo  # written with the answer's record

        return self._chat_job(job, decorate, photo_text=text)

    # ---------------------------------------------------------------------------------------- upload tab

    def choose_upload(self) -> None:
        path = self.ask_image()
        if path:
            self.open_upload_path(path)

    def open_upload_path(self, path: str) -> int:
        self.notebook.select(self.upload)
        self.upload.set_status("Opening the image \u2026")

        def job(job: Job):
            try:
                image = open_upload(path)
            except ValueError as exc:  # an expected user error: one log line, shown in the tab
                log.warning("upload refused: %s", exc)
                return None, str(exc)
            describe = getattr(self.service, "describe_image", None)
            info = None
            if callable(describe) and self.bot is not None and self.bot.catalogue_ready:
                info = describe(image)
            return image, info

        def on_event(event: Event) -> None:
            if event.kind == RESULT and event.data[0] is None:
                self.upload.show_failure(f"I couldn't use that file: {event.data[1]}")
            elif event.kind == RESULT:
                image, info = event.data
                self.upload.show_image(image, path, info)
                log.info("reference image opened: %s (%dx%d)", path, image.width, image.height)
            elif event.kind == ERROR:
                self.upload.show_failure(f"I couldn't use that file: {event.data.message}")

        return self.submit(job, on_event, group="upload", supersede=True)

    def generate_variants(self, image, text: str, strength: float | None = None) -> int:
        def job(job: Job):
            from app.chat.bot import _pick_seeds, analyse_upload

            bot = self._bot()
            detection = bot.service.detect(text) if text else None
            seeds = bot._seeds()
            return analyse_upload(bot.service, image, detection, seeds or _pick_seeds(4),
                                  catalogue=bot.catalogue_ready, catalogue_error=bot.catalogue_error,
                                  strength=strength).reply

        def on_event(event: Event) -> None:
            if event.kind == RESULT:
                self.upload.show_result(event.data)
                log.info("upload variants shown: %s, %d images, %d products", event.data.kind,
                         len(event.data.images), len(event.data.similar))
            elif event.kind == ERROR:
                self.upload.set_status(f"Sorry, that went wrong: {event.data.message}", error=True)

        if self.model_state == "loading":
            self.upload.set_status("Waiting for the models to load \u2026")
        return self.submit(job, on_event, group="variants", supersede=True)

    # ----------------------------------------------------------------------------------- saving, history

    def save_image(self, item) -> Path | None:
        try:
            path = self.storage.save_image(item.image, item.prompt, item.seed, item.caption, item.variation)
        except OSError as exc:
            log.exception("saving failed")
            self.dialogs.error("Could not save the image", f"{exc}\n\nFolder: {self.storage.saved_dir}")
            return None
        self.saved.add(path)
        self.status.detail.configure(text=f"saved {path.name}")
        return path

    def _record(self, record: dict) -> None:
        self.history.append(record)
        try:
            # Keep only what the history kept: the older messages are in the archive now (once).
            self.history = self.storage.save_history(self.history, self.bot_state)
        except OSError:
            log.exception("could not write the chat history")
            self.status.detail.configure(text="could not write the chat history (see the log)")

    def _restore_history(self) -> None:
        history = self.storage.load_history()
        self.history = list(history.messages)
        self.bot_state = history.state
        if history.notice:
            self.chat.add_notice(history.notice)
        shown = self.history[-RESTORE_MESSAGES:]
        if len(self.history) > len(shown):
            self.chat.add_notice(f"{len(self.history) - len(shown)} earlier messages are kept in the history file.")
        for record in shown:
            try:
                self.chat.add_record(record)
            except Exception:  # noqa: BLE001 - one odd record must not stop the app from starting
                log.exception("skipping an unreadable history record")
        if shown:
            self.chat.add_notice(f"\u2014 restored {len(shown)} messages from your last session \u2014")
        else:
            self._welcome()
        self.chat.remember_sent([r.get("text", "") for r in self.history if r.get("role") == "user"
                                 and r.get("text") and not r.get("attachment")])

    def _welcome(self) -> None:
        """A first bot message with examples (not stored: it is not part of the conversation)."""
        from app.chat.bot import EXAMPLES, REFINE_EXAMPLES

        self.chat.add_bot_text(
            "Hi! Tell me what you're looking for and I'll draw a few ideas. Try "
            + ", ".join(f"\u201c{e}\u201d" for e in EXAMPLES[:3]) + ". Then refine: "
            + ", ".join(f"\u201c{e}\u201d" for e in REFINE_EXAMPLES[:3])
            + ". Attach a photo to get variants of it.")

    def clear_history(self) -> None:
        if not self.dialogs.ask_yes_no("Clear history", "Delete the whole chat history? Saved images are kept."):
            return
        for request_id in [*self._chat_ids, *self._redraw_ids]:
            self.worker.cancel(request_id)
            self._handlers.pop(request_id, None)
        self._chat_ids.clear()
        self._redraw_ids.clear()
        self.chat.clear()
        self.history = []
        self.bot_state = None
        self.storage.clear_history()
        if self.writer is not None:
            self.writer.forget()
        self._welcome()
        self.submit(lambda job: self.bot.reset() if self.bot is not None else None, lambda event: None,
                    group="chat")

    # ---------------------------------------------------------------------------------------- settings

    def open_settings(self) -> SettingsDialog:
        return SettingsDialog(self)

    def apply_settings(self, new: Settings) -> None:
        new = new.validated()
        device_changed = new.device != self.settings.device
        for f in fields(Settings):  # in place: the bot reads the same object
            setattr(self.settings, f.name, getattr(new, f.name))
        try:
            self.storage.save_settings(self.settings)
        except OSError as exc:
            self.dialogs.error("Could not save the settings", str(exc))
        self._set_writer()
        self._show_settings_summary()
        if device_changed and self.model_state != "not loaded":
            self.load_models()

    def _set_writer(self) -> None:
        """Who writes the replies: a language model (--llm-url, else FASHIONGAN_LLM_URL, else the settings) or,
        with none set, the built-in text. The bot reads it at its next turn; an unchanged model keeps its writer
        (the turns it saw, the problem it last said)."""
        from app.chat.llm import ReplyWriter, config_from

        try:
            config = config_from(self.settings, *self.llm_args)
        except ValueError as exc:
            log.warning("language model off: %s", exc)
            config = None
        if config is None:
            self.writer = None
        elif self.writer is None or self.writer.config != config:
            self.writer = ReplyWriter(config)
            log.info("replies written by the language model at %s (%s)", config.where, config.model or "its model")
        if self.bot is not None:
            self.bot.writer = self.writer

    # --------------------------------------------------------------------------------------- errors, exit

    def _on_tk_error(self, exc_type, exc, tb) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("error in the window: %s", text)
        self.tk_errors.append(text)
        try:
            self.status.detail.configure(text=f"unexpected error: {exc} (see the log)")
        except tk.TclError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poll_id is not None:
            self.root.after_cancel(self._poll_id)
            self._poll_id = None
        self.worker.stop()
        self._handlers.clear()
        self._icon = None
        try:
            self.root.destroy()
        except tk.TclError:
            pass
        # Free what is left of the widgets (reference cycles) here, on the main thread, not whenever
        # the worker thread happens to trigger the garbage collector: Tk objects must die on this thread.
        gc.collect()


def _exc_info():
    import sys

    return sys.exc_info()


def run_app(args=None) -> None:
    """`python main.py`: the window at once, the models behind it."""
    started = time.perf_counter()
    log_path = setup_logging(getattr(args, "log_level", "WARNING") or "WARNING")
    try:
        root = tk.Tk(className="FashionGAN")
    except tk.TclError as exc:
        from app.commands.errors import CliError

        raise CliError(f"cannot open the window ({exc}); the command line works without a display: "
                       f"see `main.py --help`") from exc
    app = App(root, catalog=getattr(args, "catalog", None), autoload=False, llm_url=getattr(args, "llm_url", None),
              llm_model=getattr(args, "llm_model", None))
    root.update()  # mapped and drawn before anything heavy starts
    try:
        app.chat.input.focus_force()
    except tk.TclError:  # closed while it was being drawn (a quick Ctrl+Q, the window manager): nothing to run
        log.info("window closed during start-up")
        return
    log.info("window shown %.3f s after run_app; log file %s", time.perf_counter() - started, log_path)
    app.load_models()
    try:
        root.mainloop()
    finally:
        app.close()
