"""The shopping-keyword detector: vocabulary, longest match, negation, typos, offsets, intent, quality, robustness."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chat.detector import INTENTS, MAX_RUN, Detection, KeywordDetector, _clip, get_detector
from app.commands import eval_detector as detector_eval

ROOT = Path(__file__).resolve().parents[1]
CHAT = ROOT / "tests" / "data" / "chat_messages.jsonl"
SHARED = ROOT.parent / "shared" / "data"
FIELDS = [f.name for f in dataclasses.fields(Detection)]


@pytest.fixture(scope="module")
def detect() -> KeywordDetector:
    return get_detector()


@pytest.mark.parametrize("text, label", [
    ("tee", "Tshirts"), ("t-shirt", "Tshirts"), ("tshirt", "Tshirts"), ("t shirt", "Tshirts"),
    ("T-SHIRTS", "Tshirts"), ("Polo tees", "Tshirts"), ("hoodie", "Sweatshirts"), ("hoodies", "Sweatshirts"),
    ("sneakers", "Casual Shoes"), ("sneaker", "Casual Shoes"), ("trainers", "Sports Shoes"),
    ("running shoes", "Sports Shoes"), ("gown", "Dresses"), ("dress", "Dresses"), ("dresses", "Dresses"),
    ("kurta", "Kurtas"), ("KURTAS", "Kurtas"), ("flip-flops", "Flip Flops"), ("flip flop", "Flip Flops"),
    ("trackpants", "Track Pants"), ("track-pants", "Track Pants"), ("bath robe", "Bath Robe"),
    ("bathrobe", "Bath Robe"), ("lehenga", "Lehenga Choli"), ("nightie", "Nightdress"), ("jumper", "Sweaters"),
])
def test_article_synonyms_plurals_case_and_hyphens(detect, text, label):
    assert detect(f"I want {text}").article_types == [label]


@pytest.mark.parametrize("text, label", [
    ("navy", "Navy Blue"), ("crimson", "Red"), ("scarlet", "Red"), ("sky blue", "Blue"), ("light blue", "Blue"),
    ("sky-blue", "Blue"), ("olive green", "Olive"), ("charcoal grey", "Charcoal"), ("multicolour", "Multi"),
    ("multi-coloured", "Multi"), ("gray", "Grey"), ("off-white", "Off White"), ("OFF WHITE", "Off White"),
    ("turquoise", "Turquoise Blue"), ("wine", "Burgundy"), ("dark green", "Green"), ("greenish blue", "Blue"),
])
def test_colour_synonyms(detect, text, label):
    assert detect(f"a {text} top").colours == [label]


@pytest.mark.parametrize("text, colours", [
    ("navy blue shirt", ["Navy Blue"]), ("grey melange hoodie", ["Grey Melange"]),
    ("solid navy blue polo", ["Navy Blue"]), ("sea green saree", ["Sea Green"]), ("lime green tee", ["Lime Green"]),
    ("turquoise blue top", ["Turquoise Blue"]), ("black and white sneakers", ["Black", "White"]),
])
def test_longest_match_wins(detect, text, colours):
    assert detect(text).colours == colours


@pytest.mark.parametrize("text, gender", [
    ("men's jeans", "Men"), ("a dress for women", "Women"), ("shoes for my daughter", "Girls"),
    ("boys shorts", "Boys"), ("gift for my husband", "Men"), ("unisex hoodie", "Unisex"), ("womens sandals", "Women"),
])
def test_gender(detect, text, gender):
    assert detect(text).gender == gender


@pytest.mark.parametrize("text, usage", [
    ("shirt for the office", "Formal"), ("formal trousers", "Formal"), ("shorts for the gym", "Sports"),
    ("running shoes", "Sports"), ("a party dress", "Party"), ("ethnic kurta", "Ethnic"),
    ("smart casual blazer", "Smart Casual"), ("bag for travel", "Travel"), ("casual shirt", "Casual"),
])
def test_usage(detect, text, usage):
    assert detect(text).usage == usage


def test_generic_item_follows_usage(detect):
    assert detect("black shoes for the office").article_types == ["Formal Shoes"]
    assert detect("shoes for the gym").article_types == ["Sports Shoes"]
    assert detect("black shoes").article_types == ["Casual Shoes"]


@pytest.mark.parametrize("text, colours, excluded", [
    ("a dress but not black", [], ["Black"]),
    ("anything but white", [], ["White"]),
    ("shirts that aren't red", [], ["Red"]),
    ("kurtas, but not in yellow or orange", [], ["Yellow", "Orange"]),
    ("a navy blazer, not black", ["Navy Blue"], ["Black"]),
    ("I don't like grey, show me green hoodies", ["Green"], ["Grey"]),
    ("black or white sneakers, not pink", ["Black", "White"], ["Pink"]),
    ("I don't mind black", ["Black"], []),
    ("not too long, in red", ["Red"], []),
])
def test_negation_scopes_over_the_colour_it_governs(detect, text, colours, excluded):
    found = detect(text)
    assert (found.colours, found.exclude_colours) == (colours, excluded)


@pytest.mark.parametrize("text, attributes, excluded", [
    ("a green saree, nothing too shiny", {}, {"detail": ["shiny"]}),
    ("a t-shirt with no print", {}, {"pattern": ["printed"]}),
    ("a dress, not sleeveless", {}, {"sleeve": ["sleeveless"]}),
    ("no prints or stripes", {}, {"pattern": ["printed", "striped"]}),
    ("a kurti in cotton, not silk", {"material": ["cotton"]}, {"material": ["silk"]}),
    ("without sleeves", {"sleeve": ["sleeveless"]}, {}),  # the phrase itself means sleeveless
    ("I don't mind prints", {"pattern": ["printed"]}, {}),
    ("has no logo and pink", {}, {"pattern": ["graphic"]}),  # a list holds one kind: Pink stays wanted
])
def test_negation_scopes_over_the_attribute_it_governs(detect, text, attributes, excluded):
    found = detect(text)
    assert (found.attributes, found.exclude_attributes) == (attributes, excluded)
    assert not any(value in found.caption for values in excluded.values() for value in values)
    assert all(kw.label.startswith("NOT_ATTRIBUTE:") for kw in found.keywords if kw.label.split(":")[1] in
               {f"{name}={v}" for name, vs in excluded.items() for v in vs})


def test_a_negated_attribute_alone_is_a_refinement(detect):
    assert detect("not shiny").intent == "refine"
    assert detect("no print please").intent == "refine"


def test_negated_item_is_left_out(detect):
    assert detect("a shirt, not a t-shirt").article_types == ["Shirts"]
    assert detect("not black shoes").article_types == ["Casual Shoes"]


@pytest.mark.parametrize("text, articles, colours", [
    ("blak tshirt", ["Tshirts"], ["Black"]), ("dreses", ["Dresses"], []),
    ("purpel hoodie", ["Sweatshirts"], ["Purple"]),
    ("whte shirt", ["Shirts"], ["White"]), ("trousres in beige", ["Trousers"], ["Beige"]),
    ("sneekers", ["Casual Shoes"], []),
])
def test_small_typos_are_forgiven(detect, text, articles, colours):
    found = detect(text)
    assert (found.article_types, found.colours) == (articles, colours)


@pytest.mark.parametrize("text", [
    "a bag", "red cap", "tan belt", "while you wait", "I love it", "show me", "shows", "a beach holiday",
    "the weather is nice", "that means a lot", "a normal day", "ruffles", "I feel great", "it's a dressy one",
])
def test_no_false_hits_from_typo_correction(detect, text):
    doc = detect.nlp(text)
    assert [t.norm_ for t in doc] == [t.text.lower() for t in doc]


def test_brand_names_are_not_colours(detect):
    assert detect("Red Tape Men Black Formal Shoes").colours == ["Black"]
    assert detect("Red Tape shoes").colours == []
    assert detect("U.S. Polo Assn. sneakers").article_types == ["Casual Shoes"]
    assert detect("a red rose print").colours == ["Red", "Rose"]


@pytest.mark.parametrize("text", [
    "Navy blue tee 👕 for men, not black!", "BLAK T-SHIRT", "  ", "men’s light-blue jeans", "a\u00a0red\tdress",
    "Red Tape formal shoes in brown", "greenish blue jeans and light pink socks",
])
def test_offsets_point_at_the_keyword(detect, text):
    for kw in detect(text).keywords:
        assert text[kw.start:kw.end] == kw.text
        assert ":" in kw.label


def test_long_runs_reach_spacy_broken_with_offsets_kept(detect):
    """spaCy's tokenizer is quadratic in a run of non-space characters, so a run longer than MAX_RUN reaches it
    broken by spaces put in place of characters (commas here): the length, and every offset, stay."""
    text = ",".join(["red", "t-shirt", "for", "women"] * 10)
    clipped = _clip(text)
    assert len(clipped) == len(text) and max(len(run) for run in clipped.split()) <= MAX_RUN
    found = detect(text)
    assert found.article_types == ["Tshirts"] and found.colours == ["Red"] and found.gender == "Women"
    assert all(text[kw.start:kw.end] == kw.text for kw in found.keywords)


@pytest.mark.parametrize("text", ["a navy-blue t-shirt for men, not black!", "https://example.com/shop?item=42",
                                  "x" * MAX_RUN])
def test_text_without_long_runs_reaches_spacy_unchanged(text):
    assert _clip(text) == text


def test_title_model_runs_once_per_message_and_candidate_set(detect, monkeypatch):
    """Many generic items in one message share one posterior per candidate set (was one per item: quadratic)."""
    model = detect.nlp.get_pipe("fashion_resolver").title_model
    posterior, calls = model.posterior, []
    monkeypatch.setattr(model, "posterior", lambda words, candidates=None: calls.append(candidates)
                        or posterior(words, candidates))
    found = detect("Roadster shoes Nike bag " * 50)
    assert found.article_types == ["Sports Shoes", "Laptop Bag"]
    assert len(calls) == len({tuple(c) for c in calls}) == 2


@pytest.mark.parametrize("text, intent", [
    ("I'm looking for a navy tee", "shop"), ("make it red", "refine"), ("in black please", "refine"),
    ("show me more", "refine"), ("same but for women", "refine"), ("hi there", "greeting"), ("help", "help"),
    ("how does this work?", "help"), ("thanks!", "other"), ("what's the weather like?", "other"),
    ("hello, do you sell sarees?", "shop"), ("bye", "greeting"),
])
def test_intent(detect, text, intent):
    assert detect(text).intent == intent


def test_to_dict_has_exactly_the_fields_and_is_json(detect):
    found = detect("navy blue striped long sleeve shirt for men, for the office")
    d = found.to_dict()
    assert list(d) == FIELDS
    assert json.loads(json.dumps(d)) == d
    assert set(d["keywords"][0]) == {"text", "label", "start", "end"}
    assert d["caption"] == "navy blue striped long sleeve shirts, men, formal"
    assert d["attributes"] == {"pattern": ["striped"], "sleeve": ["long sleeve"]}


def test_caption_without_item(detect):
    assert detect("hello").caption == "fashion item"
    assert detect("in black please").caption == "black fashion item"


def test_pipe_matches_single_calls(detect):
    texts = [json.loads(line)["text"] for line in CHAT.read_text(encoding="utf-8").splitlines()[:60]]
    assert [d.to_dict() for d in detect.pipe(texts)] == [detect(t).to_dict() for t in texts]
    assert list(detect.pipe([])) == []


def test_get_detector_is_a_singleton():
    assert get_detector() is get_detector()


def test_empty_text(detect):
    found = detect("")
    assert found.intent == "other" and found.article_types == [] and found.keywords == []


def test_chat_set_meets_the_targets(detect):
    rows = detector_eval.read_chat(CHAT)
    assert len(rows) >= 150
    assert {r["intent"] for r in rows} == set(INTENTS)
    report = detector_eval.eval_chat(detect, rows)
    assert report["article_type"]["accuracy"] >= 0.95
    assert report["exclude_attribute"]["n"] >= 40 and report["exclude_attribute"]["f1"] >= 0.95
    assert report["attribute"]["f1"] >= 0.9
    assert report["colour"]["f1"] >= 0.97
    assert report["intent"]["accuracy"] >= 0.95


@pytest.mark.skipif(not (SHARED / "fpi64" / "dev_meta.csv").exists(), reason="shared data pack not here")
def test_held_out_titles_meet_the_target(detect):
    report = detector_eval.eval_titles(detect, SHARED / "fpi64" / "dev_meta.csv", every=3)  # `eval-detector`: all
    assert report["article_type"]["accuracy"] >= 0.93


@pytest.mark.skipif(not (SHARED / "fashioniq").is_dir(), reason="shared data pack not here")
def test_fashioniq_colours_meet_the_target(detect):
    captions = detector_eval.read_fashioniq(SHARED / "fashioniq")[::16]  # a sample; `eval-detector` scores all
    assert detector_eval.eval_fashioniq(detect, captions)["colour_mentioned"]["f1"] >= 0.99


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=10_000))
def test_any_text_gives_a_valid_detection(text):
    found = get_detector()(text)
    d = found.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["intent"] in INTENTS and d["text"] == text
    for kw in found.keywords:
        assert text[kw.start:kw.end] == kw.text
