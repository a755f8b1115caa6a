"""models.search.item_types: products per item type and gender, and the nearest type a gender has."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.search import item_types
from models.search.catalog import Catalogue, encode_thumbnail


@pytest.fixture(scope="module")
def rows(pack_path):
    from models.data import load_table

    return load_table(pack_path).rows


def test_table_holds_the_commonest_groups_and_the_counts(rows):
    table = item_types.build_table(rows, source="mini")
    dresses = table["types"]["Dresses"]
    assert dresses["subCategory"] == "Dress" and dresses["masterCategory"] == "Apparel"
    assert dresses["gender"] == {"Girls": 2, "Women": 10}
    assert sum(dresses["usage"].values()) == 12
    assert json.loads(json.dumps(table)) == table


def test_counts_follow_the_gender_rule_with_or_without_a_catalogue(rows):
    types = item_types.ItemTypes(item_types.build_table(rows))
    assert types.count("Dresses", "Men") == 0 and types.count("Dresses", "Girls") == 2
    assert types.count("Backpacks", "Women") == 11  # Unisex backpacks are for women too
    assert types.count("Dresses", None) == 12


def test_nearest_prefers_the_same_subcategory_then_the_same_master_category():
    table = {"types": {
        "Bra": {"subCategory": "Innerwear", "masterCategory": "Apparel", "usage": {"Casual": 5}},
        "Briefs": {"subCategory": "Innerwear", "masterCategory": "Apparel", "usage": {"Casual": 5}},
        "Shirts": {"subCategory": "Topwear", "masterCategory": "Apparel", "usage": {"Casual": 5}},
        "Belts": {"subCategory": "Belts", "masterCategory": "Accessories", "usage": {"Casual": 5}}}}
    n = 4 * item_types.MIN_OFFER
    labels = ["Bra"] * n + ["Briefs"] * n + ["Shirts"] * n + ["Belts"] * n
    genders = ["Women"] * n + ["Men"] * (3 * n)
    emb = np.random.default_rng(0).normal(size=(len(labels), 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cat = Catalogue(emb, [str(i) for i in range(len(labels))], labels, labels, ["Black"] * len(labels), genders,
                    [encode_thumbnail(np.zeros((64, 64, 3), np.uint8))] * len(labels), {"version": 1})
    types = item_types.ItemTypes(table, cat)
    assert types.count("Bra", "Men") == 0
    assert types.nearest("Bra", "Men", n=3) == ["Briefs", "Shirts", "Belts"]
    assert types.nearest("Briefs", "Women") == ["Bra"]


def test_the_shipped_table_covers_the_shipped_catalogue():
    from models.search.retrieval import DEFAULT_CATALOG

    table = item_types.load()
    assert set(Catalogue.load(DEFAULT_CATALOG).article_types) <= set(table["types"])
    assert all({"subCategory", "masterCategory", "usage", "gender"} <= set(t) for t in table["types"].values())


def test_a_missing_table_is_empty(tmp_path):
    assert item_types.load(tmp_path / "none.json") == {"types": {}}
    (tmp_path / "bad.json").write_text("[1, 2")
    assert item_types.load(tmp_path / "bad.json") == {"types": {}}
