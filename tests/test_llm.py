"""The language-model client and reply writer (app.chat.llm) against servers on 127.0.0.1: a scripted one of
our own for the failures (silence, HTTP 500, bad JSON, a refused port), llama.cpp's real server for the
protocol (skipped without llama-cpp-python, required where FASHIONGAN_REQUIRE_LLM_SERVER=1)."""
from __future__ import annotations

import logging
import threading
import time

import pytest
from llm_support import LlamaServer, ScriptedServer, free_port, gguf_path, need_llama_cpp

from app.chat import llm
from app.chat.bot import Chip, Reply, ShownImage
from app.chat.storage import Settings
from app.chat.worker import Cancelled

KEY = "sk-test-SECRET-4242"


def shop_reply() -> Reply:
    products = [{"id": 1, "title": "Red Floral Party Dress", "articleType": "Dresses", "baseColour": "Red"},
                {"id": 2, "title": "Maroon Wrap Dress", "articleType": "Dresses", "baseColour": "Maroon"}]
    return Reply("Looking for: Red \u00b7 Dresses", "images", headline="Looking for:",
                 chips=[Chip("Red", "colour"), Chip("Dresses", "item")], note="Changed colour to red.",
                 images=[ShownImage(None, seed, "red dresses") for seed in range(4)], similar=products,
                 caption="red dresses")


def config(url: str, **kw) -> llm.LLMConfig:
    return llm.LLMConfig(url, kw.pop("model", "scripted-a"), **kw)


# --------------------------------------------------------------------------------------------- settings


def test_config_comes_from_the_command_line_then_the_environment_then_the_settings(monkeypatch):
    monkeypatch.delenv(llm.ENV_URL, raising=False)
    monkeypatch.delenv(llm.ENV_MODEL, raising=False)
    monkeypatch.delenv(llm.ENV_KEY, raising=False)
    assert llm.config_from(Settings()) is None  # off by default: the built-in replies
    settings = Settings(llm_url="http://127.0.0.1:1/v1", llm_model="stored", llm_key=KEY)
    assert llm.config_from(settings) == llm.LLMConfig("http://127.0.0.1:1/v1", "stored", KEY)
    monkeypatch.setenv(llm.ENV_URL, "http://127.0.0.1:2/v1")
    monkeypatch.setenv(llm.ENV_MODEL, "from-env")
    assert llm.config_from(settings).url.endswith(":2/v1") and llm.config_from(settings).model == "from-env"
    cli = llm.config_from(settings, url="127.0.0.1:3/v1", model="from-cli")
    assert (cli.url, cli.model, cli.api_key) == ("http://127.0.0.1:3/v1", "from-cli", KEY)
    with pytest.raises(ValueError, match="not an http"):
        llm.config_from(None, url="ftp://example.org")
    assert KEY not in repr(cli) and KEY not in cli.where


def test_settings_keep_the_language_model_fields():
    s = Settings.from_dict({"llm_url": " http://localhost:11434/v1 ", "llm_model": "llama3.2", "llm_key": KEY})
    assert (s.llm_url, s.llm_model, s.llm_key) == ("http://localhost:11434/v1", "llama3.2", KEY)
    assert Settings.from_dict({"llm_url": 5}).llm_url == ""
    assert Settings().llm_url == ""  # off


# ----------------------------------------------------------------------------------------------- client


def test_pieces_stream_as_they_arrive_and_the_key_goes_in_the_header():
    with ScriptedServer("stream", pieces=["One", " two", " three."], pause=0.3) as server:
        started = time.monotonic()
        arrived = [(piece, time.monotonic() - started) for piece in
                   llm.stream_chat(config(server.url, api_key=KEY), [{"role": "user", "content": "hi"}])]
    assert [p for p, _ in arrived] == ["One", " two", " three."]
    assert arrived[0][1] < arrived[-1][1] - 0.4  # the first piece came before the last was sent
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["stream"] is True and request["body"]["model"] == "scripted-a"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"


def test_a_server_that_ignores_stream_true_still_answers():
    with ScriptedServer("whole", pieces=["All at once."]) as server:
        assert list(llm.stream_chat(config(server.url), [])) == ["All at once."]


def test_silence_is_a_timeout_within_the_first_token_limit():
    with ScriptedServer("silent") as server:
        started = time.monotonic()
        with pytest.raises(llm.LLMError) as caught:
            list(llm.stream_chat(config(server.url, first_token_s=1.0), []))
        took = time.monotonic() - started
    assert caught.value.key == "timeout" and "within 1 s" in caught.value.reason
    assert 0.9 < took < 1.8


