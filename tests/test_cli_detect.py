"""The `detect` and `eval-detector` commands: one JSON object per message, errors as one `error:` line, status 2."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.chat.detector import Detection
from app.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
KEYS = [f.name for f in dataclasses.fields(Detection)]


def run_cli(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_prints_one_json_object_per_message(capsys):
    code, out, err = run_cli(["detect", "navy blue tee for men", "hi there"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert list(first) == KEYS
    assert first["article_types"] == ["Tshirts"] and first["colours"] == ["Navy Blue"] and first["gender"] == "Men"
    assert first["caption"] == "navy blue tshirts, men"
    assert second["intent"] == "greeting"


def test_detect_reads_stdin_with_dash(capsys, monkeypatch):
    code, out, _ = run_cli(["detect", "-"], capsys, stdin="red dress\n\n  \nin black please\n", monkeypatch=monkeypatch)
    assert code == 0
    found = [json.loads(line) for line in out.splitlines()]
    assert [f["text"] for f in found] == ["red dress", "in black please"]
    assert [f["intent"] for f in found] == ["shop", "refine"]


@pytest.mark.parametrize("argv", [["detect", ""], ["detect", "   "], ["detect"], ["detect", "--bogus", "x"],
                                  ["eval-detector", "--chat", "/no/such/file.jsonl"],
                                  ["eval-detector", "--fashioniq", "/no/such/dir"],
                                  ["eval-detector", "--speed", "-1"]])
def test_bad_input_is_one_error_line_and_status_2(capsys, argv):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "Traceback" not in err


def test_eval_detector_on_the_chat_set(capsys):
    code, out, err = run_cli(["eval-detector", "--json", "--speed", "300"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert set(report["chat"]) == {"article_type", "colour", "exclude_colour", "gender", "usage", "intent",
                                   "attribute", "exclude_attribute"}
    assert report["chat"]["intent"]["accuracy"] >= 0.95
    assert report["speed"]["pipe_msgs_per_cpu_s"] > 0


def test_main_py_end_to_end():
    """The real entry point in a fresh process (the error paths above run in-process through the same main())."""
    ok = subprocess.run([sys.executable, "main.py", "detect", "-"], cwd=ROOT, input="blak tshirt\nhello\n",
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    found = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [f["colours"] for f in found] == [["Black"], []]
    assert [f["intent"] for f in found] == ["shop", "greeting"]
