"""`main.py search | variants | index` contracts and errors, and the ModelService search API.

Uses the bundled embedding weights (weights/embedding.pt), a catalogue built here from the fixture
pack, and a tiny random generator written here (the bundled generator is not needed).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from app.commands.cli import main
from tests.conftest import FIXTURES, ROOT


@pytest.fixture(scope="module", autouse=True)
def _shipped_search_weights():
    """The search model is shipped in weights/: without it these tests fail, they do not skip."""
    path = ROOT / "weights" / "embedding.pt"
    if not path.is_file():
        pytest.fail(f"{path} is missing: it is shipped with the app (see assets/catalog/README.md)")


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, pack_path):
    path = tmp_path_factory.mktemp("catalog") / "mini.npz"
    assert main(["index", "--pack", str(pack_path), "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    import torch

    from models.checkpoint import save_checkpoint
    from models.config import GANConfig
    from models.networks import Generator

    torch.manual_seed(0)
    cfg = GANConfig(g_width=8, z_dim=16, cond_dim=16)
    path = tmp_path_factory.mktemp("gen") / "tiny.pt"
    save_checkpoint(path, {"state_dict": Generator(cfg).state_dict(), "config": {"gan": cfg.to_dict()}, "step": 1})
    return path


@pytest.fixture(scope="module")
def product_image(tmp_path_factory, pack_path):
    """The fixture pack's first product photo saved as a PNG file, and its labels."""
    from models.data import load_table

    table = load_table(pack_path)
    path = tmp_path_factory.mktemp("img") / "product.png"
    Image.fromarray(table.images[0]).save(path)
    return path, table.rows[0]


# ---- index ---------------------------------------------------------------------------------------

def test_index_from_pack_and_kaggle_layout(capsys, catalog, tmp_path):
    from models.search.catalog import Catalogue

    cat = Catalogue.load(catalog)
    assert len(cat) == 240 and cat.dim > 0
    code, out, _ = run(capsys, "index", "--images", FIXTURES / "kaggle" / "images",
                       "--styles", FIXTURES / "kaggle" / "styles.csv", "--out", tmp_path / "k.npz")
    assert code == 0
    summary = json.loads(out)
    assert summary["products"] == 40 and summary["skipped"] == 1
    assert len(Catalogue.load(tmp_path / "k.npz")) == 40
    code, out, _ = run(capsys, "index", "--pack", FIXTURES / "pack" / "mini.npz", "--select", "30",
                       "--out", tmp_path / "s.npz")
    assert code == 0 and json.loads(out)["products"] == 30


@pytest.mark.parametrize("argv, message", [
    (["index", "--out", "x.npz"], "either --pack"),
    (["index", "--pack", "a.npz", "--images", "d", "--out", "x.npz"], "either --pack"),
    (["index", "--images", "d", "--out", "x.npz"], "both --images"),
    (["index", "--pack", "missing.npz", "--out", "x.npz"], "not found"),
])
def test_index_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error:") and message in err


# ---- search --------------------------------------------------------------------------------------

