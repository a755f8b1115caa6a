"""The editing generator: training learns on the fixture pack, resume is exact, and the shipped editor's
variants belong to the photo they were drawn from (CLI, service, queries file, refusals)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from app.commands.cli import main
from models.editing import MIN_FOREGROUND, EditConfig, EditGenerator, NotEditable, check_editable, strength_condition
from models.metrics.structure import structural_similarity
from models.training.edit import EditTrainConfig, EditTrainer
from tests.conftest import ROOT


def _config(tmp_path, **kw) -> EditTrainConfig:
    base = dict(data=str(ROOT / "tests/fixtures/pack/mini.npz"), holdout=False, width=8, d_width=8, batch=12,
                steps=4, threads=1, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                sample_every=1000, checkpoint_every=2, log_every=1)
    return EditTrainConfig(**{**base, **kw})


def _judge(trainer: EditTrainer, photos, wanted, labels) -> tuple[float, float]:
    """Reconstruction L1 and the frozen judge's colour loss on edits, from the live generator."""
    with torch.no_grad():
        own = trainer.bank.sample(list(range(len(photos))), torch.Generator().manual_seed(0))
        rec = trainer.G(photos, own, own)
        edit = trainer.G(photos, wanted, own, torch.zeros(len(photos), trainer.edit_cfg.z_dim))
        return (rec - photos).abs().mean().item(), trainer.judge.colour_loss(edit, labels).item()


def test_short_training_lowers_reconstruction_and_moves_the_asked_colour(tmp_path):
    torch.manual_seed(0)
    trainer = EditTrainer(_config(tmp_path, steps=60, lr_g=2e-3, checkpoint_every=1000))
    photos, _, wanted, _, target_labels = trainer.batch()
    rec_before, colour_before = _judge(trainer, photos, wanted, target_labels[:, 1])
    trainer.train()
    rec_after, colour_after = _judge(trainer, photos, wanted, target_labels[:, 1])
    assert rec_after < 0.5 * rec_before, (rec_before, rec_after)
    assert colour_after < colour_before - 0.5, (colour_before, colour_after)  # the asked colour is likelier
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss_d,loss_g,rec_l1") and len(rows) == 61
    assert (tmp_path / "run" / "samples" / "step000060.png").is_file()


def test_resume_is_exact(tmp_path):
    straight = EditTrainer(_config(tmp_path / "a", steps=4))
    straight.train()
    first = EditTrainer(_config(tmp_path / "b", steps=2))
    first.train()
    resumed = EditTrainer(_config(tmp_path / "b", steps=4))
    assert resumed.resume() and resumed.step == 2
    resumed.train()
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_strength_zero_is_the_photos_own_caption_without_noise():
    own, wanted = torch.nn.functional.normalize(torch.randn(2, 384), dim=1)
    z = torch.randn(1, 16)
    text, z0 = strength_condition(own[None], wanted[None], z, 0.0)
    assert torch.allclose(text, own[None]) and not z0.any()
    text, z1 = strength_condition(own[None], wanted[None], z, 1.0)
    assert torch.allclose(text, wanted[None]) and torch.equal(z1, z)


def test_skip_connections_carry_the_photo_to_the_output():
    """Two photos through one untrained generator with one caption: different photos, different outputs."""
    torch.manual_seed(0)
    net = EditGenerator(EditConfig(width=8)).eval()
    photos = torch.rand(2, 3, 64, 64) * 2 - 1
    text = torch.nn.functional.normalize(torch.randn(1, 384), dim=1).expand(2, -1)
    out = net(photos, text, text)
    assert out.shape == (2, 3, 64, 64) and (out[0] - out[1]).abs().mean() > 0.1


def test_nothing_but_background_is_not_editable(pack_path):
    from models.data import load_table

    white = np.full((64, 64, 3), 255, np.uint8)
    with pytest.raises(NotEditable, match="no item to edit"):
        check_editable(white)
    speck = white.copy()
    speck[:5, :5] = 0  # 0.6% of the photo
    with pytest.raises(NotEditable, match="no item to edit"):
        check_editable(speck)
    with pytest.raises(NotEditable, match="one flat colour"):
        check_editable(np.full((64, 64, 3), 40, np.uint8))
    for photo in load_table(pack_path).images:  # every real product photo is editable
        check_editable(photo)
    assert MIN_FOREGROUND < 0.02


# ---- the shipped editor through the app's paths ------------------------------------------------------

@pytest.fixture(scope="module")
def service():
    from app.chat.service import ModelService

    service = ModelService(device="cpu")
    service.load()
    assert service.editor is not None, service.editor_error
    return service


