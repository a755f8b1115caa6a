"""User data: history written atomically and restored, corrupt files set aside, saved PNG metadata."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from app import storage
from app.storage import Settings, Storage


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.ENV_HOME, str(tmp_path))
    return tmp_path


def test_env_var_moves_data_and_logs(home):
    assert storage.user_data_dir() == home / "data"
    assert storage.user_log_dir() == home / "logs"
    assert Storage().root == home / "data"


def test_platformdirs_default(monkeypatch):
    monkeypatch.delenv(storage.ENV_HOME, raising=False)
    assert "fashiongan" in str(storage.user_data_dir()).lower()
    assert "fashiongan" in str(storage.user_log_dir()).lower()


def test_history_round_trip(home):
    st = Storage()
    assert st.load_history().messages == []
    messages = [{"role": "user", "text": "red dress \u2764"}, {"role": "bot", "text": "Looking for: Red"}]
    st.save_history(messages, {"article_type": "Dresses"})
    again = Storage().load_history()
    assert again.messages == messages and again.state == {"article_type": "Dresses"} and again.notice is None
    st.clear_history()
    assert Storage().load_history().messages == []


def test_history_write_is_atomic(home, monkeypatch):
    st = Storage()
    st.save_history([{"role": "user", "text": "first"}])

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", explode)
    with pytest.raises(OSError):
        st.save_history([{"role": "user", "text": "second"}])
    monkeypatch.undo()
    assert st.load_history().messages == [{"role": "user", "text": "first"}]
    assert [p.name for p in st.root.iterdir()] == ["history.json"]  # no temp files left behind


@pytest.mark.parametrize("content", [b"{not json", b'{"messages": 3}', b"\xff\xfe\x00", b"[]", b""])
def test_corrupt_history_is_set_aside(home, content):
    st = Storage()
    st.root.mkdir(parents=True)
    st.history_path.write_bytes(content)
    history = st.load_history()
    assert history.messages == [] and history.notice and "could not be read" in history.notice
    aside = list(st.root.glob("history.corrupt-*.json"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert str(aside[0]) in history.notice
    st.save_history([{"role": "user", "text": "fresh"}])
    assert st.load_history().messages == [{"role": "user", "text": "fresh"}]


def test_history_is_capped(home):
    st = Storage()
    st.save_history([{"role": "user", "text": str(i)} for i in range(storage.MAX_HISTORY + 10)])
    messages = st.load_history().messages
    assert len(messages) == storage.MAX_HISTORY and messages[-1]["text"] == str(storage.MAX_HISTORY + 9)


def test_saved_png_has_prompt_and_seed_and_never_overwrites(home):
    st = Storage()
    image = Image.new("RGB", (64, 64), (200, 10, 10))
    first = st.save_image(image, "a red dress for a party", 1234, caption="red dresses, party")
    second = st.save_image(image, "a red dress for a party", 1234, caption="red dresses, party")
    assert first != second and first.exists() and second.exists()
    assert first.name == "red-dresses-party_seed1234.png" and second.name == "red-dresses-party_seed1234-2.png"
    with Image.open(first) as im:
        assert im.format == "PNG" and im.size == (256, 256)
        assert im.text["prompt"] == "a red dress for a party"
        assert im.text["seed"] == "1234" and im.text["caption"] == "red dresses, party"
    varied = st.save_image(image, "p", 7, caption="c", variation=99)
    saved = {s.path: s for s in st.saved_images()}
    assert saved[varied].variation == 99 and saved[first].seed == 1234 and len(saved) == 3


def test_saved_images_tolerates_foreign_files(home):
    st = Storage()
    st.saved_dir.mkdir(parents=True)
    (st.saved_dir / "broken.png").write_bytes(b"not a png")
    assert [s.prompt for s in st.saved_images()] == [""]


def test_settings_round_trip_and_validation(home):
    st = Storage()
    assert st.load_settings() == Settings()
    st.save_settings(Settings(images_per_request=2, device="cpu", seed_mode="fixed", fixed_seed=42))
    assert Storage().load_settings() == Settings(2, "cpu", "fixed", 42)
    st.settings_path.write_text(json.dumps({"images_per_request": 99, "device": "tpu", "seed_mode": "x",
                                            "fixed_seed": "abc", "unknown": 1}))
    assert st.load_settings() == Settings(8, "auto", "random", 0)
    st.settings_path.write_text("garbage")
    assert st.load_settings() == Settings()
