"""`main.py chat`: the conversation on stdin/stdout, --out and --state, errors as one `error:` line, status 2.

In-process runs share one loaded service (app.commands.chat.load_service is replaced); one run in a fresh
process goes through the real entry point and the real loading.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.commands import chat as chat_command
from app.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
PHOTO = sorted((Path(__file__).parent / "fixtures" / "kaggle" / "images").glob("*.jpg"))[0]
REPLY_KEYS = {"text", "kind", "headline", "chips", "note", "caption", "seeds", "images", "photo", "products",
              "request"}


@pytest.fixture(scope="module")
def service():
    from app.chat.service import ModelService

    svc = ModelService(device="cpu")
    svc.load()
    return svc


@pytest.fixture
def chat(service, monkeypatch, capsys):
    """Run `main.py chat ARGS` in-process with `lines` on stdin -> (status, replies, stderr)."""
    monkeypatch.setattr(chat_command, "load_service", lambda args: service)

    def run(lines: list[str], *args) -> tuple[int, list[dict], str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
        code = main(["chat", *map(str, args)])
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines()], err

    return run


def chip_labels(reply: dict) -> dict[str, str]:
    return {chip["label"]: chip["kind"] for chip in reply["chips"]}


def test_a_conversation_one_json_reply_per_line(chat, tmp_path):
    photo_line = json.dumps({"image": str(PHOTO), "text": "in green"})
    code, replies, err = chat(["a red dress for a party", "", "make it blue", photo_line, "hello"],
                              "--n", 3, "--seed", 7, "--out", tmp_path / "out")
    assert code == 0, err
    assert len(replies) == 4 and all(set(r) == REPLY_KEYS for r in replies)
    red, blue, variants, hello = replies
    assert red["kind"] == "images" and {"Red": "colour", "Dresses": "item", "Party": "usage"}.items() <= \
        chip_labels(red).items()
    assert red["caption"] == "red dresses, party" and len(red["seeds"]) == 3
    for image in red["images"]:
        with Image.open(image["file"]) as png:
            assert png.size == (64, 64)
        assert image["seed"] in red["seeds"] and image["label"] == f"seed {image['seed']}"
    assert red["products"] and set(red["products"][0]) == {"id", "title", "type", "colour", "gender"}
    assert all(p["gender"] for p in red["products"])
    assert "Blue" in chip_labels(blue) and "Dresses" in chip_labels(blue) and "Red" not in chip_labels(blue)
    assert variants["headline"] == "Variants of your photo:" and "Green" in chip_labels(variants)
    assert variants["photo"] == str(PHOTO.resolve()) and len(variants["images"]) == 3
    assert hello["kind"] == "text" and not hello["images"] and hello["text"]
    assert red["request"]["article_type"] == "Dresses"


def test_state_continues_a_conversation_across_runs(chat, tmp_path):
    state = tmp_path / "state.json"
    code, [first], _ = chat(["a red dress for a party"], "--n", 2, "--state", state)
    assert code == 0 and state.exists()
    code, [second], _ = chat(["make it blue"], "--n", 2, "--state", state)
    assert code == 0
    assert {"Blue", "Dresses", "Party"} <= set(chip_labels(second)) and "Red" not in chip_labels(second)
    assert first["request"]["colours"] == ["Red"] and second["request"]["colours"] == ["Blue"]
    photo = tmp_path / "mine.jpg"
    photo.write_bytes(PHOTO.read_bytes())
    code, _, _ = chat([json.dumps({"image": str(photo)})], "--n", 2, "--state", state)
    assert code == 0
    code, [green], _ = chat(["make it green"], "--n", 2, "--state", state, "--out", tmp_path / "out")
    assert code == 0 and green["photo"] == str(photo.resolve())  # variants of the photo of the last run
    assert Path(green["images"][0]["file"]).name.startswith("t004_")  # turns go on: no file overwritten
    photo.unlink()
    code, replies, err = chat(["make it red"], "--state", state)
    assert code == 2 and not replies and "can't be opened" in err and str(photo.resolve()) in err


@pytest.mark.parametrize("lines, args, message", [
    (["{not json"], [], "line 1: not JSON"),
    (['{"image": 3}'], [], 'line 1: expected {"image": PATH'),
    (['{"text": "red"}'], [], 'line 1: expected {"image": PATH'),
    (['{"image": "x.jpg", "txt": "red"}'], [], "unknown key(s) txt"),
    (["hi", '{"image": "/no/such/photo.jpg"}'], [], "line 2:"),
    (["red dress"], ["--n", "0"], "--n must be between 1 and 8"),
    (["red dress"], ["--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_error_line_and_status_2(chat, lines, args, message):
    code, _, err = chat(lines, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and message in err, err
    assert "Traceback" not in err


def test_a_file_that_is_not_an_image_or_a_damaged_state(chat, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    code, _, err = chat([json.dumps({"image": str(notes)})])
    assert code == 2 and "line 1:" in err and "not an image" in err
    state = tmp_path / "state.json"
    state.write_text("{half")
    code, _, err = chat(["red dress"], "--state", state)
    assert code == 2 and str(state) in err and err.count("\n") == 1


def test_main_py_chat_end_to_end(tmp_path):
    """The real entry point in a fresh process, loading the models itself."""
    done = subprocess.run([sys.executable, "main.py", "chat", "--n", "2", "--seed", "3", "--state",
                           str(tmp_path / "s.json")], cwd=ROOT, input="black jeans\nin blue\n", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    jeans, blue = map(json.loads, done.stdout.splitlines())
    assert "Jeans" in chip_labels(jeans) and {"Jeans", "Blue"} <= set(chip_labels(blue))
    bad = subprocess.run([sys.executable, "main.py", "chat", "--state", str(tmp_path / "s.json")], cwd=ROOT,
                         input="{oops\n", capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: line 1: not JSON") and "Traceback" not in bad.stderr
