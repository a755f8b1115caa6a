"""The worker thread: order, request ids, progress, errors as events, cancelling and superseding."""
from __future__ import annotations

import logging
import threading

import pytest

from app.chat.worker import CANCELLED, ERROR, PROGRESS, RESULT, STARTED, Worker


@pytest.fixture
def worker():
    w = Worker().start()
    yield w
    w.stop(timeout=5)


def events_until_done(worker, ids, timeout=30):
    """All events until every id in `ids` has finished (result, error or cancelled)."""
    pending, seen = set(ids), []
    while pending:
        event = worker.events.get(timeout=timeout)
        seen.append(event)
        if event.kind in (RESULT, ERROR, CANCELLED):
            pending.discard(event.request_id)
    return seen


def test_jobs_run_in_order_with_ids_and_progress(worker):
    a = worker.submit(lambda job: (job.progress("half way"), 1)[1])
    b = worker.submit(lambda job: 2)
    assert b > a
    events = events_until_done(worker, [a, b])
    assert [(e.request_id, e.kind) for e in events] == [(a, STARTED), (a, PROGRESS), (a, RESULT), (b, STARTED),
                                                        (b, RESULT)]
    assert events[1].data == "half way" and events[2].data == 1 and events[4].data == 2


def test_errors_are_logged_and_become_events(worker, caplog):
    def boom(job):
        raise ValueError("bad input")

    with caplog.at_level(logging.ERROR, logger="app.chat.worker"):
        rid = worker.submit(boom, group="chat")
        events = events_until_done(worker, [rid])
    error = events[-1]
    assert error.kind == ERROR and error.group == "chat"
    assert error.data.message == "bad input" and error.data.exc_type == "ValueError"
    assert "Traceback" in error.data.details
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    # the thread survives
    rid = worker.submit(lambda job: "still alive")
    assert events_until_done(worker, [rid])[-1].data == "still alive"


def test_cancel_a_queued_job(worker):
    gate = threading.Event()
    first = worker.submit(lambda job: gate.wait(10))
    second = worker.submit(lambda job: "never")
    assert worker.cancel(second)
    gate.set()
    events = events_until_done(worker, [first, second])
    kinds = {(e.request_id, e.kind) for e in events}
    assert (second, CANCELLED) in kinds and (second, STARTED) not in kinds and (first, RESULT) in kinds


def test_supersede_drops_the_late_result_of_the_running_job(worker):
    started, gate = threading.Event(), threading.Event()

    def slow(job):
        started.set()
        gate.wait(10)
        return "stale"

    old = worker.submit(slow, group="variants")
    assert started.wait(10)
    new = worker.submit(lambda job: "fresh", group="variants", supersede=True)
    other = worker.submit(lambda job: "other group", group="chat")
    gate.set()
    events = events_until_done(worker, [old, new, other])
    finished = {e.request_id: e for e in events if e.kind in (RESULT, ERROR, CANCELLED)}
    assert finished[old].kind == CANCELLED and finished[old].data is None  # the late result never shows
    assert finished[new].data == "fresh" and finished[other].data == "other group"


def test_job_check_stops_a_cancelled_job(worker):
    started, gate = threading.Event(), threading.Event()
    steps = []

    def cooperative(job):
        started.set()
        gate.wait(10)
        job.check()
        steps.append("after check")
        return "done"

    rid = worker.submit(cooperative, group="g")
    assert started.wait(10)
    assert worker.cancel_group("g") == 1
    gate.set()
    assert events_until_done(worker, [rid])[-1].kind == CANCELLED
    assert steps == []


def test_stop_cancels_pending_and_ends_the_thread():
    w = Worker().start()
    started, gate = threading.Event(), threading.Event()
    w.submit(lambda job: (started.set(), gate.wait(10)))
    w.submit(lambda job: "pending")
    assert started.wait(10)
    assert w.busy and w.pending() == 1
    w.stop()
    gate.set()
    w._thread.join(10)
    assert not w._thread.is_alive()
