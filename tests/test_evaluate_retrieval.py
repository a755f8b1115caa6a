"""`python -m models.metrics.evaluate_retrieval` (the README's retrieval table) on the fixture pack, with
its figures recounted here in plain numpy from the same embeddings and labels."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

K = 10


@pytest.fixture(scope="module")
def report(tmp_path_factory, pack_path):
    import torch

    from models.metrics.evaluate_retrieval import main

    out = tmp_path_factory.mktemp("retrieval") / "report.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--data", str(pack_path), "--generator", str(out.parent / "no-generator.pt"), "--no-sweep",
                     "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def held_out(pack_path):
    """The pack's validation split, its labels, and the bundled search model's embeddings and predictions."""
    from models.data import load_table
    from models.search.retrieval import SearchModel

    val = load_table(pack_path).split(validation=True)
    model = SearchModel()
    queries = model.embed_images(val.images)
    stored = queries.astype(np.float16).astype(np.float32)  # the catalogue keeps fp16 embeddings
    types = np.array([r["articleType"] for r in val.rows])
    colours = np.array([r["baseColour"] for r in val.rows])
    return val, queries, stored, types, colours, model.predict(val.images)


def gender_facet(wanted: list, genders: np.ndarray) -> np.ndarray:
    """(Q, N) 1 where the product's gender goes with the wanted one: equal, or Unisex with Men / Women."""
    adult = {"men", "women", "unisex"}
    got = np.char.lower(genders.astype(str))
    out = np.zeros((len(wanted), len(got)), np.float32)
    for q, w in enumerate(wanted):
        w = (w or "").lower()
        if w:
            out[q] = (got == w) | ((w in adult) & np.isin(got, sorted(adult)) & ((got == "unisex") | (w == "unisex")))
    return out


def top_k_precision(scores: np.ndarray, labels: np.ndarray, wanted: np.ndarray, k: int = K) -> float:
    """Share of each query's k best rows (itself excluded: the diagonal) whose label is the wanted one."""
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((labels[top] == wanted[:, None]).mean())


def test_report_covers_the_held_out_pack(report, held_out):
    val, _, _, types, colours, _ = held_out
    n = len(val)
    assert n >= 100 and report["catalogue"]["products"] == n and report["catalogue"]["split"] == "validation"
    assert report["image"]["queries"] == n and report["text_titles"]["no_expansion"]["queries"] == n
    cells = Counter(zip(types, colours))
    assert report["text_prompts"]["no_expansion"]["queries"] == sum(1 for c in cells.values() if c >= 10)
    assert report["text_titles"]["expansion"] == "not measured: no generator" and report["generator"] is None
    assert set(report["targets"]) == {"text_titles.no_expansion", "text_prompts.no_expansion", "composed"}


def test_image_precision_matches_an_independent_count(report, held_out):
    """Image-only precision@10, embedding alone and with the catalogue-label facets (LABEL_WEIGHT per
    predicted type / colour the product has, GENDER_WEIGHT where its gender goes with the predicted one),
    counted here with one matrix product and a sort."""
    from models.search.retrieval import LABEL_WEIGHT

    val, queries, stored, types, colours, predicted = held_out
    from models.search.retrieval import GENDER_WEIGHT

    genders = np.array([r["gender"] for r in val.rows])
    cosine = queries @ stored.T
    alone = report["image"]["embedding_only"]
    assert alone["type_p10"] == pytest.approx(top_k_precision(cosine, types, types), abs=6e-5)
    assert alone["colour_p10"] == pytest.approx(top_k_precision(cosine, colours, colours), abs=6e-5)
    p_types = np.array([p["articleType"] for p in predicted])
    p_colours = np.array([p["baseColour"] for p in predicted])
    facets = LABEL_WEIGHT * ((types[None, :] == p_types[:, None]).astype(np.float32)
                             + (colours[None, :] == p_colours[:, None]))
    without_gender = report["image"]["without_gender"]
    assert without_gender["type_p10"] == pytest.approx(top_k_precision(cosine + facets, types, types), abs=6e-5)
    facets = facets + GENDER_WEIGHT * gender_facet([p["gender"] for p in predicted], genders)
    default = report["image"]
    assert default["type_p10"] == pytest.approx(top_k_precision(cosine + facets, types, types), abs=6e-5)
    assert default["colour_p10"] == pytest.approx(top_k_precision(cosine + facets, colours, colours), abs=6e-5)
    # The facets are what the README's image rows compare: here they must change the ranking at all.
    assert (default["type_p10"], default["colour_p10"]) != (alone["type_p10"], alone["colour_p10"])


def test_attribute_accuracy_matches_an_independent_count(report, held_out):
    _, _, _, types, colours, predicted = held_out
    assert report["attributes"]["type_accuracy"] == pytest.approx(
        np.mean([p["articleType"] == t for p, t in zip(predicted, types)]), abs=6e-5)
    assert report["attributes"]["colour_accuracy"] == pytest.approx(
        np.mean([p["baseColour"] == c for p, c in zip(predicted, colours)]), abs=6e-5)


def test_title_figures_match_an_independent_count(report, held_out):
    """The held-out titles row: type / colour / gender precision@10 and product Recall@10, embedding only and
    with the facets (LABEL_WEIGHT per type / colour the detector found in the title that the product has,
    GENDER_WEIGHT where its gender goes with the title's), counted here from the same title vectors
    (caption + raw title) and stored embeddings."""
    from app.chat.detector import get_detector
    from models.search.catalog import Catalogue
    from models.search.retrieval import GENDER_WEIGHT, LABEL_WEIGHT, Retriever, SearchModel
    from models.text_encoder import get_text_encoder

    val, _, stored, types, colours, _ = held_out
    model = SearchModel()
    titles = [r["productDisplayName"] for r in val.rows]
    retriever = Retriever(model, Catalogue.build(val, model), get_text_encoder(), get_detector())
    captions, wanted = retriever.analyse(titles)
    vectors, _ = retriever.text_query_vectors(titles, captions, expand=False)
    named = {key: np.array([(w[key] or "").casefold() for w in wanted]) for key in ("articleType", "baseColour")}
    facets = LABEL_WEIGHT * ((np.char.lower(types)[None, :] == named["articleType"][:, None]).astype(np.float32)
                             + (np.char.lower(colours)[None, :] == named["baseColour"][:, None]))
    genders = np.array([r["gender"] for r in val.rows])
    facets += GENDER_WEIGHT * gender_facet([w["gender"] for w in wanted], genders)
    own = np.arange(len(titles))[:, None]
    for row, scores in (("embedding_only", vectors @ stored.T), ("no_expansion", vectors @ stored.T + facets)):
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        figures = report["text_titles"][row]
        assert figures["type_p10"] == pytest.approx(float((types[top] == types[:, None]).mean()), abs=6e-5), row
        assert figures["colour_p10"] == pytest.approx(float((colours[top] == colours[:, None]).mean()), abs=6e-5), row
        assert figures["product_r10"] == pytest.approx(float((top == own).any(1).mean()), abs=6e-5), row
        own_gender = gender_facet(list(genders), genders)
        assert figures["gender_p10"] == pytest.approx(float(np.take_along_axis(own_gender, top, 1).mean()), abs=6e-5)
