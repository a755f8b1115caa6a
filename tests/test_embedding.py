"""The search embedding: mining masks, the triplet losses, P x K batches, training steps, resume."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from models.search.embedding import (
    MINING,
    EmbeddingConfig,
    EmbeddingModel,
    class_balanced_batch,
    label_masks,
    product_masks,
    triplet_loss,
)

TINY = EmbeddingConfig(dim=16, width=8, text_hidden=32, article_types=["Shirts", "Dresses", "Shoes"],
                       colours=["Red", "Blue"], genders=["Men", "Women"])


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float), dim=1)


def test_label_masks_by_type_colour_and_product():
    types = torch.tensor([0, 0, 0, 1, 0])
    colours = torch.tensor([0, 0, 1, 0, -1])
    products = torch.tensor([10, 11, 12, 13, 10])  # row 4 is the caption of row 0's product
    pos, neg = label_masks(types, colours, products)
    assert pos[0, 1] and pos[1, 0]  # same type and colour
    assert pos[0, 4] and not neg[0, 4]  # same product, although the caption's colour is unknown
    assert neg[0, 2] and neg[0, 3]  # another colour; another type
    assert not pos[1, 4] and not neg[1, 4]  # unknown colour, same type: neither
    assert not pos.diagonal().any() and not neg.diagonal().any()


def test_product_masks_exclude_identical_captions():
    pos, neg = product_masks(torch.tensor([1, 2, 3]), ["red shirt", "red shirt", "blue dress"])
    assert pos.equal(torch.eye(3, dtype=torch.bool))
    assert not neg[0, 1] and not neg[1, 0] and neg[0, 2] and neg[2, 1]


@pytest.mark.parametrize("mining", MINING)
def test_triplet_loss_is_zero_when_separated_and_positive_when_not(mining):
    # Rows 0, 1 one class, rows 2, 3 another, far apart.
    good = _unit([1, 0.05], [1, -0.05], [-1, 0.05], [-1, -0.05])
    labels = torch.tensor([0, 0, 1, 1])
    pos, neg = label_masks(labels, torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert triplet_loss(good, good, pos, neg, 0.2, mining).item() == pytest.approx(0.0)
    bad = _unit([1, 0.05], [-1, -0.05], [-1, 0.05], [1, -0.05])  # each positive sits with the other class
    # Semi-hard falls back to the least similar negative when none is below the positive (FaceNet).
    assert triplet_loss(bad, bad, pos, neg, 0.2, mining).item() > (0.2 if mining == "semi-hard" else 1.0)


def test_batch_hard_picks_the_hardest_positive_and_negative():
    a = _unit([1, 0])
    cands = _unit([1, 0.1], [0.6, 0.8], [0.8, 0.6], [0, 1])  # positives 0, 1; negatives 2, 3
    pos = torch.tensor([[True, True, False, False]])
    neg = ~pos
    s = (a @ cands.T)[0]
    expected = F.relu(0.2 + s[2] - s[1])  # hardest positive: 1 (least similar); hardest negative: 2
    assert triplet_loss(a, cands, pos, neg, 0.2, "batch-hard").item() == pytest.approx(expected.item(), abs=1e-6)


def test_semi_hard_uses_the_negative_just_below_each_positive():
    a = _unit([1, 0])
    cands = _unit([1, 0.0], [0.9, 0.44], [0.95, 0.31], [0.2, 0.98])  # sims ~1.0, 0.9, 0.95, 0.2
    pos = torch.tensor([[True, False, False, False]])
    neg = torch.tensor([[False, True, True, True]])
    s = (a @ cands.T)[0]
    # The most similar negative below the positive's 1.0 is row 2 (0.95): loss = 0.2 + 0.95 - 1.0.
    expected = F.relu(0.2 + s[2] - s[0])
    assert triplet_loss(a, cands, pos, neg, 0.2, "semi-hard").item() == pytest.approx(expected.item(), abs=1e-5)


def test_anchors_without_positives_do_not_count_and_bad_mining_is_refused():
    e = _unit([1, 0], [0, 1])
    pos = torch.zeros(2, 2, dtype=torch.bool)
    assert triplet_loss(e, e, pos, ~pos, 0.2).item() == 0.0
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(e, e, pos, ~pos, 0.2, "hardest")


def test_class_balanced_batch_draws_k_per_cell():
    cells = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9, 10]]
    g = torch.Generator().manual_seed(0)
    rows = class_balanced_batch(cells, torch.tensor([1.0, 1.0, 1.0]), 2, 3, g)
    assert len(rows) == 6
    groups = [rows[:3], rows[3:]]
    for group in groups:
        cell = next(c for c in cells if group[0] in c)
        assert all(r in cell for r in group)
    for group in groups:
        if group[0] not in cells[1]:
            assert len(set(group)) == 3  # distinct members when the cell is large enough
    small = class_balanced_batch([[5, 6]], torch.tensor([1.0]), 1, 4, g)
    assert len(small) == 4 and set(small) <= {5, 6}  # with replacement when it is not


def test_model_shapes_and_normalisation():
    model = EmbeddingModel(TINY)
    x = torch.rand(5, 3, 64, 64) * 2 - 1
    emb, t, c, g = model.image.forward_with_logits(x)
    assert emb.shape == (5, 16) and t.shape == (5, 3) and c.shape == (5, 2) and g.shape == (5, 2)
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    text = model.text(F.normalize(torch.randn(4, 384), dim=1))
    assert text.shape == (4, 16) and torch.allclose(text.norm(dim=1), torch.ones(4), atol=1e-5)
    assert EmbeddingConfig.from_dict({**TINY.to_dict(), "unknown": 1}) == TINY


def test_triplet_training_separates_fixture_classes(pack_path):
    """A few steps of the real losses on fixture images pull same-label pairs above other pairs."""
    from models.data import LabelVocab, images_to_tensor, load_table

    torch.manual_seed(0)
    table = load_table(pack_path)
    rows = [i for i, r in enumerate(table.rows) if r["articleType"] in ("Tshirts", "Casual Shoes", "Handbags")][:48]
    vocab = LabelVocab.from_rows([table.rows[i] for i in rows])
    labels = torch.tensor([vocab.encode(table.rows[i]) for i in rows])
    x = images_to_tensor(table.images[rows])
    cfg = EmbeddingConfig(dim=16, width=8, article_types=vocab.article_types, colours=vocab.colours)
    model = EmbeddingModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Item type only (one colour for all), so every row has positives.
    pos, neg = label_masks(labels[:, 0], torch.zeros_like(labels[:, 0]), torch.arange(len(rows)))

    def loss_now():
        e = model.image(x)
        return triplet_loss(e, e, pos, neg, 0.2, "semi-hard")

    model.train()
    first = loss_now().item()
    for _ in range(25):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.7, (first, loss.item())


def _same(a, b) -> bool:
    """Nested dicts / lists of tensors and plain values, equal exactly."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_train_embedding_runs_resumes_and_exports(tmp_path, pack_path):
    """The trainer on the fixture pack (all validation products, so holdout off via --limit trick):
    writes config, metrics and checkpoint; resume (through `models.train --stage embed`, the one
    training entry point) continues exactly: 2 steps + 2 resumed end with the weights and optimiser
    state of 4 steps in one go; export loads."""
    import numpy as np

    from models.checkpoint import load_checkpoint
    from models.data import load_table
    from models.search.retrieval import SearchModel
    from models.train import main as train_main
    from models.training.embedding import main

    # The fixture holds validation products only: relabel a copy with ids that hash to training.
    table = load_table(pack_path)
    from models.data import is_validation

    new_ids, k = [], 1
    for _ in table.rows:
        while is_validation(k):
            k += 1
        new_ids.append(k)
        k += 1
    meta = (pack_path.parent / "mini_meta.csv").read_text().splitlines()
    header, lines = meta[0], meta[1:]
    lines = [",".join([str(i)] + line.split(",")[1:]) for i, line in zip(new_ids, lines)]
    (tmp_path / "train_meta.csv").write_text("\n".join([header, *lines]) + "\n")
    np.savez(tmp_path / "train.npz", images=table.images, ids=np.array(new_ids))

    out = tmp_path / "run"
    common = ["--data", str(tmp_path / "train.npz"), "--out", str(out), "--width", "8", "--dim", "16",
              "--cells", "6", "--per-cell", "2", "--eval-every", "2", "--checkpoint-every", "2",
              "--log-every", "1", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--threads", "1"]
    assert main([*common, "--steps", "2"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert train_main(["--stage", "embed", *common, "--steps", "4", "--resume"]) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 4
    straight = tmp_path / "straight"
    assert main([*common, "--out", str(straight), "--steps", "4"]) == 0  # the later --out wins
    once = load_checkpoint(straight / "checkpoint.pt")
    assert once["step"] == 4 and once["state_dict"].keys() == ckpt["state_dict"].keys()
    for key, value in once["state_dict"].items():
        assert torch.equal(value, ckpt["state_dict"][key]), f"resumed weights differ: {key}"
    assert _same(once["optimizer"], ckpt["optimizer"]), "resumed optimiser state differs"
    config = json.loads((out / "config.json").read_text())
    assert config["embedding"]["dim"] == 16 and config["train"]["steps"] == 4
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss") and len(lines) == 5
    assert main([*common, "--export", str(tmp_path / "embedding.pt")]) == 0
    model = SearchModel(tmp_path / "embedding.pt")
    emb = model.embed_images(table.images[:3])
    assert emb.shape == (3, 16)
    predicted = model.predict(table.images[:2])
    assert set(predicted[0]) >= {"articleType", "baseColour", "gender", "caption", "confidence"}