def test_text_search_prints_ranked_json(capsys, catalog):
    code, out, _ = run(capsys, "search", "black casual shoes", "--catalog", catalog, "--k", "5", "--no-expand")
    assert code == 0
    result = json.loads(out)
    assert result["query"]["text"] == "black casual shoes" and result["query"]["mode"] == "text"
    assert result["query"]["expanded"] is False
    hits = result["results"]
    assert len(hits) == 5
    assert set(hits[0]) == {"id", "title", "articleType", "baseColour", "gender", "score"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # Type precision is measured by models.metrics.evaluate_retrieval; here: the query lands on black shoes.
    assert sum(h["articleType"].endswith("Shoes") and h["baseColour"] == "Black" for h in hits) >= 3
    assert sum(h["baseColour"] == "Black" for h in hits) >= 3


def test_named_facets_come_first_and_the_embedding_ranks_within_them(capsys, catalog):
    """Every product whose type and colour match what the text names ranks above the others (the
    catalogue-label facets), whatever their cosine; then products matching one of the two."""
    from models.search.catalog import Catalogue

    cat = Catalogue.load(catalog)
    cells = Counter(zip(cat.article_types, cat.colours))
    (article_type, colour), n = max(cells.items(), key=lambda item: (item[1], item[0]))
    assert n >= 3
    code, out, _ = run(capsys, "search", f"{colour} {article_type}", "--catalog", catalog, "--k", str(n + 5),
                       "--no-expand")
    assert code == 0
    hits = json.loads(out)["results"]
    matches = [(h["articleType"] == article_type) + (h["baseColour"] == colour) for h in hits]
    assert matches[:n] == [2] * n and all(m <= 1 for m in matches[n:])
    assert matches[n:] == sorted(matches[n:], reverse=True)


def _gender_ok(wanted: str, label: str) -> bool:
    from models.search.catalog import gender_labels

    return label.casefold() in gender_labels(wanted)


def test_a_named_gender_is_a_facet_like_type_and_colour(capsys, catalog):
    """'<item> for <gender>': every product of that type and a matching gender (Unisex goes with Men and
    Women) ranks first, for every type the catalogue sells to more than one gender."""
    from app.chat.service import ModelService
    from models.search.catalog import Catalogue

    cat = Catalogue.load(catalog)
    cells = Counter(zip(cat.article_types, cat.genders))
    code, out, _ = run(capsys, "search", "dresses for women", "--catalog", catalog, "--k", "3", "--no-expand")
    assert code == 0 and all(_gender_ok("Women", h["gender"]) for h in json.loads(out)["results"])
    service = ModelService(catalog=catalog, device="cpu")
    service.load_catalog()
    checked = 0
    for article_type in sorted(set(cat.article_types)):
        genders = {g for (t, g), n in cells.items() if t == article_type and n >= 2}
        for gender in sorted(genders - {"Unisex"}) if len(genders) > 1 else []:
            n = sum(n for (t, g), n in cells.items() if t == article_type and _gender_ok(gender, g))
            text = f"{article_type} for {gender}".lower()
            hits = service.retriever.search(service.retriever.text_query(text), k=n)
            assert all(h["articleType"] == article_type and _gender_ok(gender, h["gender"]) for h in hits), (text, hits)
            checked += 1
    assert checked >= 4


def test_photo_queries_keep_the_described_gender(catalog, pack_path):
    """A photo (and a photo + 'in <colour>') asks for the gender the search model describes in it, as it
    asks for the described type: where the catalogue holds enough products of that type, colour and gender,
    they fill the page."""
    from app.chat.service import ModelService
    from models.data import load_table
    from models.search.catalog import Catalogue

    cat = Catalogue.load(catalog)
    service = ModelService(catalog=catalog, device="cpu")
    service.load_catalog()
    table = load_table(pack_path)
    checked = 0
    for image in table.images[:80]:
        photo = Image.fromarray(image)
        described = service.describe_image(photo)
        t, c, g = described["articleType"], described["baseColour"], described["gender"]
        other = "Black" if c != "Black" else "White"
        for colour, text in ((c, ""), (other, f"in {other.lower()}")):
            n = sum(a == t and b == colour and _gender_ok(g, x)
                    for a, b, x in zip(cat.article_types, cat.colours, cat.genders))
            if n < 2:
                continue
            hits = service.similar_to_image(photo, text, k=n)
            assert all((h["articleType"], h["baseColour"]) == (t, colour) and _gender_ok(g, h["gender"])
                       for h in hits), (described, text, hits)
            checked += 1
    assert checked >= 10


def test_global_catalog_option_before_the_command(capsys, catalog):
    code, out, _ = run(capsys, "--catalog", catalog, "search", "red", "tshirt", "--no-expand", "--k", "3")
    assert code == 0 and len(json.loads(out)["results"]) == 3


def test_image_search_finds_the_same_product_first(capsys, catalog, product_image):
    path, row = product_image
    code, out, _ = run(capsys, "search", "--image", path, "--catalog", catalog, "--k", "3")
    assert code == 0
    result = json.loads(out)
    assert result["query"]["mode"] == "image" and result["query"]["image"] == str(path)
    assert result["results"][0]["id"] == int(row["id"])
    assert result["query"]["predicted"]["articleType"]


def test_composed_search_applies_the_new_colour(capsys, catalog, product_image):
    path, row = product_image
    colour = "Red" if row["baseColour"] != "Red" else "Blue"
    code, out, _ = run(capsys, "search", f"in {colour.lower()}", "--image", path, "--catalog", catalog)
    assert code == 0
    result = json.loads(out)
    assert result["query"]["mode"] == "composed"
    assert result["query"]["modified"]["baseColour"] == colour
    assert colour.lower() in result["query"]["caption"]
    assert len(result["results"]) == 10


def test_queries_file_gives_one_line_per_query_in_order(capsys, catalog, product_image, tmp_path):
    path, _ = product_image
    lines = [{"text": "blue jeans"}, {"image": str(path)}, {"text": "in black", "image": str(path)},
             {"text": "white sports shoes"}]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    code, out, _ = run(capsys, "search", "--queries", qfile, "--catalog", catalog, "--k", "4", "--no-expand")
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["query"]["mode"] for r in results] == ["text", "image", "composed", "text"]
    assert [r["query"]["text"] for r in results] == ["blue jeans", None, "in black", "white sports shoes"]
    assert all(len(r["results"]) == 4 for r in results)


