"""User data: history written atomically and restored, corrupt files set aside, saved PNG metadata."""
from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from app.chat import storage
from app.chat.storage import Settings, Storage


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


def test_messages_past_the_cap_move_to_the_archive_once(home, caplog):
    """As the window saves: append one message, save, keep what save_history kept. Every message is in the
    history or the archive, in order, none twice."""
    st = Storage()
    held = st.save_history([{"role": "user", "text": str(i)} for i in range(storage.MAX_HISTORY - 1)])
    assert st.load_archive() == []
    with caplog.at_level("INFO", logger="app.chat.storage"):
        for i in range(storage.MAX_HISTORY - 1, storage.MAX_HISTORY + 5):
            held = st.save_history([*held, {"role": "user", "text": str(i), "odd": "\ud800"}], {"s": i})
    archived, kept = Storage().load_archive(), Storage().load_history().messages
    assert kept == held and len(kept) == storage.MAX_HISTORY
    assert [m["text"] for m in archived + kept] == [str(i) for i in range(storage.MAX_HISTORY + 5)]
    assert "moved to" in caplog.text and str(st.archive_path) in caplog.text


def test_archive_survives_a_write_cut_off_mid_line(home):
    st = Storage()
    st.save_history([{"text": "a"}] * storage.MAX_HISTORY + [{"text": "b"}])
    with open(st.archive_path, "a", encoding="utf-8") as fh:
        fh.write('{"text": "half a mess')  # a crash in the middle of an append
    st.save_history([{"text": "c"}] + [{"text": "d"}] * storage.MAX_HISTORY)
    assert st.load_archive() == [{"text": "a"}, {"text": "c"}]


def test_stale_temp_files_of_killed_writes_are_removed_at_start(home):
    st = Storage()
    st.save_history([{"role": "user", "text": "kept"}])
    st.save_settings(Settings())
    old, fresh = time.time() - 2 * storage.STALE_TEMP_S, time.time()
    leftovers = {st.root / ".history.json.k1ll3d.tmp": old, st.root / ".settings.json.x_y.tmp": old,
                 st.root / ".history.json.writing.tmp": fresh,  # another instance's write in progress
                 st.root / "notes.tmp": old, st.root / ".history.json": old}  # not the atomic write's
    for path, mtime in leftovers.items():
        path.write_text("{half")
        os.utime(path, (mtime, mtime))
    os.utime(st.history_path, (old, old))
    history = Storage().load_history()
    assert history.messages == [{"role": "user", "text": "kept"}] and history.notice is None
    assert sorted(p.name for p in st.root.iterdir()) == [
        ".history.json", ".history.json.writing.tmp", "history.json", "notes.tmp", "settings.json"]


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


def test_open_dialog_starts_in_the_last_folder_else_pictures_else_home(home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("XDG_PICTURES_DIR", raising=False)
    assert storage.open_dialog_folder("") == home  # no Pictures folder
    (home / "Pictures").mkdir()
    assert storage.open_dialog_folder("") == home / "Pictures"
    assert storage.open_dialog_folder(str(home / "gone")) == home / "Pictures"
    (home / "shop").mkdir()
    assert storage.open_dialog_folder(str(home / "shop")) == home / "shop"
    st = Storage()
    st.save_settings(Settings(last_folder=str(home / "shop")))
    assert Storage().load_settings().last_folder == str(home / "shop")
    st.settings_path.write_text(json.dumps({"last_folder": 3}))
    assert st.load_settings().last_folder == ""


def test_kept_photos_are_copies_named_by_content_and_go_with_the_history(home):
    st = Storage()
    source = home / "mine.jpg"
    source.write_bytes(b"\xff\xd8 not really a jpeg")
    name = st.keep_photo(source)
    source.write_bytes(b"changed later")
    assert st.photo_path(name).read_bytes() == b"\xff\xd8 not really a jpeg"
    assert st.keep_photo(source) != name
    for bad in ("../history.json", "x.photo", name + "/..", None):
        with pytest.raises(ValueError):
            st.photo_path(bad)
    saved = st.save_image(Image.new("RGB", (64, 64)), "p", 1)
    st.clear_history()
    assert list(st.photos_dir.iterdir()) == [] and saved.exists()
