"""Whatever is typed: the keyword detector and the bot never raise and take bounded time.

Property tests (hypothesis) feed arbitrary unicode (lone surrogates, emoji, control characters, right-to-
left marks, combining accents) and fashion words mixed with them; fixed cases feed 100,000 characters
of each kind. Time is bounded in CPU seconds of this process (time.process_time), which another
program's load cannot inflate, so the bounds hold on a busy 2-core machine. The bot runs with the
real detector and a fake generator (coloured blocks), and each reply goes through the history file
as the window stores it.
"""
from __future__ import annotations

import json
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from robustness_support import counting

from app.chat.bot import Bot
from app.chat.detector import INTENTS, MAX_CHARS, get_detector
from app.chat.service import Generated
from app.chat.storage import Storage

LONG = 100_000           # characters in the long inputs
CPU_LIMIT_LONG_S = 3.0   # CPU seconds for one call on 100,000 characters (0.1-0.4 s measured)
CHILD_CPU_CAP_S = 10     # CPU seconds after which a long input's child process is killed (RLIMIT_CPU)
CPU_LIMIT_SHORT_S = 2.0  # CPU seconds for one short message (milliseconds measured)
REPLY_KINDS = {"text", "images", "clarify", "error"}

FASHION_WORDS = ["red", "navy blue", "dress", "shirts", "not", "black", "for", "men", "women", "no", "without",
                 "blak", "drss", "make it", "show me more", "same but", "Red Tape", "Nike", "party", "office",
                 "striped", "long sleeves", "t-shirt", "jeans", "hi", "help", "thanks", "anything but", "or", "and"]
ODD = ["\x00", "\x07", "\x1b[31m", "\t", "\r\n", "\u200b", "\u200d", "\u202e", "\ufeff",
       "\U0001f457", "\U0001f525", "\U0001f1eb\U0001f1f7", "e\u0301", "\u0645\u0644\u0627\u0628\u0633",
       "\u886c\u886b", "\uff52\uff45\uff44", "RED", "Ｄｒｅｓｓ", "'", "\u2019", "\"", "\\", "%s", "{}", "<b>", "..."]

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)  # every code point but surrogates
fashion_text = st.lists(st.sampled_from(FASHION_WORDS + ODD), max_size=40).flatmap(
    lambda parts: st.sampled_from([" ", "", ",", "\n", "  "]).map(lambda sep: sep.join(parts)))
odd_text = st.lists(st.sampled_from(list("\x00\x01\x08\x0b\x0c\x7f\x85\u2028\u2029") + ODD), max_size=80).map("".join)
messages = st.one_of(any_text, fashion_text, odd_text)


@pytest.fixture
def tally(request):
    yield from counting(request)


@pytest.fixture(scope="module")
def detector():
    return get_detector()


def check_detection(text: str, detection, tally) -> None:
    tally.check(detection.intent in INTENTS, f"intent {detection.intent!r} for {text!r}")
    tally.check(all(isinstance(a, str) and a for a in detection.article_types), f"article_types for {text!r}")
    tally.check(isinstance(detection.caption, str), f"caption for {text!r}")
    for kw in detection.keywords:  # documented: text[start:end] == keyword text
        tally.check(0 <= kw.start <= kw.end <= min(len(text), MAX_CHARS) and text[kw.start:kw.end] == kw.text,
                    f"keyword {kw} does not match the text {text[:80]!r}")
    tally.check(not set(detection.colours) & set(detection.exclude_colours),
                f"colour both wanted and excluded in {text!r}: {detection.colours} / {detection.exclude_colours}")
    json.dumps(detection.to_dict())


def cpu_seconds(fn) -> tuple[object, float]:
    start = time.process_time()
    value = fn()
    return value, time.process_time() - start


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(text=messages)
def test_detector_takes_any_text(detector, tally, text):
    tally.tried()
    detection, cpu = cpu_seconds(lambda: detector(text))
    check_detection(text, detection, tally)
    tally.check(cpu < CPU_LIMIT_SHORT_S, f"{cpu:.2f} CPU s for {len(text)} characters")
    again = detector(text)  # cached typo corrections must not change the answer
    tally.check(again.to_dict() == detection.to_dict(), f"second call differs for {text!r}")
    tally.assert_ok()


# ------------------------------------------------------------------------------------------------- the bot


def block(colour) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste(colour, (16, 8, 48, 60))
    return image


class FakeGeneratorService:
    """The real keyword detector; images are coloured blocks (red, or black for seeds divisible by 3)."""

    def __init__(self):
        self.detector = get_detector()

    def detect(self, text):
        return self.detector(text)

    def generate(self, caption, seeds):
        return Generated(caption, list(seeds), [block((10, 10, 10) if s % 3 == 0 else (200, 20, 30)) for s in seeds])


