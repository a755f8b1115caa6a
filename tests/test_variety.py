"""Realism apart from variety (k-NN precision/recall), memorisation, and the app's distinct draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.generate import pick_distinct
from models.metrics.scores import knn_precision_recall, memorisation_rates
from models.metrics.variety import prompt_cells


def test_knn_precision_recall_tell_realism_from_variety():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    same = knn_precision_recall(real, rng.normal(size=(300, 8)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = knn_precision_recall(real, real[:1] + rng.normal(scale=0.01, size=(20, 8)))  # real, not varied
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.2
    off = knn_precision_recall(real, rng.normal(loc=6.0, size=(300, 8)))  # varied, not real
    assert off["precision"] < 0.05 and off["coverage"] < 0.05


def test_memorisation_flags_copies_of_training_images():
    rng = np.random.default_rng(1)
    train, held = rng.random((500, 20)), rng.random((200, 20))
    honest = memorisation_rates(rng.random((200, 20)), held, train)
    assert abs(honest["held_out_rate"] - 0.05) < 0.02 and honest["generated_rate"] < 0.2
    copies = memorisation_rates(train[:50] + 1e-4, held, train)
    assert copies["generated_rate"] == 1.0


def test_pick_distinct_skips_near_copies_and_what_was_shown():
    base = torch.rand(3, 3, 8, 8) * 2 - 1
    pool = torch.cat([base[0:1], base[0:1] + 0.01, base[1:2], base[1:2] - 0.01, base[2:3]])  # two near-copies
    chosen, spread = pick_distinct(pool, 3)
    assert len({min(c // 2, 2) for c in chosen}) == 3 and spread > 0.1  # one of each near-copy pair
    again, _ = pick_distinct(pool, 1, avoid=base[0:1])  # already shown: start elsewhere
    assert again[0] not in (0, 1)


def test_prompt_cells_need_enough_photos_and_cover_types_first():
    rows = ([{"articleType": "Shirts", "baseColour": "Blue"}] * 20
            + [{"articleType": "Shirts", "baseColour": "Red"}] * 9
            + [{"articleType": "Jeans", "baseColour": "Blue"}] * 8 + [{"articleType": "Caps", "baseColour": "Red"}] * 3)
    cells = prompt_cells(rows, per_prompt=8)
    assert [(t, c) for t, c, _ in cells] == [("Shirts", "Blue"), ("Jeans", "Blue"), ("Shirts", "Red")]
    assert all(len(members) == 8 and len(set(members)) == 8 for _, _, members in cells)


@pytest.fixture(scope="module")
def bot():
    from app.chat.bot import Bot
    from app.chat.service import ModelService
    from app.chat.storage import Settings

    service = ModelService(device="cpu")
    service.load()
    return Bot(service, Settings(images_per_request=4, seed_mode="fixed", fixed_seed=0))


def _distances(a, b) -> np.ndarray:
    x = np.stack([np.asarray(im.image, np.float32) / 255 for im in a])
    y = np.stack([np.asarray(im.image, np.float32) / 255 for im in b])
    return np.abs(x[:, None] - y[None]).mean(axis=(2, 3, 4))


def _spread(images, shown=()) -> float:
    """The smallest pixel distance among `images` and between them and `shown`."""
    d = _distances(images, images)
    d[np.diag_indices(len(images))] = np.inf
    return float(min(d.min(), _distances(images, shown).min() if shown else np.inf))


def _plain(bot, caption: str, seeds: list[int]):
    from app.chat.bot import ShownImage

    return [ShownImage(im, s, caption) for s, im in zip(seeds, bot.service.generate(caption, seeds).images)]


@pytest.mark.parametrize("request_text", ["show me a red dress for a party", "black casual shoes for men"])
def test_answers_are_more_distinct_than_plain_seeds_and_more_avoids_what_was_shown(bot, request_text):
    """The picks are the most distinct of a larger pool of draws: never closer together than the plain next
    seeds would be, and "show me more" keeps further from the images already shown than plain seeds do."""
    bot.reset()
    first = bot.respond(request_text)
    assert first.kind == "images" and len(first.images) == 4
    assert _spread(first.images) >= _spread(_plain(bot, first.caption, [0, 1, 2, 3]))
    more = bot.respond("show me more")
    assert len(more.images) == 4 and not {im.seed for im in more.images} & {im.seed for im in first.images}
    plain_more = _plain(bot, first.caption, [max(im.seed for im in first.images) + 1 + i for i in range(4)])
    assert _spread(more.images, first.images) >= _spread(plain_more, first.images)


def test_show_me_more_keeps_bringing_new_products(bot):
    """Red party dresses: the catalogue holds only five in colours near red, yet four answers show sixteen
    different products (the later ones recoloured from farther colours), not the five again."""
    from models.exemplars import EXEMPLAR_KEY

    bot.reset()
    answers = [bot.respond("show me a red dress for a party")] + [bot.respond("show me more") for _ in range(3)]
    products = [im.image.info.get(EXEMPLAR_KEY) for answer in answers for im in answer.images]
    assert None not in products and len(set(products)) == len(products) == 16, products


def test_show_me_more_after_a_restart_avoids_what_was_shown_before(bot):
    """The app restarted (a new bot from the saved request state): "show me more" still brings products
    none of the earlier answers showed."""
    from app.chat.bot import Bot
    from models.exemplars import EXEMPLAR_KEY

    bot.reset()
    answers = [bot.respond("black casual shoes for men"), bot.respond("show me more")]
    before = {im.image.info[EXEMPLAR_KEY] for answer in answers for im in answer.images}
    restarted = Bot(bot.service, bot.settings, state=bot.state.to_dict())
    more = restarted.respond("show me more")
    assert len(more.images) == 4 and not {im.image.info[EXEMPLAR_KEY] for im in more.images} & before


def test_more_like_this_stays_nearest_the_clicked_card(bot):
    """Variations of one card of an answer are nearer that card than the answer's other cards."""
    hits = total = 0
    for text in ("a red dress for a party", "white sneakers", "brown handbag", "green kurta"):
        bot.reset()
        answer = bot.respond(text)
        for k, card in enumerate(answer.images):
            near = bot.more_like(card.caption, card.seed, text)
            assert [im.label for im in near.images] == [f"variation {i} of seed {card.seed}" for i in range(1, 5)]
            d = _distances(near.images, answer.images)
            hits += int((d.argmin(axis=1) == k).sum())
            total += len(d)
    assert hits / total >= 0.8, f"{hits}/{total}"