@pytest.mark.parametrize("mode, key, words", [("http500", "http 500", "HTTP 500 Internal Server Error: model crashed"),
                                              ("badjson", "bad", "bad response from the server (not JSON")])
def test_http_errors_and_bad_json_are_one_line(mode, key, words):
    with ScriptedServer(mode) as server:
        with pytest.raises(llm.LLMError) as caught:
            list(llm.stream_chat(config(server.url), []))
    assert caught.value.key == key and words in caught.value.reason and "\n" not in caught.value.reason


def test_a_refused_connection_is_said_at_once():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(llm.LLMError) as caught:
        list(llm.stream_chat(config(f"http://127.0.0.1:{port}/v1"), []))
    assert caught.value.key == "refused" and f"127.0.0.1:{port}" in caught.value.reason
    assert time.monotonic() - started < 1.0


def test_cancel_lands_while_the_server_is_silent_mid_stream():
    cancel = threading.Event()
    seen = []

    def check():
        if cancel.is_set():
            raise Cancelled()

    with ScriptedServer("stall", pieces=["Half", " an answer"]) as server:
        with pytest.raises(Cancelled):
            for piece in llm.stream_chat(config(server.url), [], check):
                seen.append(piece)
                if len(seen) == 2:
                    threading.Timer(0.2, cancel.set).start()
                    started = time.monotonic()
        assert time.monotonic() - started < 0.2 + 3 * llm.POLL_S
        server.release.set()
        assert server.hung_up.wait(5), "the client kept the connection open"
    assert seen == ["Half", " an answer"]


def test_test_connection_lists_the_models_or_says_the_problem():
    with ScriptedServer() as server:
        assert llm.describe_connection(config(server.url)) == "Connected: 2 models (scripted-a, scripted-b)."
        assert "\u201cother\u201d is not among them" in llm.describe_connection(config(server.url, model="other"))
    found = llm.describe_connection(config(f"http://127.0.0.1:{free_port()}/v1"))
    assert found.startswith("Not connected: connection refused at 127.0.0.1:")


# ----------------------------------------------------------------------------------------------- prompt


def test_the_prompt_has_the_facts_of_the_turn_and_the_last_turns():
    turns = [("a dress", "Here are some dresses."), ("make it red", "Red it is.")]
    messages = llm.build_messages("make it red", shop_reply(), turns)
    system = messages[0]["content"]
    assert messages[0]["role"] == "system" and "1 to 3 short sentences" in system and "never invent" in system
    for fact in ("The shopper is looking for: Red, Dresses.", "Changed colour to red.", "4 design ideas drawn",
                 "\u201cRed Floral Party Dress\u201d (Dresses, Red)", "\u201cMaroon Wrap Dress\u201d"):
        assert fact in system, fact
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1] == {"role": "user", "content": "make it red"}


def test_a_photo_and_a_question_without_an_item_get_their_own_facts():
    photo = Reply("This looks like: Tshirts \u00b7 Blue", "images", headline="This looks like:",
                  chips=[Chip("Blue", "colour"), Chip("Tshirts", "item")], images=[object()] * 4)
    assert "Their photo was described as: Blue, Tshirts." in llm.build_messages("", photo)[0]["content"]
    question = Reply("Sorry, I didn't catch an item in that.")
    system = llm.build_messages("is navy too dark for summer?", question)[0]["content"]
    assert "No shopping item was detected" in system and "fashion question" in system


def test_answers_are_cut_after_three_sentences():
    assert llm.tidy("One.  Two!\nThree? Four. Five.") == ("One. Two! Three?", True)
    assert llm.tidy("Only one, still writing") == ("Only one, still writing", False)
    rambling, cut = llm.tidy("going to the theatre " * 60)
    assert cut and len(rambling) <= llm.MAX_CHARS + 2 and rambling.endswith(" \u2026")


# ----------------------------------------------------------------------------------------------- writer


