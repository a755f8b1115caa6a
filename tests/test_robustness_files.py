"""Damaged files: weights, the catalogue and the chat history.

- Weights: missing, empty, truncated, random, bit-flipped, of another model or version, and pickles
  that would run code (through `torch.save` and as a bare pickle) -> CheckpointError naming the file,
  from `load_checkpoint`, the generator, the search model and `ModelService.load`; the code in the
  pickles never runs (weights_only=True: nothing but tensors is unpickled).
- Catalogue: the same kinds of damage plus object (pickle) arrays and inconsistent fields -> CatalogError
  naming the file; the app still loads and draws images without it.
- History: a writer SIGKILLed at random moments never leaves a history that cannot be read, and never
  loses what an earlier write saved; corrupt files are set aside byte for byte with a notice.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from robustness_support import ROOT, counting, gui_bot, real_service, torch_threads

from app.chat.storage import MAX_HISTORY, Storage
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.resources import GENERATOR_WEIGHTS

EMBEDDING_WEIGHTS = ROOT / "weights" / "embedding.pt"
BIT_FLIPS = 24       # random single-bit flips per checkpoint
KILLS = 25           # SIGKILLs of a process writing the history
MARKER = "pwned.txt"  # what the malicious pickles would create


@pytest.fixture
def tally(request):
    yield from counting(request)


class RunsCode:
    """Unpickling this would run a shell command that creates MARKER in the current folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return (os.system, (f"touch {self.folder / MARKER}",))


# ------------------------------------------------------------------------------------------- damage