@pytest.fixture(scope="module")
def two_photos(pack_path):
    """Two fixture photos of one item type that look different (another product, another shape)."""
    from models.data import load_table

    table = load_table(pack_path)
    tops = [i for i, r in enumerate(table.rows) if r["articleType"] == "Tshirts"]
    return [Image.fromarray(table.images[i]) for i in tops[:2]]


def test_variants_depend_on_the_photo(service, two_photos):
    a, b = two_photos
    va, _ = service.variants(a, "in red", seeds=[0, 1, 2, 3])
    vb, _ = service.variants(b, "in red", seeds=[0, 1, 2, 3])
    arr = lambda images: np.stack([np.asarray(im) for im in images])  # noqa: E731
    pa, pb, xa, xb = np.asarray(a), np.asarray(b), arr(va.images), arr(vb.images)
    assert np.abs(xa.astype(int) - xb.astype(int)).mean() > 5  # same text, different photos: different images
    own_a = structural_similarity(xa, np.repeat(pa[None], 4, 0))
    other_a = structural_similarity(xa, np.repeat(pb[None], 4, 0))
    own_b = structural_similarity(xb, np.repeat(pb[None], 4, 0))
    other_b = structural_similarity(xb, np.repeat(pa[None], 4, 0))
    assert (own_a > other_a).all() and (own_b > other_b).all()


def test_strength_zero_gives_the_photo_back(service, two_photos):
    photo = two_photos[0]
    generated, _ = service.variants(photo, "in red", seeds=[3], strength=0.0)
    diff = np.abs(np.asarray(generated.images[0]).astype(int) - np.asarray(photo).astype(int)).mean()
    assert diff < 15, diff  # the reconstruction: a text-to-image generator differs by 40 and more
    full, _ = service.variants(photo, "in red", seeds=[3], strength=1.0)
    assert np.abs(np.asarray(full.images[0]).astype(int) - np.asarray(photo).astype(int)).mean() > diff


def test_more_like_this_on_a_variant_stays_nearest_the_clicked_one(service, two_photos):
    photo = two_photos[0]
    seeds = [10, 11, 12, 13]
    shown, _ = service.variants(photo, "in blue", seeds=seeds)
    shown_px = np.stack([np.asarray(im) for im in shown.images]).astype(float)
    hits = []
    for k, seed in enumerate(seeds):  # a click on each card in turn
        for im in service.variant_variations(photo, shown.caption, seed, [100 + 10 * k + j for j in range(4)]):
            hits.append(np.abs(shown_px - np.asarray(im).astype(float)).mean(axis=(1, 2, 3)).argmin() == k)
    assert np.mean(hits) >= 0.75, hits  # nearer the clicked variant than its neighbours (chance: 0.25)

