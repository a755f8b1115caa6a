"""The three dataset layouts and the FashionDataset contract, on committed fixtures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.data import FashionDataset, LabelVocab, caption_variants, is_validation, load_table, square_on_white
from tests.conftest import FIXTURES


def test_pack_layout_reads_images_and_labels(pack_path):
    table = load_table(pack_path)
    assert table.images.shape == (240, 64, 64, 3) and table.images.dtype == np.uint8
    assert len(table.rows) == 240
    assert {"articleType", "baseColour", "productDisplayName"} <= set(table.rows[0])
    # White background: the corners of product photos are near-white.
    assert table.images[:, 0, 0].mean() > 200


def test_pack_with_mismatched_meta_is_refused(tmp_path, pack_path):
    z = np.load(pack_path)
    np.savez(tmp_path / "bad.npz", images=z["images"][:10], ids=z["ids"][:10])
    (tmp_path / "bad_meta.csv").write_text((FIXTURES / "pack" / "mini_meta.csv").read_text())
    with pytest.raises(ValueError, match="does not match"):
        load_table(tmp_path / "bad.npz")


def test_kaggle_layout_pads_to_square_and_skips_missing_images():
    table = load_table(FIXTURES / "kaggle")
    assert len(table) == 40 and table.skipped == 1  # styles.csv lists one product without a photo
    assert table.images.shape[1:] == (64, 64, 3)
    # 60x80 originals padded on white: the left and right margins are white.
    assert table.images[:, 32, 0].min() > 240


def test_fashioniq_layout_counts_missing_images():
    table = load_table(FIXTURES / "fashioniq", fmt="fashioniq")
    assert len(table) == 10 and table.skipped == 2
    assert table.rows[0]["articleType"] == "Dresses"
    assert "darker" in table.rows[0]["productDisplayName"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_table(tmp_path / "nope.npz")


def test_square_on_white_keeps_aspect():
    from PIL import Image

    tall = Image.new("RGB", (30, 60), (0, 0, 0))
    out = np.asarray(square_on_white(tall, 64))
    assert out.shape == (64, 64, 3)
    assert out[32, 2].min() > 240 and out[32, 32].max() < 15


def test_validation_split_is_deterministic_and_about_ten_percent(pack_path):
    ids = range(10000, 20000)
    share = sum(is_validation(i) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [is_validation(i) for i in ids] == [is_validation(str(i)) for i in ids]


def test_caption_variants_match_the_detector_caption_format():
    row = {"articleType": "Shirts", "baseColour": "Navy Blue", "gender": "Men", "usage": "Formal",
           "productDisplayName": "Turtle Check Men Navy Blue Shirt"}
    assert caption_variants(row) == ["navy blue shirts, men, formal", "navy blue shirts",
                                     "Turtle Check Men Navy Blue Shirt"]


def test_fashion_dataset_yields_tokenized_caption_and_labels(pack_path, text_encoder):
    table = load_table(pack_path)
    ds = FashionDataset(table, tokenizer=text_encoder.tokenizer, seed=1)
    item = ds[3]
    assert item["image"].shape == (3, 64, 64)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["caption"] in caption_variants(table.rows[3])
    assert item["input_ids"].shape == item["attention_mask"].shape == (64,)
    t, c = item["labels"].tolist()
    assert ds.vocab.article_types[t] == table.rows[3]["articleType"]
    assert ds.vocab.colours[c] == table.rows[3]["baseColour"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["image"].shape == (8, 3, 64, 64)


def test_label_vocab_marks_unknown_labels():
    vocab = LabelVocab(["Shirts"], ["Red"])
    assert vocab.encode({"articleType": "Hat", "baseColour": "Red"}) == (-1, 0)


def test_text_encoder_is_normalised_and_cached(text_encoder):
    a = text_encoder.encode(["red dress", "navy blue shirt", "red dress"])
    assert a.shape == (3, 384)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-4)
    assert torch.equal(a[0], a[2])
    sims = a @ a.T
    assert sims[0, 1] < 0.9  # different items are not collapsed together