def damaged_versions(source: Path, folder: Path, seed: int = 0) -> list[tuple[str, Path]]:
    """(what, path) for every kind of damage to `source`, written under `folder`."""
    data = source.read_bytes()
    rng = random.Random(seed)
    out = [("missing", folder / "missing.bin"), ("a folder", folder)]

    def write(name: str, content: bytes) -> None:
        path = folder / f"{name}{source.suffix}"
        path.write_bytes(content)
        out.append((name, path))

    write("empty", b"")
    for cut in (8, 100, 1000, len(data) // 2, len(data) - 100, len(data) - 1):
        write(f"truncated-at-{cut}", data[:cut])
    write("random-bytes", rng.randbytes(len(data)))
    write("text", b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")  # an LFS pointer
    for i in range(BIT_FLIPS):
        flipped = bytearray(data)
        at = rng.randrange(len(data))
        flipped[at] ^= 1 << rng.randrange(8)
        write(f"bit-flip-{i}-at-{at}", bytes(flipped))
    return out


def malicious_checkpoints(folder: Path) -> list[tuple[str, Path]]:
    """Files that run code when unpickled without weights_only."""
    out = []
    evil = RunsCode(folder)
    path = folder / "evil-in-checkpoint.pt"  # a real checkpoint dict with one poisoned value
    torch.save({"version": 1, "state_dict": {"w": torch.zeros(2)}, "config": {"gan": {}}, "extra": evil}, path)
    out.append(("torch.save with code", path))
    path = folder / "evil-state-dict.pt"
    torch.save({"version": 1, "state_dict": evil, "config": {}}, path)
    out.append(("code as the state_dict", path))
    path = folder / "evil-legacy.pt"  # a bare pickle, the pre-zip torch format
    path.write_bytes(pickle.dumps(evil, protocol=2))
    out.append(("bare pickle with code", path))
    path = folder / "evil-swapped-data.pt"  # a genuine archive whose data.pkl was replaced
    with zipfile.ZipFile(GENERATOR_WEIGHTS) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            body = pickle.dumps(evil, protocol=2) if item.filename.endswith("data.pkl") else src.read(item)
            dst.writestr(item, body)
    out.append(("archive with a swapped data.pkl", path))
    return out


def wrong_checkpoints(folder: Path) -> list[tuple[str, Path]]:
    """Valid files with the wrong contents for a generator."""
    out = []
    path = folder / "tensor-only.pt"
    torch.save(torch.zeros(3), path)
    out.append(("a bare tensor", path))
    payload = load_checkpoint(GENERATOR_WEIGHTS)
    path = folder / "old-version.pt"
    torch.save({**payload, "version": 999}, path)
    out.append(("another version", path))
    path = folder / "shapes.pt"
    save_checkpoint(path, {"state_dict": {k: v[..., :1] if v.ndim else v for k, v in payload["state_dict"].items()},
                           "config": payload["config"]})
    out.append(("wrong tensor shapes", path))
    path = folder / "no-config.pt"
    save_checkpoint(path, {"state_dict": payload["state_dict"], "config": {}})
    out.append(("no gan config", path))
    if EMBEDDING_WEIGHTS.exists():
        out.append(("the embedding model's weights", EMBEDDING_WEIGHTS))
    return out


def expect_error(tally, what: str, path: Path, load, error=CheckpointError) -> None:
    try:
        load(path)
    except error as exc:
        tally.check(str(path) in str(exc) or path.name in str(exc), f"{what}: message does not name the file: {exc}")
    except Exception as exc:  # noqa: BLE001
        expected = " or ".join(e.__name__ for e in (error if isinstance(error, tuple) else (error,)))
        tally.check(False, f"{what}: {_qualname(exc)} instead of {expected}: {exc}")
    else:
        tally.check(False, f"{what}: {path.name} was loaded")
    tally.check(not (path.parent / MARKER).exists(), f"{what}: the pickled code ran")


def _qualname(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__name__ if module == "builtins" else f"{module}.{type(exc).__name__}"


# ------------------------------------------------------------------------------------------- weights


def load_generator(path):
    from models.generate import TextToImage

    return TextToImage(path, "cpu")


def load_search_model(path):
    from models.search.retrieval import SearchModel

    return SearchModel(path)


LOADERS = {"load_checkpoint": load_checkpoint, "generator": load_generator, "search model": load_search_model}
SOURCES = {"load_checkpoint": GENERATOR_WEIGHTS, "generator": GENERATOR_WEIGHTS, "search model": EMBEDDING_WEIGHTS}


def model_tensors(loaded) -> dict[str, object]:
    """What a loader's result computes with: a checkpoint's payload, or a model's state_dict and config."""
    if isinstance(loaded, dict):
        return loaded
    net = loaded.net
    out = {f"net.{k}": v for k, v in net.state_dict().items()}
    reference = getattr(loaded, "reference", None)
    if reference is not None:
        out.update({f"reference.{k}": v for k, v in reference.state_dict().items()})
    out["config"] = loaded.config.to_dict() if hasattr(loaded.config, "to_dict") else repr(loaded.config)
    return out


def differences(a, b, where: str = "") -> list[str]:
    """Where two loaded results differ (tensors compared exactly, dtypes included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    return [] if a == b else [where]


def expect_flip_refused_or_harmless(tally, what: str, path: Path, load, original) -> bool:
    """A flipped bit: CheckpointError naming the file, or (a bit no check covers, e.g. zip padding) exactly
    the original model; never a silently different one. Returns whether it loaded."""
    try:
        loaded = load(path)
    except CheckpointError as exc:
        tally.check(path.name in str(exc), f"{what}: message does not name the file: {exc}")
        return False
    except Exception as exc:  # noqa: BLE001
        tally.check(False, f"{what}: {_qualname(exc)} instead of CheckpointError: {exc}")
        return False
    changed = differences(model_tensors(original), model_tensors(loaded))
    tally.check(not changed, f"{what}: loaded as a different model ({', '.join(changed[:3])})")
    return True


@pytest.mark.parametrize("loader", list(LOADERS))
def test_damaged_weights_are_a_clear_error(tmp_path, tally, loader):
    """Every kind of damage, bit flips included, without a SHA256SUMS beside the copy (a training run's
    checkpoint): the zip CRCs must catch flips in the data; a flip that loads must change nothing."""
    load = LOADERS[loader]
    original = load(SOURCES[loader])
    harmless = []
    for what, path in damaged_versions(SOURCES[loader], tmp_path):
        tally.fault()
        if what.startswith("bit-flip"):
            if expect_flip_refused_or_harmless(tally, what, path, load, original):
                harmless.append(what)
            continue
        expect_error(tally, what, path, load)
    print(f"{loader}: {len(harmless)} of {BIT_FLIPS} bit flips loaded, each as the original model")
    tally.assert_ok()


@pytest.mark.parametrize("loader", list(LOADERS))
def test_pickled_code_never_runs(tmp_path, tally, loader):
    for what, path in malicious_checkpoints(tmp_path):
        tally.fault()
        expect_error(tally, what, path, LOADERS[loader])
    tally.assert_ok()


def test_wrong_checkpoints_are_a_clear_error(tmp_path, tally):
    for what, path in wrong_checkpoints(tmp_path):
        tally.fault()
        expect_error(tally, what, path, load_generator)
    tally.assert_ok()


def targeted_flips(source: Path, folder: Path) -> list[tuple[str, Path]]:
    """Single-bit flips at chosen places: inside a tensor's data (member CRC-32 covers it), in a local
    header's extra field (the alignment padding: no CRC covers it) and in the central directory."""
    data = source.read_bytes()
    with zipfile.ZipFile(source) as z:
        infos = z.infolist()
    tensor = max(infos, key=lambda i: i.file_size)  # the largest member: tensor data
    name_len, extra_len = struct.unpack("<HH", data[tensor.header_offset + 26 : tensor.header_offset + 30])
    data_start = tensor.header_offset + 30 + name_len + extra_len
    places = {"tensor-data": data_start + tensor.compress_size // 2,
              "central-directory": data.rindex(b"PK\x01\x02") + 30}  # the last entry's file name
    padded = next((i for i in infos if struct.unpack("<H", data[i.header_offset + 28 : i.header_offset + 30])[0] > 8),
                  None)
    if padded is not None:
        name_len, extra_len = struct.unpack("<HH", data[padded.header_offset + 26 : padded.header_offset + 30])
        places["header-padding"] = padded.header_offset + 30 + name_len + extra_len - 1
    out = []
    for name, at in places.items():
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        path = folder / f"flip-{name}{source.suffix}"
        path.write_bytes(bytes(flipped))
        out.append((f"bit flip in the {name}", path))
    return out


@pytest.mark.parametrize("loader", list(LOADERS))
def test_bit_flipped_shipped_weights_are_refused(tmp_path, tally, loader):
    """The shipped weights sit beside weights/SHA256SUMS: there every flipped bit, wherever it lands (tensor
    data, zip padding, central directory, or at random), is a CheckpointError naming the file. Without the
    SHA256SUMS line a flip inside tensor data is still refused (CRC-32), and one that loads is the same model."""
    source = SOURCES[loader]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    listed, unlisted = tmp_path / "listed", tmp_path / "unlisted"
    listed.mkdir()
    unlisted.mkdir()
    flips = targeted_flips(source, listed) + [(w, p) for w, p in damaged_versions(source, listed, seed=5)
                                              if w.startswith("bit-flip")]
    assert {"bit flip in the tensor-data", "bit flip in the header-padding"} <= {w for w, _ in flips}
    (listed / "SHA256SUMS").write_text("".join(f"{digest}  {p.name}\n" for _, p in flips), encoding="utf-8")
    original = LOADERS[loader](source)
    for what, path in flips:
        tally.fault()
        expect_error(tally, f"{what} (listed in SHA256SUMS)", path, LOADERS[loader])
        if what.startswith("bit flip in the"):
            copy = unlisted / path.name
            copy.write_bytes(path.read_bytes())
            tally.fault()
            if what == "bit flip in the tensor-data":
                expect_error(tally, f"{what} (no SHA256SUMS)", copy, LOADERS[loader])
            else:
                expect_flip_refused_or_harmless(tally, f"{what} (no SHA256SUMS)", copy, LOADERS[loader], original)
    tally.assert_ok()


def test_bit_flipped_catalogue_is_refused(tmp_path, tally):
    """The shipped catalogue's seal (a SHA-256 in the zip comment): every flipped bit is a CatalogError naming
    the file, wherever it lands (a member's data, a header, the central directory, the seal itself)."""
    from models.search.catalog import CatalogError, Catalogue
    from models.search.retrieval import DEFAULT_CATALOG

    data = DEFAULT_CATALOG.read_bytes()
    with zipfile.ZipFile(DEFAULT_CATALOG) as z:
        info = z.getinfo("embeddings.npy")
    places = {"embeddings": info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2,
              "local-header-name": info.header_offset + 30, "central-directory": data.rindex(b"PK\x01\x02") + 30,
              "seal": len(data) - 3}
    rng = random.Random(7)
    places.update({f"random-{i}": rng.randrange(len(data)) for i in range(BIT_FLIPS)})
    for what, at in places.items():
        flipped = bytearray(data)
        flipped[at] ^= 1 << (at % 8)
        path = tmp_path / f"flip-{what}-at-{at}.npz"
        path.write_bytes(bytes(flipped))
        tally.fault()
        expect_error(tally, f"catalogue bit flip ({what})", path, Catalogue.load, CatalogError)
    tally.assert_ok()


def test_service_load_names_the_damaged_weights(tmp_path, tally):
    """What the window's loading job does: ModelService.load raises CheckpointError naming the file."""
    from app.chat.service import ModelService

    cases = [("missing", tmp_path / "gone.pt")]
    cases += [(w, p) for w, p in malicious_checkpoints(tmp_path) if w == "torch.save with code"]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(GENERATOR_WEIGHTS.read_bytes()[:5000])
    cases.append(("truncated", truncated))
    with torch_threads(1):
        for what, path in cases:
            tally.fault()
            expect_error(tally, what, path, lambda p: ModelService(weights=p, catalog=tmp_path / "none.npz").load())
    tally.assert_ok()


# ------------------------------------------------------------------------------------------- catalogue


@pytest.fixture(scope="module")
def service():
    with torch_threads(1):
        yield real_service()


def catalogue_variants(good: Path, folder: Path) -> list[tuple[str, Path]]:
    """Damaged copies of a good catalogue, and well-formed files with the wrong contents."""
    out = damaged_versions(good, folder, seed=1)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def variant(name: str, **changes) -> None:
        path = folder / f"{name}.npz"
        np.savez(path, **{**arrays, **changes})
        out.append((name, path))

    variant("object-array", ids=np.array([RunsCode(folder)] * len(arrays["ids"]), dtype=object))
    variant("pickled-meta", meta=np.array({"version": 1, "evil": RunsCode(folder)}, dtype=object))
    variant("meta-not-json", meta=np.array("{not json"))
    variant("meta-a-list", meta=np.array("[1, 2]"))
    variant("other-version", meta=np.array(json.dumps({**json.loads(str(arrays["meta"])), "version": 99})))
    variant("other-model", meta=np.array(json.dumps({**json.loads(str(arrays["meta"])), "model": "0123abcd"})))
    variant("fewer-titles", titles=arrays["titles"][:-1])
    variant("integer-embeddings", embeddings=np.zeros(arrays["embeddings"].shape, np.int32))
    variant("wrong-dimension", embeddings=np.zeros((len(arrays["ids"]), 7), np.float16))
    variant("offsets-past-the-end", thumb_offsets=arrays["thumb_offsets"] + 10)
    variant("offsets-backwards", thumb_offsets=arrays["thumb_offsets"][::-1].copy())
    path = folder / "missing-field.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "thumbs"})
    out.append(("missing-field", path))
    out.append(("broken-deflate-stream", broken_deflate(good, folder / "broken-deflate.npz")))
    return out


def broken_deflate(good: Path, path: Path) -> Path:
    """A copy of a compressed .npz whose embeddings member starts with an invalid deflate block (0xff...):
    reading it raises zlib.error, as a bit flip inside compressed data often does."""
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("embeddings.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED, "the catalogue is expected to be compressed"
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def test_damaged_catalogue_is_a_clear_error(service, tmp_path, tally):
    """ModelService.load_catalog (what load() and the window call) on each damaged catalogue: CatalogError
    or CheckpointError naming the file, no pickled code run; the good catalogue still loads after."""
    from app.chat.service import ModelService
    from models.search.catalog import CatalogError

    good = Path(service.catalog)
    for what, path in catalogue_variants(good, tmp_path):
        tally.fault()

        def load(p):
            fresh = ModelService(catalog=p)
            fresh.detector, fresh.encoder, fresh.generator = service.detector, service.encoder, service.generator
            fresh.load_catalog()

        expect_error(tally, what, path, load, (CatalogError, CheckpointError))
    tally.assert_ok()


@pytest.mark.parametrize("damage", ["truncated", "broken deflate stream", "meta not an object"])
def test_app_works_without_its_catalogue(service, tmp_path, tally, damage):
    """The window's loading job with a damaged catalogue: load() succeeds, says why similar products are
    unavailable (naming the file), and requests still get images. (If load() raised, the window would
    take it for a generator failure and stop drawing images altogether.)"""
    from app.chat.service import ModelService

    good, bad = Path(service.catalog), tmp_path / "catalog.npz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:3000])
    elif damage == "broken deflate stream":
        broken_deflate(good, bad)
    else:
        with np.load(good, allow_pickle=False) as z:
            np.savez(bad, **{**{k: z[k] for k in z.files}, "meta": np.array("[1, 2]")})
    tally.fault()
    fresh = ModelService(catalog=bad, device="cpu")
    messages = []
    with torch_threads(1):
        try:
            fresh.load(messages.append)
        except Exception as exc:  # noqa: BLE001
            tally.check(False, f"{damage}: ModelService.load raised {type(exc).__name__}: {exc}")
            tally.assert_ok()
        tally.check(fresh.generator is not None and fresh.retriever is None, "load() did not leave generation on")
        tally.check(str(bad) in (fresh.catalog_error or ""), f"catalog_error: {fresh.catalog_error!r}")
        tally.check(any("similar products unavailable" in m for m in messages), f"progress: {messages}")
        reply = gui_bot(fresh).respond("a red dress for a party")
    tally.check(reply.kind == "images" and len(reply.images) == 4 and not reply.similar,
                f"{reply.kind}: {reply.text[:200]}")
    tally.assert_ok()


# ------------------------------------------------------------------------------------------- history

WRITER = r"""
import sys
from app.chat.storage import Storage
storage = Storage(sys.argv[1])
history = storage.load_history()
assert history.notice is None, history.notice
messages = history.messages
n = int(messages[-1]["text"].split()[1]) if messages else 0
print("ready", n, flush=True)
while True:
    n += 1
    messages.append({"role": "user", "text": f"message {n} " + "x" * 300, "time": n})
    messages = messages[-2000:]
    storage.save_history(messages, {"last": n})
"""


def test_kill_during_history_writes_never_corrupts_it(tmp_path, tally):
    """A process appends a message and saves the history in a loop (continuing what is on disk, as the app
    does after a restart) and is SIGKILLed at a random moment, KILLS times; every time the history must
    load cleanly and hold consecutive messages up to at least what the last run had seen saved."""
    rng = random.Random(11)
    home = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last_seen = 0
    interrupted_writes = 0
    for i in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        ready = line.split()
        if ready[:1] != ["ready"]:
            proc.kill()
            proc.wait(30)
            tally.check(False, f"kill {i}: writer did not start ({line!r}): {proc.stderr.read()[-800:]}")
            break
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        tally.fault()
        leftovers = list(home.glob(".history.json.*.tmp"))
        interrupted_writes += bool(leftovers)
        for leftover in leftovers:  # half-written temporary files are the atomic write's, never the history
            leftover.unlink()
        history = Storage(home).load_history()
        numbers = [int(m["text"].split()[1]) for m in history.messages]
        ok = history.notice is None and numbers == list(range(numbers[0], numbers[0] + len(numbers))) \
            if numbers else history.notice is None
        tally.check(ok, f"kill {i}: history unreadable or out of order ({history.notice}, {numbers[:3]}...)")
        tally.check(not numbers or numbers[-1] >= int(ready[1]), f"kill {i}: lost saved messages: "
                    f"{numbers[-1] if numbers else 0} < {ready[1]}")
        tally.check(len(numbers) <= MAX_HISTORY, f"kill {i}: {len(numbers)} messages kept")
        last_seen = numbers[-1] if numbers else last_seen
    print(f"{KILLS} kills, {interrupted_writes} during a write (temporary file left behind), "
          f"{last_seen} messages written in all")
    tally.check(interrupted_writes > 0, "no kill landed during a write: the test did not test anything")
    tally.assert_ok()


CORRUPT = {
    "truncated": b'{"version": 1, "messages": [{"role": "user", "text": "red dr',
    "empty": b"",
    "binary": bytes(range(256)) * 8,
    "not utf-8": b'{"version": 1, "messages": [{"role": "user", "text": "caf\xe9"}]}',
    "null": b"null",
    "a list": b"[1, 2, 3]",
    "messages not a list": b'{"version": 1, "messages": "hello"}',
    "messages of numbers": b'{"version": 1, "messages": [1, 2]}',
    "no messages": b'{"version": 1, "chat": []}',
    "byte order mark": b'\xef\xbb\xbf{"version": 1, "messages": []}',
    "deep nesting": b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nul bytes": b"\x00" * 4096,
    "huge number": b'{"version": 1, "messages": [], "state": ' + b"9" * 100_000 + b"}",
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_history_is_set_aside_with_a_notice(tmp_path, tally, name):
    content = CORRUPT[name]
    storage = Storage(tmp_path)
    storage.history_path.parent.mkdir(parents=True, exist_ok=True)
    storage.history_path.write_bytes(content)
    tally.fault()
    try:
        history = storage.load_history()
    except Exception as exc:  # noqa: BLE001 - the window could not start
        tally.check(False, f"{name}: load_history raised {type(exc).__name__}: {str(exc)[:200]}")
        tally.assert_ok()
    aside = sorted(tmp_path.glob("history.corrupt-*.json"))
    tally.check(history.messages == [] and bool(history.notice), f"{name}: {history}")
    tally.check(len(aside) == 1 and aside[0].read_bytes() == content, f"{name}: the old file was not kept as it was")
    tally.check(bool(aside) and str(aside[0]) in (history.notice or ""), f"{name}: notice does not say where")
    storage.save_history([{"role": "user", "text": "a fresh start"}])
    fresh = storage.load_history().messages
    tally.check(fresh == [{"role": "user", "text": "a fresh start"}], f"{name}: no fresh start")
    tally.assert_ok()


def test_repeated_corruption_keeps_every_old_file(tmp_path, tally):
    """Three unreadable histories in the same second: three files set aside, none overwritten."""
    storage = Storage(tmp_path)
    storage.history_path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        tally.fault()
        storage.history_path.write_bytes(b"broken %d" % i)
        tally.check(bool(storage.load_history().notice), f"corruption {i}: no notice")
    kept = sorted(p.read_bytes() for p in tmp_path.glob("history.corrupt-*.json"))
    tally.check(kept == [b"broken 0", b"broken 1", b"broken 2"], f"kept {kept}")
    tally.assert_ok()