def test_expansion_uses_the_generator_when_on(capsys, catalog, tiny_generator):
    from models.search.retrieval import EXPAND_DEFAULT

    code, out, _ = run(capsys, "search", "red dress", "--catalog", catalog, "--weights", tiny_generator, "--k", "3")
    assert code == 0
    plain = json.loads(out)
    assert plain["query"]["expanded"] is EXPAND_DEFAULT
    code, out, _ = run(capsys, "search", "red dress", "--catalog", catalog, "--weights", tiny_generator,
                       "--expand", "--k", "3")
    assert code == 0 and json.loads(out)["query"]["expanded"] is True
    code, out, _ = run(capsys, "search", "red dress", "--catalog", catalog, "--weights", tiny_generator,
                       "--no-expand", "--k", "3")
    assert json.loads(out)["query"]["expanded"] is False
    # Without generator weights the expansion is skipped, not an error.
    code, out, _ = run(capsys, "search", "red dress", "--catalog", catalog, "--weights", "missing.pt",
                       "--expand", "--k", "3")
    assert code == 0 and json.loads(out)["query"]["expanded"] is False


def _bomb(path):
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("case", ["missing", "not-image", "truncated", "bomb"])
def test_bad_images_are_clear_errors(capsys, catalog, tmp_path, case):
    path = tmp_path / "img.jpg"
    if case == "not-image":
        path.write_text("just text")
    elif case == "truncated":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[:300])
    elif case == "bomb":
        path = _bomb(tmp_path / "bomb.png")
    code, out, err = run(capsys, "search", "--image", path, "--catalog", catalog)
    assert code == 2 and out == "" and err.startswith("error:")
    expected = {"missing": "not found", "not-image": "not an image", "truncated": "damaged or truncated",
                "bomb": "too large"}[case]
    assert expected in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "line 1: not JSON"),
    ('{"text": "red"}\n[1, 2]', "line 2: expected an object"),
    ('{"text": 5}', "must be strings"),
    ('{"text": "  "}', "empty query"),
    ('{"image": "nowhere.png"}', "not found"),
    ("", "no queries"),
])
def test_bad_queries_files(capsys, catalog, tmp_path, content, message):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(content)
    code, out, err = run(capsys, "search", "--queries", qfile, "--catalog", catalog)
    assert code == 2 and out == "" and message in err