class FixedSeeds:
    images_per_request = 2
    seed_mode = "fixed"
    fixed_seed = 0


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return Storage(tmp_path_factory.mktemp("history"))


def converse(bot: Bot, storage: Storage, texts: list[str], tally) -> None:
    """Each message as the window handles it: respond, then the user and bot records saved and read back."""
    messages = []
    for text in texts:
        reply, cpu = cpu_seconds(lambda t=text: bot.respond(t))
        tally.check(reply.kind in REPLY_KINDS and isinstance(reply.text, str) and reply.text,
                    f"reply {reply.kind!r} {reply.text!r} to {text[:80]!r}")
        tally.check(cpu < (CPU_LIMIT_LONG_S if len(text) > 1000 else CPU_LIMIT_SHORT_S),
                    f"{cpu:.2f} CPU s to answer {len(text)} characters")
        messages += [{"role": "user", "text": text}, reply.record()]
    try:
        storage.save_history(messages, bot.state.to_dict())
    except Exception as exc:  # noqa: BLE001 - recorded: the window would lose the message
        tally.check(False, f"history cannot store {texts!r}: {type(exc).__name__}: {exc}")
        return
    back = storage.load_history()
    tally.check(back.notice is None and back.messages == paired_surrogates_joined(messages),
                f"history did not round-trip {texts!r}")