def test_variants_cli_single_and_queries_file(capsys, two_photos, tmp_path):
    paths = []
    for i, photo in enumerate(two_photos):
        paths.append(tmp_path / f"p{i}.png")
        photo.save(paths[-1])
    out = tmp_path / "one"
    code = main(["variants", str(paths[0]), "--text", "in green", "--n", "2", "--seed", "4", "--strength", "0.7",
                 "--out", str(out), "--k", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads((out / "results.json").read_text())[0]
    assert result["strength"] == 0.7 and "green" in result["caption"]
    assert [f["file"] for f in result["images"]] == ["variant_seed4.png", "variant_seed5.png"]

    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"image": "p0.png", "text": "in red"}) + "\n"
                       + json.dumps({"image": str(paths[1]), "text": "make it black"}) + "\n")
    out = tmp_path / "many"
    assert main(["variants", "--queries", str(queries), "--n", "1", "--seed", "2", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(paths[0]), str(paths[1])]
    results = json.loads((out / "results.json").read_text())
    assert "red" in results[0]["caption"] and "black" in results[1]["caption"]
    assert (out / "q000_variant_seed2.png").is_file() and (out / "q001_variant_seed2.png").is_file()


def test_variants_cli_refuses_what_it_cannot_edit(capsys, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), "white").save(blank)
    assert main(["variants", str(blank), "--text", "in red", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no item to edit" in err and err.count("\n") == 1
    assert main(["variants", str(blank), "--strength", "1.5"]) == 2
    assert "--strength must be between 0 and 1" in capsys.readouterr().err
    assert main(["variants", "--out", str(tmp_path)]) == 2
    assert "nothing to edit" in capsys.readouterr().err


def test_the_shoppers_words_override_the_description(service, two_photos):
    """"this dress in blue" edits a dress, whatever the photo was read as."""
    generated, described = service.variants(two_photos[0], "this dress in blue", seeds=[0])
    assert described["articleType"] == "Dresses" and described["baseColour"] == "Blue"
    assert described["original"]["articleType"] != "Dresses" and "articleType" in described["changed"]
    assert generated.caption.startswith("blue dresses")


def test_each_seed_draws_its_own_shade_of_the_asked_colour(service, two_photos):
    """Seeds differ visibly in shade (median colour difference on the item above the 2.3 people notice;
    the editor's noise alone stays under it), each the same again from its seed alone, the shape kept."""
    from models.editing import PhotoEditor
    from models.metrics.structure import median_shade_difference

    stack = lambda images: np.stack([np.asarray(im) for im in images])  # noqa: E731
    seeds = [1, 2, 3, 4, 5, 6]
    shown = [service.variants(photo, "in blue", seeds=seeds)[0] for photo in two_photos]
    assert median_shade_difference(np.stack([stack(g.images) for g in shown])) > 3.0
    noise_only = PhotoEditor(device="cpu", shade_amount=0.0)
    encode = service.encoder.encode
    plain = [stack(noise_only.variants(photo, *encode([service.describe_image(photo)["caption"], g.caption]), seeds))
             for photo, g in zip(two_photos, shown)]
    assert median_shade_difference(np.stack(plain)) < 2.3
    alone, _ = service.variants(two_photos[0], "in blue", seeds=[3])
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(shown[0].images[2]))
    same = structural_similarity(stack(shown[0].images), np.repeat(np.asarray(two_photos[0])[None], 6, 0))
    assert (same > 0.6).all(), same


def _fine_luminance(images: np.ndarray) -> np.ndarray:
    from models.editing import DETAIL_SIGMA, gaussian_blur

    lum = images.astype(np.float32).mean(axis=-1)
    return lum - gaussian_blur(lum, DETAIL_SIGMA)


def test_keep_detail_puts_the_photos_fine_detail_under_the_drawn_colour(two_photos):
    """On a real photo and a "variant" whose item is one flat colour (its mean, shifted red), on the photo's
    background: the result's fine luminance is the photo's, the item's colour the variant's, and pixels
    outside `where` stay the variant's."""
    from models.editing import keep_detail

    photo = np.asarray(two_photos[0])[None]
    item = photo.min(axis=-1) <= 235
    flat = photo.copy()
    flat[item] = np.clip(photo[item].mean(axis=0) + [60, -30, -30], 0, 255).astype(np.uint8)
    out = keep_detail(flat, photo, item)
    assert np.array_equal(out[~item], flat[~item])
    fine_photo = _fine_luminance(photo)[item]
    assert np.corrcoef(_fine_luminance(flat)[item], fine_photo)[0, 1] < 0.6  # the flat item: its outline only
    assert np.corrcoef(_fine_luminance(out)[item], fine_photo)[0, 1] > 0.95
    colour_shift = out[item].mean(axis=0) - flat[item].mean(axis=0)
    assert np.abs(colour_shift).max() < 5, colour_shift  # the colour (0-255: dark channels clip) is the variant's


def test_variants_carry_the_photos_print_and_seams(service, two_photos):
    """The decoder blurs fine detail (print, seams); in the variants the app shows, the fine luminance on
    the item departs from the photo's far less than in the network's own output."""
    from models.editing import PhotoEditor

    photo = two_photos[0]
    pixels = np.asarray(photo)[None]
    item = pixels[0].min(axis=-1) <= 235
    shown, _ = service.variants(photo, "in red", seeds=[0, 1])
    own, wanted = service.encoder.encode([service.describe_image(photo)["caption"], shown.caption])
    blurred = PhotoEditor(device="cpu", detail_sigma=None).variants(photo, own, wanted, [0, 1])

    def departure(images) -> float:  # mean absolute difference (0-255) of the fine luminance on the item
        fine = _fine_luminance(np.stack([np.asarray(im) for im in images]))
        return float(np.abs(fine[:, item] - _fine_luminance(pixels)[:, item]).mean())

    assert departure(shown.images) < 0.5 * departure(blurred), (departure(shown.images), departure(blurred))


def test_the_open_background_stays_the_photos_own(service, two_photos):
    """White background farther than BACKGROUND_MARGIN from the item is the photo's, pixel for pixel (the
    net alone paints faint ghosts there); the item itself changes."""
    from models.data import images_to_tensor
    from models.editing import open_background

    photo = np.asarray(two_photos[1])
    keep = open_background(images_to_tensor(photo[None]))[0, 0].numpy()
    assert 0.2 < keep.mean() < 0.95  # a real product photo: background around an item
    shown, _ = service.variants(two_photos[1], "in green", seeds=[0, 1])
    for image in shown.images:
        pixels = np.asarray(image)
        assert np.array_equal(pixels[keep], photo[keep])
        assert np.abs(pixels[~keep].astype(int) - photo[~keep].astype(int)).mean() > 5
    assert not open_background(torch.full((1, 3, 8, 8), -1.0)).any()  # all item (black): nothing kept