def test_search_argument_and_catalogue_errors(capsys, catalog, tmp_path):
    assert run(capsys, "search", "--catalog", catalog)[0] == 2
    code, _, err = run(capsys, "search", "red", "--k", "0", "--catalog", catalog)
    assert code == 2 and "--k" in err
    code, _, err = run(capsys, "search", "red", "--catalog", tmp_path / "none.npz")
    assert code == 2 and "catalogue not found" in err and "--catalog FILE" in err
    (tmp_path / "bad.npz").write_bytes(b"garbage" * 20)
    code, _, err = run(capsys, "search", "red", "--catalog", tmp_path / "bad.npz")
    assert code == 2 and "damaged" in err
    code, _, err = run(capsys, "search", "red", "--queries", tmp_path / "q.jsonl", "--catalog", catalog)
    assert code == 2 and "not both" in err


def test_catalogue_from_another_model_is_refused(capsys, catalog, tmp_path):
    from models.search.catalog import Catalogue

    cat = Catalogue.load(catalog)
    cat.meta["model"] = "0123456789abcdef"
    cat.save(tmp_path / "other.npz")
    code, _, err = run(capsys, "search", "red", "--catalog", tmp_path / "other.npz", "--no-expand")
    assert code == 2 and "another embedding model" in err


# ---- variants ------------------------------------------------------------------------------------

def test_variants_writes_images_and_results(capsys, catalog, tiny_generator, product_image, tmp_path):
    path, row = product_image
    out_dir = tmp_path / "v"
    code, out, _ = run(capsys, "variants", path, "--text", "in red", "--n", "2", "--seed", "5", "--out", out_dir,
                       "--weights", tiny_generator, "--catalog", catalog, "--k", "3")
    assert code == 0
    summary = json.loads(out)
    assert summary["images"] == 2 and summary["out"] == str(out_dir)
    results = json.loads((out_dir / "results.json").read_text())
    assert isinstance(results, list) and len(results) == 1
    r = results[0]
    assert {"text", "detection", "caption", "images", "predicted", "modified", "similar"} <= set(r)
    assert r["images"] == [{"file": "variant_seed5.png", "seed": 5}, {"file": "variant_seed6.png", "seed": 6}]
    assert r["modified"]["baseColour"] == "Red" and "red" in r["caption"]
    assert {"articleType", "baseColour", "confidence"} <= set(r["predicted"])
    assert len(r["similar"]) == 3
    assert set(r["similar"][0]) == {"id", "title", "articleType", "baseColour", "gender", "score"}
    first = [np.asarray(Image.open(out_dir / f["file"])) for f in r["images"]]
    assert first[0].shape == (64, 64, 3)
    # The same seed gives the same image.
    assert run(capsys, "variants", path, "--text", "in red", "--n", "1", "--seed", "5", "--out", tmp_path / "w",
               "--weights", tiny_generator, "--catalog", catalog)[0] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "w" / "variant_seed5.png")), first[0])


def test_variants_errors(capsys, catalog, product_image, tmp_path, tiny_generator):
    path, _ = product_image
    code, _, err = run(capsys, "variants", path, "--weights", tmp_path / "none.pt", "--catalog", catalog)
    assert code == 2 and "checkpoint not found" in err
    code, _, err = run(capsys, "variants", tmp_path / "none.jpg", "--weights", tiny_generator, "--catalog", catalog)
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "variants", path, "--n", "0", "--weights", tiny_generator)
    assert code == 2 and "--n" in err