def paired_surrogates_joined(value):
    """What JSON gives back: a high and a low surrogate side by side come back as the one character they
    encode ("\\ud800\\udc00" -> U+10000); lone ones come back as they were."""
    if isinstance(value, str):
        return re.sub("[\ud800-\udbff][\udc00-\udfff]",
                      lambda m: m[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le"), value)
    if isinstance(value, list):
        return [paired_surrogates_joined(v) for v in value]
    if isinstance(value, dict):
        return {k: paired_surrogates_joined(v) for k, v in value.items()}
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(texts=st.lists(messages, min_size=1, max_size=4))
def test_bot_answers_any_conversation(tally, history, texts):
    tally.tried(len(texts))
    converse(Bot(FakeGeneratorService(), FixedSeeds()), history, texts, tally)
    tally.assert_ok()


def test_history_keeps_any_text_the_window_records(tally, tmp_path):
    """A file name with bytes that are not UTF-8 (Linux: os.fsdecode gives lone surrogates) is recorded
    as the attachment's name; emoji from Tk and pasted control characters are recorded as typed."""
    storage = Storage(tmp_path)
    records = [{"role": "user", "text": "", "attachment": "caf\udce9.jpg"},
               {"role": "user", "text": "\U0001f457 red dress \x00\x1b[0m \u202e"},
               {"role": "user", "text": "half a pair \ud83d"}]
    for record in records:
        tally.tried()
        try:
            storage.save_history([record])
            tally.check(storage.load_history().messages == [record], f"{record!r} changed on the way back")
        except Exception as exc:  # noqa: BLE001
            tally.check(False, f"save_history({record!r}) raised {type(exc).__name__}: {exc}")
    tally.assert_ok()


# ------------------------------------------------------------------------------------------- lone surrogates
# Python strings may hold lone surrogates: a Linux file name that is not UTF-8 decodes to them (os.fsdecode),
# and text pasted through some Tk builds carries them. They are rare, but must not break a request.

SURROGATE_TEXTS = ["red dress \ud83d", "\udce9t\udce9 shirt", "\udfff", "navy blue jeans for men \ud800\udc00x"]


@pytest.mark.parametrize("text", SURROGATE_TEXTS)
def test_detector_takes_lone_surrogates(detector, tally, text):
    tally.tried()
    try:
        check_detection(text, detector(text), tally)
    except Exception as exc:  # noqa: BLE001
        tally.check(False, f"detector({text!r}) raised {type(exc).__name__}: {exc}")
    tally.assert_ok()


def test_bot_answers_lone_surrogates(tally, history):
    tally.tried(len(SURROGATE_TEXTS))
    try:
        converse(Bot(FakeGeneratorService(), FixedSeeds()), history, SURROGATE_TEXTS, tally)
    except Exception as exc:  # noqa: BLE001
        tally.check(False, f"the bot raised {type(exc).__name__}: {exc}")
    tally.assert_ok()


# ------------------------------------------------------------------------------------------- long inputs
# Each 100,000-character input runs in a child process whose CPU time is capped (RLIMIT_CPU): an input
# that makes the detector or the bot slow costs the test CHILD_CPU_CAP_S, not minutes, and is reported.


def long_inputs() -> dict[str, str]:
    rng = random.Random(7)
    words = FASHION_WORDS + ODD
    return {
        "repeated request": ("red dress for a party, not black " * (LONG // 33 + 1))[:LONG],
        "one long word": "x" * LONG,
        "one long typo-like word": ("blak" * LONG)[:LONG],
        "one long capitalised word": ("Dress" * LONG)[:LONG],
        "emoji": ("\U0001f457\U0001f525" * LONG)[:LONG],
        "emoji with spaces": ("\U0001f457 " * LONG)[:LONG],
        "control characters": "".join(chr(rng.randrange(0, 32)) for _ in range(LONG)),
        "spaces": " " * LONG,
        "newlines": "\n" * LONG,
        "random unicode": "".join(chr(rng.choice([rng.randrange(0x20, 0xD800), rng.randrange(0xE000, 0x30000)]))
                                  for _ in range(LONG)),
        "negations": ("not " * LONG)[:LONG],
        "fashion word salad": " ".join(rng.choice(words) for _ in range(LONG // 3))[:LONG],
        "generic items with brands": ("Roadster shoes Nike bag " * LONG)[:LONG],
        "title case": " ".join(rng.choice(["Red", "Dress", "Navy", "Blue", "Nike", "Roadster", "Men"])
                               for _ in range(LONG // 4))[:LONG],
        "punctuation": ("!?.,;:-'\"" * LONG)[:LONG],
        "punctuation with spaces": ("!? " * LONG)[:LONG],
        "zero-width joiners": ("red\u200bdress\u200d" * LONG)[:LONG],
        "combining accents": ("e\u0301" * LONG)[:LONG],
        "over the limit": "shirt " * (2 * LONG // 6),
    }


LONG_NAMES = list(long_inputs())
CHILD = ("import sys; sys.path.insert(0, {tests!r}); import test_robustness_text as t; "
         "t.long_input_child(sys.argv[1:])")


def long_input_child(names: list[str]) -> None:
    """In the child: detector, then a two-message conversation with the bot, per input; one JSON line
    before ("start") and after ("done") each, with the CPU seconds and any problems."""
    import resource
    import tempfile

    detector = get_detector()
    storage = Storage(tempfile.mkdtemp(prefix="long-input-"))
    texts = long_inputs()
    for name in names:
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        resource.setrlimit(resource.RLIMIT_CPU, (int(used + CHILD_CPU_CAP_S) + 1, resource.RLIM_INFINITY))
        print(json.dumps({"start": name}), flush=True)
        child_tally = _ChildTally()
        text = texts[name]
        detection, cpu_detect = cpu_seconds(lambda t=text: detector(t))
        check_detection(text, detection, child_tally)
        child_tally.check(cpu_detect < CPU_LIMIT_LONG_S, f"{name}: the detector took {cpu_detect:.1f} CPU s")
        bot = Bot(FakeGeneratorService(), FixedSeeds())
        _, cpu_bot = cpu_seconds(lambda t=text, b=bot, c=child_tally: converse(b, storage, [t, "make it green"], c))
        print(json.dumps({"done": name, "cpu_detect": round(cpu_detect, 3), "cpu_bot": round(cpu_bot, 3),
                          "problems": child_tally.problems}), flush=True)


class _ChildTally:
    def __init__(self):
        self.problems: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what[:300])
        return ok


@pytest.fixture(scope="module")
def long_results() -> dict[str, dict]:
    """Runs every long input in CPU-capped children (a new child after one is killed)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    root = str(Path(__file__).resolve().parents[1])
    results: dict[str, dict] = {}
    remaining = list(LONG_NAMES)
    while remaining:
        proc = subprocess.run([sys.executable, "-c", CHILD.format(tests=tests), *remaining], cwd=root,
                              capture_output=True, text=True, timeout=1800,
                              env={**__import__("os").environ, "PYTHONPATH": root})
        current = None
        for line in proc.stdout.splitlines():
            event = json.loads(line)
            if "start" in event:
                current = event["start"]
            else:
                results[event["done"]] = event
                current = None
        if current is None:
            if proc.returncode != 0:
                raise RuntimeError(f"long-input child failed before any input: {proc.stderr[-2000:]}")
            break
        if proc.returncode == -signal.SIGXCPU:
            why = f"more than {CHILD_CPU_CAP_S} CPU seconds (killed)"
        else:
            why = f"the child died (status {proc.returncode}): {proc.stderr.strip()[-500:]}"
        results[current] = {"done": current, "problems": [f"{current}: {why}"]}
        remaining = remaining[remaining.index(current) + 1 :]
    return results


@pytest.mark.parametrize("name", LONG_NAMES)
def test_long_input_is_bounded(long_results, tally, name):
    """100,000 characters of each kind: the detector and each message of a two-message conversation (with
    the history written and read back) take under CPU_LIMIT_LONG_S CPU seconds, without an exception."""
    tally.tried()
    result = long_results[name]
    for problem in result["problems"]:
        tally.check(False, problem)
    tally.assert_ok()