def test_the_writer_sends_the_reply_first_then_the_words_and_returns_the_final_text():
    events = []
    with ScriptedServer("stream", pieces=["Lovely", " red", " dresses.", " Want", " them", " for a party?"]) as server:
        writer = llm.ReplyWriter(config(server.url))
        reply = shop_reply()
        final = writer.write("make it red", reply, progress=events.append)
    assert events[0] is reply  # the chips, images and products show before any word
    words = [e.text for e in events[1:]]
    assert words[0] == "Lovely" and words[-1] == "Lovely red dresses. Want them for a party?"
    assert final.text == words[-1] and final.builtin == reply.text and final.images is reply.images
    assert final.chips == reply.chips and final.similar == reply.similar and final.note == reply.note
    assert final.record()["written"] is True and final.record()["text"] == final.text
    assert list(writer.turns) == [("make it red", final.text)]


def test_problems_fall_back_to_the_built_in_reply_with_a_note_once_per_problem():
    port = free_port()
    writer = llm.ReplyWriter(config(f"http://127.0.0.1:{port}/v1"))
    first = writer.write("a dress", Reply("Sorry, I didn't catch an item in that."))
    assert first.text == "Sorry, I didn't catch an item in that." and not isinstance(first, llm.WrittenReply)
    assert first.note == f"(built-in reply: connection refused at 127.0.0.1:{port})"
    assert writer.write("again", Reply("Built in.")).note is None  # the same problem: said once
    assert writer.write("and again", shop_reply()).note == "Changed colour to red."
    with ScriptedServer("http500") as server:  # another problem: said again
        writer.config = config(server.url)
        assert writer.write("x", Reply("Built in.")).note.startswith("(built-in reply: HTTP 500")
    with ScriptedServer("stream", pieces=["Fine again."]) as server:  # fixed ...
        writer.config = config(server.url)
        assert writer.write("x", Reply("Built in.")).text == "Fine again."
    writer.config = config(f"http://127.0.0.1:{port}/v1")  # ... and broken again: said again
    assert writer.write("x", Reply("Built in.")).note.startswith("(built-in reply: connection refused")


def test_the_key_is_never_logged_nor_in_a_reply(caplog):
    caplog.set_level(logging.DEBUG)
    with ScriptedServer("stream", pieces=["Hi."]) as server:
        writer = llm.ReplyWriter(config(server.url, api_key=KEY))
        good = writer.write("hi", Reply("Hi!"))
    writer.config = config(f"http://127.0.0.1:{free_port()}/v1", api_key=KEY)
    bad = writer.write("hi", Reply("Hi!"))
    text = caplog.text + repr(good.record()) + repr(bad.record()) + repr(writer.config) + repr(writer.turns)
    assert "language model at" in caplog.text and KEY not in text


# ----------------------------------------------------------------------------------- llama.cpp's server


@pytest.fixture(scope="module")
def llama():
    need_llama_cpp()
    server = LlamaServer(gguf_path()).start()
    yield server
    server.stop()


def test_llama_cpp_server_streams_a_chat_completion(llama):
    cfg = llm.LLMConfig(llama.url, "gemma3-270m", first_token_s=30)
    assert "gemma3-270m" in llm.list_models(cfg)
    stats = llm.StreamStats()
    messages = llm.build_messages("a red dress for a party", shop_reply())
    pieces = list(llm.stream_chat(cfg, messages, max_tokens=24, stats=stats))
    assert len(pieces) > 3 and "".join(pieces).strip()
    assert stats.first_token_s < stats.last_piece_s and stats.tokens_per_s > 0


# -------------------------------------------------------------------------------------------- command line


def test_bench_measures_the_language_model_when_given_its_url():
    import json
    import subprocess
    import sys

    from conftest import ROOT

    with ScriptedServer("stream", pieces=["One", " two", " three", " four."], pause=0.02) as server:
        done = subprocess.run([sys.executable, "main.py", "bench", "--json", "--llm-only", "--llm-url", server.url,
                               "--llm-model", "scripted-a", "--llm-requests", "2"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["stages"]["llm_first_token_ms"]["value"] >= 0 and report["stages"]["llm_first_token_ms"]["ok"]
    assert report["stages"]["llm_tokens_per_s"]["value"] > 0 and report["stages"]["llm_reply_s"]["value"] > 0
    assert report["details"]["llm"]["models"] == ["scripted-a", "scripted-b"]
    assert len(report["details"]["llm"]["first_token_ms"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--llm-url", "ftp://example.org", "gui"], "--llm-url: not an http(s) URL"),
    (["bench", "--llm-only"], "--llm-only needs --llm-url"),
])
def test_bad_language_model_options_are_one_line(argv, message, monkeypatch, capsys):
    from app.commands.cli import main

    monkeypatch.delenv(llm.ENV_URL, raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