def test_subprocess_reports_bad_image_with_exit_2(catalog, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    proc = subprocess.run([sys.executable, "main.py", "search", "--image", str(bad), "--catalog", str(catalog)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


# ---- the service API the GUI uses -----------------------------------------------------------------

def test_service_load_sets_torch_threads_as_decided(catalog, tiny_generator, monkeypatch):
    import torch

    from app.chat.service import ModelService

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("FASHIONGAN_THREADS", "1")
        ModelService(weights=tiny_generator, catalog=catalog, device="cpu").load_catalog()
        assert torch.get_num_threads() == 1
        ModelService(weights=tiny_generator, catalog=catalog, device="cpu", threads=2).load_catalog()
        assert torch.get_num_threads() == 2  # an explicit count (bench --threads) wins over the environment
    finally:
        torch.set_num_threads(before)


def test_service_search_api(catalog, tiny_generator, product_image):
    from app.chat.service import Generated, ModelService

    path, row = product_image
    service = ModelService(weights=tiny_generator, catalog=catalog, device="cpu")
    service.load_catalog()
    hits = service.similar_products(caption="black casual shoes", k=4)
    assert len(hits) == 4 and isinstance(hits[0]["thumbnail"], Image.Image)
    assert {"id", "title", "articleType", "baseColour", "gender", "score", "thumbnail"} == set(hits[0])
    picture = Image.open(path)
    assert service.similar_products(images=[picture], k=1)[0]["id"] == int(row["id"])
    assert len(service.similar_products(caption="black casual shoes", images=[picture], k=2)) == 2
    described = service.describe_image(picture)
    assert set(described) >= {"articleType", "baseColour", "caption", "confidence"}
    assert 0 < described["confidence"]["articleType"] <= 1
    assert service.describe_image(path)["articleType"] == described["articleType"]  # a path is opened safely
    colour = "Green" if described["baseColour"] != "Green" else "Blue"
    generated, modified = service.variants(picture, f"in {colour.lower()}", seeds=[1, 2])
    assert isinstance(generated, Generated) and len(generated.images) == 2 and generated.seeds == [1, 2]
    assert modified["baseColour"] == colour and modified["confidence"]["baseColour"] == 1.0
    assert modified["changed"] == ["baseColour"]
    assert colour.lower() in generated.caption and modified["original"]["articleType"] == described["articleType"]
    with pytest.raises(ValueError):
        service.similar_products()


def test_service_load_survives_a_missing_catalogue(tiny_generator, tmp_path):
    from app.chat.service import ModelService
    from models.search.catalog import CatalogError

    messages = []
    service = ModelService(weights=tiny_generator, catalog=tmp_path / "none.npz", device="cpu")
    service.load(messages.append)
    assert service.generator is not None and "catalogue not found" in service.catalog_error
    assert any("similar products unavailable" in m for m in messages)
    with pytest.raises(CatalogError):
        service.similar_products(caption="red dresses")


def test_service_says_which_item_a_gender_lacks_and_offers_the_nearest(catalog):
    """The fixture catalogue's dresses are for women and girls: none for men, so the service offers the
    nearest item types it holds for men; types it holds for the gender, or for no gender at all, are fine."""
    from app.chat.service import ModelService
    from models.search.catalog import Catalogue
    from models.search.item_types import MIN_OFFER

    cat = Catalogue.load(catalog)
    service = ModelService(catalog=catalog, device="cpu")
    service.load_catalog()
    missing = service.unavailable("Dresses", "Men")
    assert missing["count"] == 0 and 1 <= len(missing["nearest"]) <= 2
    for article_type in missing["nearest"]:
        assert sum(t == article_type and _gender_ok("Men", g) for t, g in zip(cat.article_types, cat.genders)) \
            >= MIN_OFFER
    assert service.unavailable("Dresses", "Women") is None and service.unavailable("Dresses", "Girls") is None
    assert service.unavailable("Dresses", None) is None and service.unavailable(None, "Men") is None
    assert service.unavailable("Sarees", "Men") is None  # no sarees at all: not a question of gender