def test_a_change_keeps_the_same_designs(bot):
    """"make it blue" redraws the seeds already shown (changed), it does not pick new ones."""
    bot.reset()
    first = bot.respond("a red dress for a party")
    blue = bot.respond("make it blue")
    assert [im.seed for im in blue.images] == [im.seed for im in first.images] and "blue" in blue.caption


def test_setting_report_on_the_fixture_pack(pack_path):
    """Real photos of each cell given back as the 'generated' images: about as varied as the reference set, and
    within their k-NN manifold; one photo repeated: no variety; copies of training photos: all memorised."""
    from models.data import load_table
    from models.metrics.classifier import ClassifierConfig, train_classifier
    from models.metrics.variety import PromptSet, setting_report

    table = load_table(pack_path)
    clf, vocab, _ = train_classifier(table, ClassifierConfig(steps=30, width=8), "cpu")
    train, held = table.subset(range(0, 240, 2)), table.subset(range(1, 240, 2))
    prompts = PromptSet(held, train.images, vocab, clf, "cpu", per_prompt=2)
    real_b = dict(zip(prompts.captions, prompts.real_b))
    honest = setting_report(lambda caption, seeds: real_b[caption], prompts)
    assert 0.5 < honest["variety_ratio"]["pixels"] < 2 and honest["knn"]["precision"] >= 0.25
    copies = setting_report(lambda caption, seeds: np.repeat(real_b[caption][:1], len(seeds), axis=0), prompts)
    assert copies["variety"]["pixels"] == 0 and copies["variety_ratio"]["features"] == 0
    memorised = setting_report(lambda caption, seeds: train.images[: len(seeds)], prompts)
    assert memorised["memorisation"]["generated_rate"] == 1.0


def test_exemplar_drawings_on_the_fixture_pack(pack_path):
    """Drawn from the training half's products: varied, not copies of their exemplars, and "More like this"
    stays nearest the clicked card."""
    from models.data import load_table
    from models.metrics.classifier import ClassifierConfig, train_classifier
    from models.metrics.variety import (
        PromptSet,
        exemplar_drawer,
        setting_report,
        training_exemplars,
        variation_closeness,
    )
    from models.text_encoder import get_text_encoder

    table = load_table(pack_path)
    clf, vocab, _ = train_classifier(table, ClassifierConfig(steps=30, width=8), "cpu")
    train, held = table.subset(range(0, 240, 2)), table.subset(range(1, 240, 2))
    prompts = PromptSet(held, train.images, vocab, clf, "cpu", per_prompt=2)
    drawer = training_exemplars(train, get_text_encoder(), torch.device("cpu"))
    drawer.bank.typical = None  # a few products per type here: every one may serve
    copies, fell_back = lambda caption, seeds: train.images[: len(seeds)], []
    report = setting_report(exemplar_drawer(drawer, prompts, vocab, True, copies, fell_back), prompts)
    assert not fell_back and report["variety_ratio"]["pixels"] > 0.3  # one repeated image: 0
    # 120 training photos make every held-out photo far from them, so the rate says little here; the distance
    # to the nearest training photo (a copy: 0) says the drawings are redrawn, not returned
    assert report["memorisation"]["median_nn_distance"]["generated"] > 1.0
    closeness = variation_closeness(drawer, prompts, vocab, n_prompts=3, per_card=2)
    assert closeness["variations"] >= 8 and closeness["nearest_the_clicked_card"] >= 0.8
