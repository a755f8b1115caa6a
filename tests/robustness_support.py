"""Shared by the robustness tests: counting what was tried, and the real models loaded once per process.

Every robustness test takes a `tally` fixture (`yield from counting(request)`) and records the inputs
it tried, the faults it injected and the failures it saw (it asserts there were none at its end). The counts go to
test-artifacts/robustness-counts.json, one entry per test, and `python tests/robustness_support.py`
prints their totals (the numbers quoted in the README).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ROOT / "test-artifacts" / "robustness-counts.json"
PACK = Path(__file__).parent / "fixtures" / "pack" / "mini.npz"
CATALOG_PRODUCTS = 60  # products in the small catalogue built for the tests from the fixture pack


class Tally:
    def __init__(self, test: str):
        self.test = test
        self.inputs = self.faults = 0
        self.problems: list[str] = []

    def tried(self, n: int = 1) -> None:
        self.inputs += n

    def fault(self, n: int = 1) -> None:
        """A fault injected on purpose (a damaged file, a kill, a flipped bit); also an input tried."""
        self.faults += n
        self.inputs += n

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok

    @property
    def failures(self) -> int:
        return len(self.problems)

    def assert_ok(self) -> None:
        assert not self.problems, f"{len(self.problems)} failures:\n" + "\n".join(self.problems[:30])

    def save(self) -> None:
        COUNTS.parent.mkdir(parents=True, exist_ok=True)
        with open(COUNTS.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(COUNTS.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            data[self.test] = {"inputs": self.inputs, "faults": self.faults, "failures": self.failures,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            tmp = COUNTS.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, COUNTS)


def counting(request):
    """The body of each test file's `tally` fixture: `yield from counting(request)`."""
    t = Tally(request.node.nodeid)
    yield t
    t.save()
    print(f"\n{t.test}: {t.inputs} inputs ({t.faults} faults injected), {t.failures} failures")


def totals() -> dict:
    data = json.loads(COUNTS.read_text(encoding="utf-8"))
    by_file: dict[str, dict] = {}
    for test, counts in data.items():
        entry = by_file.setdefault(test.split("::")[0], {"tests": 0, "inputs": 0, "faults": 0, "failures": 0})
        entry["tests"] += 1
        for key in ("inputs", "faults", "failures"):
            entry[key] += counts[key]
    return by_file


# ---------------------------------------------------------------------------------------- the real models


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` torch threads, then restore: on a busy 2-core machine two threads spin against
    other processes and make each model call many times slower (correctness is what is tested here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def catalogue_for_tests() -> Path:
    """A catalogue of the fixture pack's first products, embedded with the bundled search model."""
    from models.data import load_table
    from models.search.catalog import Catalogue
    from models.search.retrieval import SearchModel

    path = Path(tempfile.mkdtemp(prefix="robustness-catalog-")) / "catalog.npz"
    table = load_table(PACK).subset(range(CATALOG_PRODUCTS))
    Catalogue.build(table, SearchModel(), source="robustness tests").save(path)
    return path


@functools.lru_cache(maxsize=1)
def real_service():
    """app.chat.service.ModelService with the bundled weights and the test catalogue, loaded once per process."""
    from app.chat.service import ModelService

    service = ModelService(catalog=catalogue_for_tests(), device="cpu")
    service.load()
    assert service.retriever is not None, service.catalog_error
    return service


def gui_bot(service, settings=None):
    """A Bot set up as the window's loading job sets it up (app.gui.window.App._load_job)."""
    from app.chat.bot import Bot

    bot = Bot(service, settings)
    bot.catalogue_ready = getattr(service, "retriever", None) is not None
    bot.catalogue_error = getattr(service, "catalog_error", None)
    return bot


if __name__ == "__main__":
    grand = {"tests": 0, "inputs": 0, "faults": 0, "failures": 0}
    for name, entry in sorted(totals().items()):
        print(f"{name}: {entry['tests']} tests, {entry['inputs']} inputs, {entry['faults']} faults injected, "
              f"{entry['failures']} failures")
        for key in grand:
            grand[key] += entry[key]
    print(f"total: {grand['tests']} tests, {grand['inputs']} inputs, {grand['faults']} faults injected, "
          f"{grand['failures']} failures")
