"""History records of bot turns and drawing them again (app.chat.history), with the real models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.chat import history
from app.chat.bot import Bot
from app.chat.service import ModelService
from app.chat.storage import Settings, Storage
from models.images import open_image

FIXTURE_IMAGES = Path(__file__).parent / "fixtures" / "kaggle" / "images"


@pytest.fixture(scope="module")
def service():
    svc = ModelService(device="cpu")
    svc.load()
    return svc


@pytest.fixture
def bot(service):
    return Bot(service, Settings(images_per_request=3))


def same_images(again, first) -> bool:
    """The same seeds, and the same pictures up to float noise between batch sizes."""
    if [(im.seed, im.variation) for im in again] != [(im.seed, im.variation) for im in first]:
        return False
    diffs = [np.abs(np.asarray(a.image, dtype=int) - np.asarray(b.image, dtype=int)) for a, b in zip(again, first)]
    return all(d.mean() < 1.0 and d.max() <= 16 for d in diffs)


def test_a_text_turn_is_drawn_again_by_the_same_weights_only(bot, service):
    reply = bot.respond("a red dress for a party")
    record = history.bot_record(reply, service.fingerprints)
    assert record["weights"] == {"generator": service.fingerprints["generator"]}
    assert record["prompt"] == "a red dress for a party" and "photo" not in record
    assert history.can_redraw(record)
    again = history.redraw(Bot(service, Settings()), record, open_photo=None)  # a fresh bot: after a restart
    assert same_images(again.images, reply.images)
    assert [p["id"] for p in again.similar] == [p["id"] for p in reply.similar]  # by id, not searched anew
    assert (again.text, again.headline, [c.label for c in again.chips]) == \
        (reply.text, reply.headline, [c.label for c in reply.chips])
    other = dict(record, weights={"generator": "0" * 16})
    assert "another version of the image generator" in history.weights_problem(other, service.fingerprints)
    with pytest.raises(history.WeightsChanged):
        history.redraw(bot, other, open_photo=None)
    older = {k: v for k, v in record.items() if k != "weights"}  # a history from before fingerprints
    assert history.weights_problem(older, service.fingerprints) is None


def test_new_drawing_steps_count_as_another_version(service, monkeypatch):
    """Code that draws other images from the same weights and seeds changes the fingerprints too."""
    import models.editing
    import models.exemplars

    before = dict(service.fingerprints)
    try:
        monkeypatch.setattr(models.exemplars, "PICK_VERSION", models.exemplars.PICK_VERSION + 1)
        service._fingerprint_drawings()
        assert service.fingerprints["generator"] != before["generator"]
        assert service.fingerprints["editor"] == before["editor"]
        monkeypatch.setattr(models.editing, "DRAWING_VERSION", models.editing.DRAWING_VERSION + 1)
        service._fingerprint_drawings()
        assert service.fingerprints["editor"] != before["editor"]
    finally:
        monkeypatch.undo()
        service._fingerprint_drawings()
    assert service.fingerprints == before


def test_a_photo_turn_is_drawn_again_from_the_kept_copy(bot, service, tmp_path):
    storage = Storage(tmp_path / "data")
    source = sorted(FIXTURE_IMAGES.glob("*.jpg"))[0]
    name = storage.keep_photo(source)
    assert storage.keep_photo(source) == name  # the same bytes are kept once
    photo = open_image(source)
    history.remember_photo(photo, name)
    first = bot.respond_image(photo, "in red", source.name)
    record = history.bot_record(first, service.fingerprints, photo_text="in red")
    assert record["weights"] == {"editor": service.fingerprints["editor"]}
    assert (record["photo"], record["photo_text"]) == (name, "in red")
    refined = bot.respond("make it green")  # later turns are variants of the same photo
    refined_record = history.bot_record(refined, service.fingerprints)
    assert refined_record["photo"] == name and refined_record["photo_text"] == refined.caption
    more = bot.more_like(first.images[0].caption, first.images[0].seed, reference=first.images[0].reference)
    more_record = history.bot_record(more, service.fingerprints)

    def open_kept(kept: str):
        return open_image(storage.photo_path(kept))

    fresh = Bot(service, Settings())
    for reply, rec in ((first, record), (refined, refined_record), (more, more_record)):
        again = history.redraw(fresh, rec, open_kept)
        assert same_images(again.images, reply.images), rec["caption"]
        assert all(im.reference is not None and not im.regenerable for im in again.images)
    storage.photo_path(name).unlink()
    with pytest.raises(history.NotRedrawable, match="can't be opened"):
        history.redraw(fresh, record, open_kept)


def test_what_can_be_drawn_again():
    images = [{"seed": 1, "variation": None, "regenerable": True}]
    photo_images = [{"seed": 1, "variation": None, "regenerable": False}]
    assert history.can_redraw({"caption": "red dresses", "images": images})
    assert not history.can_redraw({"caption": "red sandals", "images": photo_images})  # no kept photo
    assert history.can_redraw({"caption": "red sandals", "images": photo_images, "photo": "x"})
    assert history.can_redraw({"similar": [{"id": 1}]}) and not history.can_redraw({"text": "hi"})
