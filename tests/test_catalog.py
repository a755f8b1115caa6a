"""The catalogue index (build, save/load round trip, damaged files, exact search) and safe image opening."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from models.images import open_image
from models.search.catalog import (
    CatalogError,
    Catalogue,
    encode_thumbnail,
    gender_labels,
    gender_match,
    stratified_selection,
)


def _tiny(n=6, dim=4):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    thumbs = [encode_thumbnail(np.full((64, 64, 3), 40 * i, np.uint8)) for i in range(n)]
    return Catalogue(emb, [str(100 + i) for i in range(n)], [f"Title {i}" for i in range(n)],
                     ["Shirts"] * n, ["Red", "Blue"] * (n // 2), ["Men"] * n, thumbs, {"version": 1, "model": "abc"})


class FakeEncoder:
    """A fixed 'embedding': the image sampled on a 4x4 grid, so the expected ranking is known."""

    dim = 48
    fingerprint = "fake-encoder"

    def embed_images(self, images):
        v = np.asarray(images, np.float32)[:, 8::16, 8::16, :].reshape(len(images), -1) - 127.5
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_build_save_load_round_trip(tmp_path, pack_path):
    from models.data import load_table

    table = load_table(pack_path).subset(range(20))
    cat = Catalogue.build(table, FakeEncoder(), source="mini")
    assert len(cat) == 20 and cat.embeddings.dtype == np.float16
    cat.save(tmp_path / "c.npz")
    back = Catalogue.load(tmp_path / "c.npz")
    assert back.ids == [r["id"] for r in table.rows]
    assert back.titles == [r["productDisplayName"] for r in table.rows]
    assert back.article_types == cat.article_types and back.colours == cat.colours and back.genders == cat.genders
    assert np.array_equal(back.embeddings, cat.embeddings)
    assert back.meta["model"] == "fake-encoder" and back.meta["products"] == 20
    thumb = back.thumbnail(3)
    assert thumb.size == (64, 64) and thumb.mode == "RGB"
    # JPEG thumbnails are small and close to the original.
    assert max(len(t) for t in back.thumbnails) < 4000
    assert np.abs(np.asarray(thumb, np.float32) - table.images[3]).mean() < 12
    assert back.product(0)["id"] == int(table.rows[0]["id"])


def test_search_ranking_on_a_tiny_catalogue_is_exact():
    cat = _tiny()
    query = cat.embeddings[3].astype(np.float32)
    hits = cat.search(query, k=3)
    assert hits[0][0] == 3 and hits[0][1] == pytest.approx(1.0, abs=1e-3)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    brute = np.argsort(-(cat.embeddings.astype(np.float32) @ query))[:3]
    assert [i for i, _ in hits] == brute.tolist()
    assert [i for i, _ in cat.search(query, k=3, exclude=[3])][0] != 3
    assert len(cat.search(query, k=100)) == len(cat)  # k larger than the catalogue
    top, _ = cat.search_many(np.stack([cat.embeddings[1], cat.embeddings[4]]), k=1)
    assert top[:, 0].tolist() == [1, 4]
    with pytest.raises(ValueError, match="query vectors"):
        cat.search(np.ones(7), k=1)


def test_label_facets_lift_matching_products_above_closer_ones():
    cat = _tiny()  # rows alternate Red / Blue, all Shirts
    query = cat.embeddings[1].astype(np.float32)  # row 1 is Blue
    assert cat.search(query, k=1)[0][0] == 1
    bonus = cat.label_bonus([{"articleType": "shirts", "baseColour": "RED"}], 5.0)
    assert bonus.shape == (1, 6) and bonus[0].tolist() == [10.0, 5.0] * 3  # case folded, one point per label
    red_first = [row for row, _ in cat.search(query, k=3, bonus=bonus[0])]
    assert all(cat.colours[row] == "Red" for row in red_first)
    # Within the facet the embedding still ranks: the closest red shirt comes first.
    sims = cat.embeddings.astype(np.float32) @ query
    assert red_first[0] == max((i for i in range(6) if cat.colours[i] == "Red"), key=lambda i: sims[i])
    assert cat.label_bonus([{}], 1.0).sum() == 0 and cat.label_bonus([{"baseColour": "Red"}], 0.0) is None
    assert cat.bonus([{"baseColour": "Red"}], 0.0, 0.0) is None  # no attribute heads, no labels: none
    assert cat.bonus([{"baseColour": "Red"}], 0.1, 1.0).tolist() == [[1.0, 0.0] * 3]


def test_gender_facet_rule_unisex_goes_with_men_and_women_kids_are_their_own():
    assert gender_labels("Men") == {"men", "unisex"} and gender_labels("women") == {"women", "unisex"}
    assert gender_labels("Unisex") == {"unisex", "men", "women"}
    assert gender_labels("Girls") == {"girls"} and gender_labels("Boys") == {"boys"}
    assert gender_labels(None) == gender_labels("") == set()
    got = gender_match(np.array(["Men", "Women", "Girls", ""]),
                       np.array([["Men", "Unisex", "Women", "Boys"]] * 4))
    assert got.tolist() == [[True, True, False, False], [False, True, True, False],
                            [False, False, False, False], [False, False, False, False]]


def test_gender_facet_adds_its_own_weight_for_matching_genders():
    cat = _tiny()
    cat.genders = ["Men", "Women", "Unisex", "Boys", "Girls", "Women"]
    cat = Catalogue(cat.embeddings, cat.ids, cat.titles, cat.article_types, cat.colours, cat.genders, cat.thumbnails,
                    cat.meta)
    assert cat.label_bonus([{"gender": "women"}], 1.0, 1.5)[0].tolist() == [0, 1.5, 1.5, 0, 0, 1.5]
    assert cat.label_bonus([{"gender": "Men", "baseColour": "Red"}], 1.0, 1.5)[0].tolist() == [2.5, 0, 2.5, 0, 1, 0]
    assert cat.label_bonus([{"gender": "Girls"}], 0.0, 2.0)[0].tolist() == [0, 0, 0, 0, 2, 0]
    assert cat.label_bonus([{"gender": "Unisex"}], 1.0, 1.0)[0].tolist() == [1, 1, 1, 0, 0, 1]
    assert cat.label_bonus([{"gender": "Men"}], 1.0)[0].tolist() == [0] * 6  # no gender weight: no gender facet
    assert cat.bonus([{"gender": "Boys"}], 0.0, 1.0, 1.0)[0].tolist() == [0, 0, 0, 1, 0, 0]


def test_search_finds_the_same_image_with_a_known_encoder(pack_path):
    from models.data import load_table

    table = load_table(pack_path).subset(range(30))
    enc = FakeEncoder()
    cat = Catalogue.build(table, enc)
    for row in (0, 7, 21):
        assert cat.search(enc.embed_images(table.images[row : row + 1])[0], k=1)[0][0] == row


def test_missing_and_damaged_files_give_clear_errors(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        Catalogue.load(tmp_path / "nope.npz")
    good = tmp_path / "good.npz"
    _tiny().save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match="damaged"):
        Catalogue.load(tmp_path / "truncated.npz")
    # A bit flip in the zip's own directory (no member CRC covers it) breaks the file's seal.
    flipped = bytearray(data)
    flipped[-200] ^= 0x04
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(CatalogError, match="flipped.npz"):
        Catalogue.load(tmp_path / "flipped.npz")
    (tmp_path / "noise.npz").write_bytes(b"\x00not a zip file at all" * 10)
    with pytest.raises(CatalogError):
        Catalogue.load(tmp_path / "noise.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CatalogError, match="lacks"):
        Catalogue.load(tmp_path / "other.npz")
    # Pickled object arrays are never unpickled.
    with zipfile.ZipFile(good) as z:
        members = {name: z.read(name) for name in z.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    members["titles.npy"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(CatalogError):
        Catalogue.load(tmp_path / "pickled.npz")
    # Inconsistent thumbnail offsets.
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["thumb_offsets"] = arrays["thumb_offsets"][:-1]
    np.savez(tmp_path / "offsets.npz", **arrays)
    with pytest.raises(CatalogError, match="offsets"):
        Catalogue.load(tmp_path / "offsets.npz")
    arrays = {k: v for k, v in np.load(good).items()}
    arrays["meta"] = np.array('{"version": 99}')
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(CatalogError, match="version 99"):
        Catalogue.load(tmp_path / "future.npz")


def test_stratified_selection_covers_every_cell():
    rows = [{"id": str(i), "articleType": "Tshirts", "baseColour": "Black"} for i in range(100)]
    rows += [{"id": str(100 + i), "articleType": "Dresses", "baseColour": c}
             for i, c in enumerate(["Red"] * 5 + ["Blue"])]
    picked = stratified_selection(rows, 20)
    assert len(picked) == 20 and len(set(picked)) == 20
    cells = [(rows[i]["articleType"], rows[i]["baseColour"]) for i in picked]
    # Shares grow with the square root of the cell size: 100 -> 16, 5 -> 3, 1 -> 1.
    assert cells.count(("Dresses", "Blue")) == 1 and 2 <= cells.count(("Dresses", "Red")) <= 5
    assert cells.count(("Tshirts", "Black")) >= 12
    assert stratified_selection(rows, 20) == picked  # deterministic
    assert stratified_selection(rows, 1000) == list(range(len(rows)))
    assert len(stratified_selection(rows, 2)) == 2  # fewer than the cells: one from each of the largest


# ---- open_image ----------------------------------------------------------------------------------

def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_open_image_converts_modes_to_rgb_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = open_image(_save(rgba, "PNG"))
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    r, g, b = open_image(_save(cmyk, "JPEG")).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60
    grey16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert open_image(_save(grey16, "PNG")).getpixel((1, 1)) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 128, 0] + [0] * 765)
    pal.info["transparency"] = 0
    assert open_image(_save(pal, "PNG", transparency=0)).getpixel((1, 1)) == (255, 255, 255)
    assert open_image(_save(Image.new("L", (4, 4), 80), "PNG")).getpixel((0, 0)) == (80, 80, 80)


def test_open_image_applies_exif_rotation(tmp_path):
    img = Image.new("RGB", (20, 10), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    assert open_image(path).size == (10, 20)


def test_open_image_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        open_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ValueError, match="not an image"):
        open_image(tmp_path / "text.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        open_image(tmp_path / "empty.jpg")
    jpeg = _save(Image.new("RGB", (64, 64), "red"), "JPEG")
    with pytest.raises(ValueError, match="damaged or truncated"):
        open_image(jpeg[: len(jpeg) // 2])
    big = _save(Image.new("1", (12000, 12000)), "PNG")  # 144 M pixels in a few KB: a decompression bomb
    with pytest.raises(ValueError, match="too large"):
        open_image(big)
    with pytest.raises(ValueError, match="too large"):
        open_image(_save(Image.new("RGB", (100, 100)), "PNG"), max_pixels=5000)
    with pytest.raises(ValueError, match="too large"):
        open_image(jpeg, max_bytes=100)
    with pytest.raises(ValueError, match="not a file"):
        open_image(tmp_path)


# ---- the shipped catalogue and search model -------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_service():
    """app.chat.service.ModelService with nothing given: the shipped weights/embedding.pt and
    assets/catalog/catalog.npz, loaded by load_catalog() itself (any error fails the tests)."""
    from app.chat.service import ModelService

    service = ModelService(device="cpu")
    service.load_catalog()
    return service


def test_shipped_catalogue_and_search_model_answer_photo_queries(shipped_service, pack_path):
    """Every fixture-pack product that is also in the shipped catalogue: the model embeds its photo to
    the catalogue's stored vector, and a photo query whose predicted type, colour and gender are the
    product's catalogue labels finds that very product first (facets + cosine 1); the others land on
    products of the type, colour and gender the photo was described as."""
    from models.data import load_table
    from models.search.catalog import gender_labels
    from models.search.retrieval import DEFAULT_CATALOG, GENDER_WEIGHT, LABEL_WEIGHT

    retriever = shipped_service.retriever
    cat = retriever.catalogue
    assert shipped_service.catalog_error is None and cat.path == DEFAULT_CATALOG
    assert len(cat) == cat.meta["products"] and cat.model == retriever.model.fingerprint
    table = load_table(pack_path)
    row_of = {product_id: row for row, product_id in enumerate(cat.ids)}
    shared = [k for k, r in enumerate(table.rows) if str(r["id"]) in row_of]
    assert len(shared) >= 20, f"only {len(shared)} fixture products are in the shipped catalogue"
    rows = [row_of[str(table.rows[k]["id"])] for k in shared]
    cosine = (retriever.model.embed_images(table.images[shared]) * cat.embeddings[rows].astype(np.float32)).sum(1)
    assert cosine.min() > 0.999, f"stored embeddings differ from the model's: min cosine {cosine.min():.4f}"
    found_itself = 0
    for k, row in zip(shared, rows):
        photo = Image.fromarray(table.images[k])
        described = shipped_service.describe_image(photo)
        assert described["articleType"] in cat.meta["attribute_labels"]["articleType"]
        assert described["baseColour"] in cat.meta["attribute_labels"]["baseColour"]
        assert 0 < described["confidence"]["articleType"] <= 1 and 0 < described["confidence"]["baseColour"] <= 1
        hits = shipped_service.similar_to_image(photo, k=5)
        assert len(hits) == 5 and len({h["id"] for h in hits}) == 5
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        genders = gender_labels(described["gender"])
        if ((described["articleType"], described["baseColour"]) == (cat.article_types[row], cat.colours[row])
                and cat.genders[row].casefold() in genders):
            assert hits[0]["id"] == int(table.rows[k]["id"]), (table.rows[k]["id"], hits[0])
            assert hits[0]["score"] == pytest.approx(2 * LABEL_WEIGHT + GENDER_WEIGHT + 1, abs=2e-3)
            found_itself += 1
        wanted = (described["articleType"], described["baseColour"])
        cell = sum((t, c) == wanted and g.casefold() in genders
                   for t, c, g in zip(cat.article_types, cat.colours, cat.genders))
        if cell >= 5:  # the facets fill the page
            assert all((h["articleType"], h["baseColour"]) == wanted and h["gender"].casefold() in genders
                       for h in hits), (described, hits)
    assert found_itself >= 5, f"the photo query found its own product first for only {found_itself} products"


def test_shipped_catalogue_answers_an_uploaded_file_and_a_change(shipped_service):
    """A fixture photo file (JPEG, 60x80, as a user uploads it): described, then searched as it is and
    'in <another colour>'; the composed query's products have the new colour (as many as the catalogue
    holds of the described type and gender in it)."""
    from models.search.catalog import gender_labels
    from tests.conftest import FIXTURES

    cat = shipped_service.retriever.catalogue
    path = sorted((FIXTURES / "kaggle" / "images").glob("*.jpg"))[0]
    described = shipped_service.describe_image(path)
    plain = shipped_service.similar_to_image(path, k=8)
    assert len(plain) == 8 and all(isinstance(h["thumbnail"], Image.Image) for h in plain)
    colour = "Red" if described["baseColour"] != "Red" else "Blue"
    genders = gender_labels(described["gender"])
    cell = sum(t == described["articleType"] and c == colour and g.casefold() in genders
               for t, c, g in zip(cat.article_types, cat.colours, cat.genders))
    changed = shipped_service.similar_to_image(path, f"in {colour.lower()}", k=min(cell, 8))
    assert cell >= 1 and changed and all(h["baseColour"] == colour for h in changed), (described, changed)
    assert {h["id"] for h in changed} != {h["id"] for h in plain[: len(changed)]}
