"""`python main.py eval-detector`: accuracy, precision, recall and F1 of the keyword detector, per field.

Three test sets:

1. Product titles (`--meta dev_meta.csv`): only the held-out 20% of ids
   (`app.commands.train_title_model.split_of`), since
   the title model is trained on the other 80%.
   - article type: gold = `articleType`, prediction = the first detected article type;
   - colour: rows whose title names the `baseColour` (rule below), prediction = the first detected colour;
   - gender: rows whose title contains Men/Women/Boys/Girls/Unisex, gold = the catalogue `gender`;
   - "colour, brand-first titles": the colour rows whose title starts with a colour word ("Red Tape Men Black
     Shoes"), i.e. the brand trap.
   Single-label scores: precision = right / predicted, recall = right / gold, accuracy = right / rows.
2. The hand-labelled chat set (`--chat`, default tests/data/chat_messages.jsonl): list fields (article types,
   colours, exclude colours) are scored as sets, micro-averaged (accuracy = the whole set right); gender and usage as
   single labels where null means "none" (precision over non-null predictions, recall over non-null gold);
   intent as accuracy with macro precision/recall/F1 over the five intents. Rows that carry `attributes` and
   `exclude_attributes` ({name: [values]}, the negated ones apart: "not shiny") also score those two, as sets of
   "name=value", over those rows only.
3. Fashion IQ relative captions (`--fashioniq DIR`, every cap.*.json): the colours mentioned (colours plus exclude
   colours) against an independent rule, and exclude colours against a negation rule, both set-scored.

The independent colour rule (`rule_colours`, plain regular expressions, no lexicon): a catalogue colour label
written out as whole words (longest first, hyphen or space), a one-word label also with a plural/comparative/-ish
ending (blues, whiter, reddish), "gray" for Grey, "golden" for Gold, "olive green" for Olive, "charcoal grey" for
Charcoal, the first word alone of Navy Blue, Turquoise Blue, Coffee Brown, Mushroom Brown, Lime Green and
Fluorescent Green, and "multicolo(u)r(ed)" / "multi-colo(u)red" / "multi colo(u)red" for Multi.
The negation rule: a colour of that rule right after not/no/n't/without/except/instead of/rather than, with at most
one filler (in, a, an, any, the, so, too, very, all) between.

The report ends with throughput: messages per second through `KeywordDetector.pipe` and through single calls, on
one core, after load, and the load time.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

from app.commands.errors import CliError

DEFAULT_CHAT = Path(__file__).resolve().parents[2] / "tests" / "data" / "chat_messages.jsonl"
CATALOGUE_COLOURS = [
    "Beige", "Black", "Blue", "Bronze", "Brown", "Burgundy", "Charcoal", "Coffee Brown", "Copper", "Cream",
    "Fluorescent Green", "Gold", "Green", "Grey", "Grey Melange", "Khaki", "Lavender", "Lime Green", "Magenta",
    "Maroon", "Mauve", "Metallic", "Multi", "Mushroom Brown", "Mustard", "Navy Blue", "Nude", "Off White", "Olive",
    "Orange", "Peach", "Pink", "Purple", "Red", "Rose", "Rust", "Sea Green", "Silver", "Skin", "Tan", "Taupe", "Teal",
    "Turquoise Blue", "White", "Yellow",
]
RULE_EXTRA_FORMS = {  # spellings and equivalences named in the issue, plus "golden"
    "gray": "Grey", "gray melange": "Grey Melange", "olive green": "Olive", "charcoal grey": "Charcoal",
    "charcoal gray": "Charcoal", "golden": "Gold", "off-white": "Off White",
}
GENDER_WORDS = {"men": "Men", "women": "Women", "boys": "Boys", "girls": "Girls", "unisex": "Unisex"}
SPEED_MESSAGES = 5000  # messages timed for throughput


def _rule_table() -> list[tuple[re.Pattern, str]]:
    forms: dict[str, str] = {label.lower(): label for label in CATALOGUE_COLOURS}
    forms.update(RULE_EXTRA_FORMS)
    for label in ("Navy Blue", "Turquoise Blue", "Coffee Brown", "Mushroom Brown", "Lime Green", "Fluorescent Green"):
        forms.setdefault(label.split()[0].lower(), label)
    table = []
    for form in sorted(forms, key=len, reverse=True):
        pattern = r"[\s-]+".join(map(re.escape, form.split()))
        ending = "" if " " in form else r"(?:s|es|er|r|ish|dish|der)?"  # blues, whiter, reddish, redder
        table.append((re.compile(rf"\b{pattern}{ending}\b"), forms[form]))
    table.insert(0, (re.compile(r"\bmulti[\s-]*colou?r(ed|s)?\b"), "Multi"))
    return table


_RULE = _rule_table()
_NEGATION = re.compile(r"(?:\bnot|\bno|\bwithout|\bexcept|\binstead of|\brather than|n't)"
                       r"(?:\s+(?:in|a|an|any|the|so|too|very|all))?\s+$")


def rule_colours(text: str) -> list[tuple[int, int, str]]:
    """(start, end, label) of every colour the independent rule finds, longest match first, no overlaps."""
    text = text.lower()
    taken: list[tuple[int, int, str]] = []
    for pattern, label in _RULE:
        for m in pattern.finditer(text):
            if not any(s < m.end() and m.start() < e for s, e, _ in taken):
                taken.append((m.start(), m.end(), label))
    return sorted(taken)


def rule_excluded(text: str) -> set[str]:
    """Colours right after a negation word, at most one filler word between: "not (in) black", "isn't red"."""
    lowered = text.lower()
    return {label for s, _, label in rule_colours(text) if _NEGATION.search(lowered[:s])}


# --------------------------------------------------------------------------------------------------- scoring


class SetScore:
    def __init__(self):
        self.tp = self.fp = self.fn = self.exact = self.n = 0

    def add(self, gold, pred) -> None:
        gold, pred = set(gold), set(pred)
        self.tp += len(gold & pred)
        self.fp += len(pred - gold)
        self.fn += len(gold - pred)
        self.exact += gold == pred
        self.n += 1

    def report(self) -> dict:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        return _row(self.exact / self.n if self.n else 0.0, p, r, self.n)


class LabelScore:
    """One label (or None) per example."""

    def __init__(self):
        self.right = self.right_labelled = self.predicted = self.gold = self.n = 0
        self.pairs: Counter = Counter()

    def add(self, gold, pred) -> None:
        self.n += 1
        self.right += gold == pred
        self.predicted += pred is not None
        self.gold += gold is not None
        self.right_labelled += gold == pred and pred is not None
        self.pairs[gold, pred] += 1

    def report(self) -> dict:
        p = self.right_labelled / self.predicted if self.predicted else 1.0
        r = self.right_labelled / self.gold if self.gold else 1.0
        return _row(self.right / self.n if self.n else 0.0, p, r, self.n)

    def macro(self) -> dict:
        labels = {g for g, _ in self.pairs} | {p for _, p in self.pairs}
        ps, rs = [], []
        for label in labels:
            tp = self.pairs[label, label]
            pred = sum(n for (_, p), n in self.pairs.items() if p == label)
            gold = sum(n for (g, _), n in self.pairs.items() if g == label)
            ps.append(tp / pred if pred else 0.0)
            rs.append(tp / gold if gold else 0.0)
        return _row(self.right / self.n if self.n else 0.0, sum(ps) / len(ps), sum(rs) / len(rs), self.n)


def _row(acc: float, p: float, r: float, n: int) -> dict:
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"accuracy": round(acc, 4), "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "n": n}


# ------------------------------------------------------------------------------------------------- test sets


def read_chat(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _attribute_set(attributes: dict | None) -> list[str]:
    return sorted(f"{name}={value}" for name, values in (attributes or {}).items() for value in values)


def eval_chat(detector, rows: list[dict], errors: list | None = None) -> dict:
    scores = {"article_type": SetScore(), "colour": SetScore(), "exclude_colour": SetScore(),
              "gender": LabelScore(), "usage": LabelScore(), "intent": LabelScore()}
    if any("exclude_attributes" in r for r in rows):
        scores.update(attribute=SetScore(), exclude_attribute=SetScore())
    for row, det in zip(rows, detector.pipe([r["text"] for r in rows])):
        pairs = {"article_type": (row["article_types"], det.article_types), "colour": (row["colours"], det.colours),
                 "exclude_colour": (row["exclude_colours"], det.exclude_colours), "gender": (row["gender"], det.gender),
                 "usage": (row["usage"], det.usage), "intent": (row["intent"], det.intent)}
        if "exclude_attributes" in row:
            pairs["attribute"] = (_attribute_set(row.get("attributes")), _attribute_set(det.attributes))
            pairs["exclude_attribute"] = (_attribute_set(row["exclude_attributes"]),
                                          _attribute_set(getattr(det, "exclude_attributes", None)))
        for name, (gold, pred) in pairs.items():
            scores[name].add(gold, pred)
            wrong = set(gold) != set(pred) if isinstance(gold, list) else gold != pred
            if wrong and errors is not None:
                errors.append(f"chat {name}: {row['text']!r} gold={gold} got={pred}")
    out = {name: s.report() for name, s in scores.items() if name != "intent"}
    out["intent"] = scores["intent"].macro()
    return out


def eval_titles(detector, meta_path: str | Path, errors: list | None = None, every: int = 1) -> dict:
    from app.commands.train_title_model import read_titles

    rows = read_titles(meta_path, "heldout")[::every]
    article, colour, gender, brand_first = LabelScore(), LabelScore(), LabelScore(), LabelScore()
    first_words = {c.lower().split()[0] for c in CATALOGUE_COLOURS}
    for row, det in zip(rows, detector.pipe([r["productDisplayName"] for r in rows])):
        title = row["productDisplayName"]
        pred = det.article_types[0] if det.article_types else None
        article.add(row["articleType"], pred)
        if errors is not None and pred != row["articleType"]:
            errors.append(f"title article: {title!r} gold={row['articleType']} got={pred}")
        base = row["baseColour"]
        if base and any(label == base for _, _, label in rule_colours(title)):
            got = det.colours[0] if det.colours else None
            colour.add(base, got)
            if title.split()[0].lower() in first_words:
                brand_first.add(base, got)
            if errors is not None and got != base:
                errors.append(f"title colour: {title!r} gold={base} got={det.colours}")
        words = set(re.findall(r"[a-z]+", title.lower()))
        if words & GENDER_WORDS.keys():
            gender.add(row["gender"], det.gender)
    return {"article_type": article.report(), "colour": colour.report(), "gender": gender.report(),
            "colour_brand_first_titles": brand_first.report()}


def read_fashioniq(directory: str | Path) -> list[str]:
    files = sorted(glob.glob(os.path.join(directory, "cap.*.json")))
    if not files:
        raise CliError(f"no cap.*.json files in {directory}")
    captions = []
    for name in files:
        with open(name, encoding="utf-8") as fh:
            captions += [c for item in json.load(fh) for c in item["captions"]]
    return captions


def eval_fashioniq(detector, captions: list[str], errors: list | None = None) -> dict:
    mentioned, excluded = SetScore(), SetScore()
    for text, det in zip(captions, detector.pipe(captions)):
        gold = {label for _, _, label in rule_colours(text)}
        pred = set(det.colours) | set(det.exclude_colours)
        mentioned.add(gold, pred)
        excluded.add(rule_excluded(text), det.exclude_colours)
        if errors is not None and gold != pred:
            errors.append(f"fashioniq colour: {text!r} rule={sorted(gold)} got={sorted(pred)}")
    return {"colour_mentioned": mentioned.report(), "exclude_colour": excluded.report()}


def measure_speed(detector, texts: list[str], count: int = SPEED_MESSAGES) -> dict:
    """Messages per second after load, by wall clock and by CPU time of this (single-threaded) process; the CPU
    figure is the one-core rate even on a busy machine."""
    texts = (texts * (count // max(len(texts), 1) + 1))[:count]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in detector.pipe(texts):
        pass
    batch = (len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu))
    single_texts = texts[: max(count // 5, 1)]
    wall, cpu = time.perf_counter(), time.process_time()
    for text in single_texts:
        detector(text)
    single = (len(single_texts) / (time.perf_counter() - wall), len(single_texts) / (time.process_time() - cpu))
    return {"pipe_msgs_per_s": round(batch[0]), "pipe_msgs_per_cpu_s": round(batch[1]),
            "single_call_msgs_per_s": round(single[0]), "single_call_msgs_per_cpu_s": round(single[1]),
            "messages": len(texts)}


def run(meta: str | None, fashioniq: str | None, chat: str | None, errors: list | None = None,
        speed_messages: int = SPEED_MESSAGES) -> dict:
    from app.chat.detector import KeywordDetector

    for path, what in ((meta, "--meta"), (fashioniq, "--fashioniq"), (chat, "--chat")):
        if path and not os.path.exists(path):
            raise CliError(f"{what}: {path} does not exist")
    start = time.perf_counter()
    detector = KeywordDetector.load()
    report: dict = {"load_s": round(time.perf_counter() - start, 3)}
    chat_rows = read_chat(chat) if chat else []
    if chat_rows:
        report["chat"] = eval_chat(detector, chat_rows, errors)
    if meta:
        report["titles_heldout"] = eval_titles(detector, meta, errors)
    captions = read_fashioniq(fashioniq) if fashioniq else []
    if captions:
        report["fashioniq"] = eval_fashioniq(detector, captions, errors)
    texts = [r["text"] for r in chat_rows] + captions[:2000]
    if texts and speed_messages > 0:
        report["speed"] = measure_speed(detector, texts, speed_messages)
    return report


def format_report(report: dict) -> str:
    lines = [f"load time: {report['load_s']:.2f} s"]
    for name in ("chat", "titles_heldout", "fashioniq"):
        if name not in report:
            continue
        lines.append(f"\n{name}\n  {'field':<28}{'n':>7}{'acc':>8}{'prec':>8}{'rec':>8}{'F1':>8}")
        for field_name, r in report[name].items():
            lines.append(f"  {field_name:<28}{r['n']:>7}{r['accuracy']:>8.4f}{r['precision']:>8.4f}"
                         f"{r['recall']:>8.4f}{r['f1']:>8.4f}")
    if "speed" in report:
        s = report["speed"]
        lines.append(f"\nspeed after load, {s['messages']} messages: pipe() {s['pipe_msgs_per_s']} msgs/s wall, "
                     f"{s['pipe_msgs_per_cpu_s']} msgs per CPU-second; single calls {s['single_call_msgs_per_s']} "
                     f"msgs/s wall, {s['single_call_msgs_per_cpu_s']} per CPU-second")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> None:
    errors: list | None = [] if args.errors else None
    if args.speed < 0:
        raise CliError("--speed must be 0 or more")
    report = run(args.meta, args.fashioniq, args.chat, errors, args.speed)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if errors:
        for line in errors[: args.errors]:
            print(line)


def register(sub) -> None:
    p = sub.add_parser("eval-detector", help="score the keyword detector on titles, the chat set and Fashion IQ")
    p.add_argument("--meta", help="dev_meta.csv: scores the held-out 20%% of product titles")
    p.add_argument("--fashioniq", metavar="DIR", help="folder with Fashion IQ cap.*.json captions")
    p.add_argument("--chat", metavar="PATH", default=str(DEFAULT_CHAT),
                   help="hand-labelled chat messages, JSON lines (default: tests/data/chat_messages.jsonl)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--errors", type=int, default=0, metavar="N", help="also print the first N mistakes")
    p.add_argument("--speed", type=int, default=SPEED_MESSAGES, metavar="N",
                   help=f"messages to time for throughput (default {SPEED_MESSAGES}; 0 skips the timing)")
    p.set_defaults(func=cmd_eval)
