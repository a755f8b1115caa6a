"""A language model writing the replies, in the real window under Xvfb with the real models.

llama.cpp's real server (requirements-llm.txt; skipped without it, except where FASHIONGAN_REQUIRE_LLM_SERVER=1)
for the words streaming into the bubble and for a server stopped mid-conversation; a scripted server of our
own on 127.0.0.1 for a first token that never comes, an HTTP 500, and a cancel mid-stream. The model is the
Gemma 3 270M base model: its words are off-topic, these are protocol tests, not quality tests.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import time

import pytest
from gui_support import RecordingDialogs, pump, start_xvfb, stop
from llm_support import MODEL_ALIAS, LlamaServer, ScriptedServer, gguf_path, need_llama_cpp

from app.chat import llm

pytestmark = pytest.mark.gui

KEY = "sk-gui-SECRET-9876"


@pytest.fixture(scope="module")
def display():
    proc = None
    if not os.environ.get("DISPLAY"):
        try:
            number, proc = start_xvfb()
        except RuntimeError as exc:
            pytest.skip(str(exc))
        os.environ["DISPLAY"] = number
    yield os.environ["DISPLAY"]
    if proc is not None:
        stop(proc)
        os.environ.pop("DISPLAY", None)


@pytest.fixture(scope="module")
def service():
    import torch

    from app.chat.service import ModelService
    from app.gui.window import limit_cpu_threads

    threads = torch.get_num_threads()
    limit_cpu_threads()
    svc = ModelService(device="cpu")
    svc.load()
    yield svc
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama():
    need_llama_cpp()
    server = LlamaServer(gguf_path()).start()
    yield server
    server.stop()


@pytest.fixture
def make_app(display, service, tmp_path, monkeypatch):
    import tkinter as tk

    from app.chat.storage import Settings, Storage
    from app.gui.window import App

    for name in (llm.ENV_URL, llm.ENV_MODEL, llm.ENV_KEY):
        monkeypatch.delenv(name, raising=False)
    apps = []

    def make(url: str | None, model: str = "", key: str = "", first_token_s: float = llm.FIRST_TOKEN_S):
        monkeypatch.setattr(llm, "FIRST_TOKEN_S", first_token_s)
        storage = Storage(tmp_path / "data")
        storage.save_settings(Settings(images_per_request=2, llm_url=url or "", llm_model=model, llm_key=key))
        app = App(tk.Tk(), storage=storage, service_factory=lambda device: service, dialogs=RecordingDialogs())
        apps.append(app)
        pump(app.root, lambda: app.model_state in ("ready", "failed"), 120, "the models to load")
        return app

    yield make
    errors = [e for app in apps for e in app.tk_errors]
    for app in apps:
        app.close()
    gc.collect()
    assert not errors, errors


def texts(widget) -> list[str]:
    """The texts of the labels in `widget`, in the order they were packed (depth first)."""
    import tkinter as tk

    out = [widget.cget("text")] if isinstance(widget, tk.Label) and widget.cget("text") else []
    for child in widget.winfo_children():
        out += texts(child)
    return out


def send(app, text: str):
    app.chat.input.insert("1.0", text)
    app.chat.input.event_generate("<Return>")
    app.root.update()
    return app.chat.bubbles[-1]


def answer(app, text: str, timeout: float = 90):
    bubble = send(app, text)
    pump(app.root, lambda: bubble.done, timeout, f"the answer to {text!r}")
    return bubble


def watch(app, bubble, timeout: float = 90) -> list[tuple[str, int, bool]]:
    """(words so far, image cards shown, done) each time the words change, until the bubble is done."""
    seen = []
    deadline = time.monotonic() + timeout
    while not bubble.done:
        app.root.update()
        words = bubble.words.cget("text") if bubble.words is not None and bubble.words.winfo_exists() else None
        if words is not None and (not seen or seen[-1][0] != words):
            seen.append((words, len(bubble.cards), bubble.done))
        assert time.monotonic() < deadline, "the reply never finished"
        time.sleep(0.005)
    return seen


def test_without_a_model_the_replies_are_the_built_in_ones(make_app):
    app = make_app(None)
    assert app.writer is None and app.bot.writer is None
    bubble = answer(app, "a red dress")
    assert bubble.words is None and "Looking for:" in texts(bubble) and len(bubble.cards) == 2
    assert "written" not in app.history[-1]


def test_streamed_words_arrive_in_the_bubble_after_its_images(make_app, llama):
    app = make_app(llama.url, MODEL_ALIAS, first_token_s=60)
    bubble = send(app, "a red dress for a party")
    seen = watch(app, bubble)
    assert len(seen) >= 3, (seen, app.history[-1], vars(app.writer.stats))  # the words came in pieces
    assert seen[0][1] == 2  # the images were there before the first word
    assert all(len(a) <= len(b) for (a, *_), (b, *_) in zip(seen, seen[1:]))
    record = app.history[-1]
    assert record["written"] is True and record["text"].strip() and record["chips"]
    assert record["text"] in texts(bubble) and len(bubble.cards) == 2  # the final words, and the images
    assert "Red" in [c[0] for c in record["chips"]]  # the detector decided what was searched
    stored = app.storage.load_history().messages[-1]
    assert stored["text"] == record["text"]


def test_a_server_stopped_mid_conversation_falls_back_with_one_note(make_app, llama):
    app = make_app(llama.url, MODEL_ALIAS, first_token_s=60)
    first = answer(app, "a blue shirt for men")
    assert app.history[-1].get("written") is True
    llama.stop()
    try:
        second = answer(app, "make it green")
        notes = [t for t in texts(second) if t.startswith("(built-in reply:") or "(built-in reply:" in t]
        assert notes and "connection refused" in notes[0], texts(second)
        assert "Looking for:" in texts(second) and "Green" in [c[0] for c in app.history[-1]["chips"]]
        assert "written" not in app.history[-1]
        third = answer(app, "hi")  # the same problem: not said again
        assert not any("built-in reply" in t for t in texts(third)), texts(third)
    finally:
        llama.start()
    fourth = answer(app, "show me more")  # fixed: the model writes again
    assert app.history[-1].get("written") is True and not any("built-in reply" in t for t in texts(fourth))
    assert first.done


def test_the_api_key_is_never_in_the_log_or_the_history(make_app, llama, caplog):
    caplog.set_level(logging.DEBUG)
    app = make_app(llama.url, MODEL_ALIAS, key=KEY, first_token_s=60)
    answer(app, "white sneakers")
    llama.stop()
    try:
        answer(app, "make it black")
    finally:
        llama.start()
    history = app.storage.history_path.read_text(encoding="utf-8")
    assert "written" in history and KEY not in history and KEY not in caplog.text
    assert "language model at" in caplog.text  # it did log, without the key
    assert json.loads(app.storage.settings_path.read_text())["llm_key"] == KEY  # kept where the user put it


def test_a_first_token_that_never_comes_falls_back_in_time(make_app):
    with ScriptedServer("silent") as server:
        app = make_app(server.url, "scripted-a", first_token_s=2.0)
        started = time.monotonic()
        bubble = answer(app, "a black handbag")
        took = time.monotonic() - started
        assert "(built-in reply: no answer within 2 s)" in texts(bubble)
        assert len(bubble.cards) == 2 and took < 2.0 + 15  # the turn itself, plus the limit
        quiet = answer(app, "make it brown")
        assert not any("built-in reply" in t for t in texts(quiet))


def test_an_http_error_is_a_note_on_a_plain_answer_too(make_app):
    with ScriptedServer("http500") as server:
        app = make_app(server.url, "scripted-a")
        bubble = answer(app, "hello there")
    found, record = texts(bubble), app.history[-1]
    assert found == [record["text"], "(built-in reply: HTTP 500 Internal Server Error: model crashed)"]
    assert record["note"] == found[-1] and "written" not in record  # the built-in answer, and why


def test_cancel_works_mid_stream(make_app):
    with ScriptedServer("stall", pieces=["Here are", " a few"]) as server:
        app = make_app(server.url, "scripted-a")
        bubble = send(app, "green jeans")
        request_id = max(app._chat_ids)
        pump(app.root, lambda: bubble.words is not None and "a few" in bubble.words.cget("text"), 90,
             "the first words")
        assert len(bubble.cards) == 2 and not bubble.done
        started = time.monotonic()
        assert app.worker.cancel(request_id)
        pump(app.root, lambda: bubble.done, 5, "the cancel")
        assert time.monotonic() - started < 2 and texts(bubble) == ["(cancelled)"]
        server.release.set()  # the server writes the rest now: to a connection the app has closed
        assert server.hung_up.wait(5)
        assert app.history[-1]["role"] == "user"  # nothing was stored for the cancelled answer
        server.mode = "stream"
        assert answer(app, "green jeans").done


def test_preferences_test_connection_and_save_the_model(make_app):
    from app.gui.settings import SettingsDialog

    with ScriptedServer() as server:
        app = make_app(None)
        dialog = SettingsDialog(app)
        assert not dialog.llm_on.get()
        dialog.llm_on.set(True)
        dialog._llm_toggled()
        dialog.llm_url.set(server.url)
        dialog.llm_model.set("scripted-b")
        dialog.llm_key.set(KEY)
        dialog.test_connection()
        pump(app.root, lambda: dialog.test_result.cget("text").startswith("Connected"), 30, "the test")
        assert dialog.test_result.cget("text") == "Connected: 2 models (scripted-a, scripted-b)."
        assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
        dialog.llm_url.set("not a url at all://")
        dialog.ok()
        assert dialog.winfo_exists() and "not an http" in dialog.test_result.cget("text")
        dialog.llm_url.set(server.url)
        dialog.ok()
        assert (app.settings.llm_url, app.settings.llm_model, app.settings.llm_key) == (server.url, "scripted-b", KEY)
        assert app.writer is not None and app.bot.writer is app.writer
        assert "replies by scripted-b" in app.status.settings.cget("text")
        dialog = SettingsDialog(app)
        dialog.llm_on.set(False)
        dialog.ok()
        assert app.settings.llm_url == "" and app.writer is None and app.bot.writer is None


def test_written_words_replace_a_plain_reply_and_come_back_after_a_restart(make_app):
    with ScriptedServer("stream", pieces=["Hello!", " Looking for", " something red?"]) as server:
        app = make_app(server.url, "scripted-a")
        plain = answer(app, "hello there")
        assert texts(plain) == ["Hello! Looking for something red?"]
        shop = answer(app, "a red dress")
        assert texts(shop)[:4] == ["Looking for:", "Red", "Dresses", "Hello! Looking for something red?"]
    app.close()
    again = make_app(None)  # the model is off now: what it wrote stays in the history
    restored = [texts(b) for b in again.chat.bubbles if b.role == "bot" and b.record]
    assert ["Hello! Looking for something red?"] in restored
    assert any(t[:4] == ["Looking for:", "Red", "Dresses", "Hello! Looking for something red?"] for t in restored)
