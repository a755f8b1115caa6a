"""Under load: requests sent as fast as possible through the window's path, without Tk.

The window submits each message to `app.chat.worker.Worker` as a job calling `Bot.respond` and matches
the events to the message by request id. Here 200 messages are submitted in one burst (faster than
any typist) to the real ModelService (bundled generator, test catalogue): every one must be answered
once, in order, with the answer to *that* message. A second test hammers the worker alone (fast fake
jobs, four submitting threads, cancellations) for lost, duplicated or reordered events.
"""
from __future__ import annotations

import threading
import time

import pytest
from robustness_support import counting, gui_bot, real_service, torch_threads

from app.chat.worker import CANCELLED, ERROR, PROGRESS, RESULT, STARTED, Worker

REQUESTS = 200
WAIT_S = 900             # the longest the burst may take on a busy machine (about 60 s measured)
COLOURS = ["red", "navy blue", "black", "white", "green", "yellow", "pink", "grey", "brown", "purple"]
ITEMS = ["dress", "shirt", "jeans", "sneakers", "handbag", "skirt", "jacket", "sweater"]


@pytest.fixture
def tally(request):
    yield from counting(request)


def conversation(n: int) -> list[tuple[str, object]]:
    """(message, check) pairs: a new request, a refinement, more designs, chat; repeated."""
    out = []
    for i in range(n):
        colour, item = COLOURS[i % len(COLOURS)], ITEMS[(i // 5) % len(ITEMS)]
        other = COLOURS[(i + 3) % len(COLOURS)]
        step = i % 5
        if step == 0:
            out.append((f"{colour} {item} no. {i}", lambda r, c=colour: r.kind == "images" and c in r.caption))
        elif step == 1:
            out.append((f"make it {other}", lambda r, c=other: r.kind == "images" and c in r.caption))
        elif step == 2:
            out.append(("show me more", lambda r: r.kind == "images" and "New designs" in (r.note or "")))
        elif step == 3:
            out.append((f"hi there {i}", lambda r: r.kind == "text" and r.text.startswith(("Hi", "Hello"))))
        else:
            out.append(("thanks!", lambda r: r.kind == "text" and "welcome" in r.text))
    return out


def drain(worker: Worker, ids: set[int], timeout: float) -> list:
    """Events until every id in `ids` has its terminal event (result, error or cancelled)."""
    events, open_ids = [], set(ids)
    deadline = time.monotonic() + timeout
    while open_ids and time.monotonic() < deadline:
        try:
            event = worker.events.get(timeout=1.0)
        except Exception:  # queue.Empty: keep waiting
            continue
        events.append(event)
        if event.kind in (RESULT, ERROR, CANCELLED):
            open_ids.discard(event.request_id)
    return events


def test_200_requests_in_a_burst_are_answered_in_order(tally):
    messages = conversation(REQUESTS)
    with torch_threads(1):
        service = real_service()
        bot = gui_bot(service)
        worker = Worker(name="load-test").start()
        try:
            start = time.monotonic()
            ids = [worker.submit(lambda job, t=text: bot.respond(t, job.check), group="chat")
                   for text, _ in messages]
            submitted = time.monotonic() - start
            events = drain(worker, set(ids), WAIT_S)
            elapsed = time.monotonic() - start
        finally:
            worker.stop()
    tally.tried(REQUESTS)
    tally.check(ids == sorted(set(ids)) and len(ids) == REQUESTS, "request ids are not unique and increasing")
    terminal = [e for e in events if e.kind in (RESULT, ERROR, CANCELLED)]
    tally.check([e.request_id for e in terminal] == ids, "answers missing, duplicated or out of order: "
                f"{len(terminal)} terminal events for {REQUESTS} requests")
    for event in terminal:
        why = getattr(event.data, "message", "")
        tally.check(event.kind == RESULT, f"request {event.request_id}: {event.kind} {why}")
    by_id = dict(zip(ids, messages))
    for event in terminal:
        if event.kind == RESULT:
            text, check = by_id[event.request_id]
            reply = event.data
            tally.check(bool(check(reply)), f"{text!r} got the wrong answer: {reply.kind} {reply.caption!r} "
                                            f"{reply.text[:120]!r}")
            if reply.kind == "images":
                tally.check(len(reply.images) == 4 and len(reply.similar) > 0,
                            f"{text!r}: {len(reply.images)} images, {len(reply.similar)} products")
    # one job at a time, in order: each request starts after the previous one finished
    order = [(e.request_id, e.kind) for e in events if e.kind in (STARTED, RESULT)]
    expected = [(i, kind) for i in ids for kind in (STARTED, RESULT)]
    tally.check(order == expected, "jobs overlapped or ran out of order")
    print(f"{REQUESTS} requests submitted in {submitted * 1000:.1f} ms, all answered in {elapsed:.1f} s")
    tally.assert_ok()


def test_worker_under_concurrent_submits_and_cancels(tally):
    """Four threads submit 250 quick jobs each and cancel every seventh right after submitting it; every
    fifth job is also cancelled by another thread while it runs, after its last `check()` (so only
    `Worker._finish` can drop its value). Each job ends exactly once, results come in submission order,
    and a job whose cancel() returned True never delivers a result: it ends `cancelled`."""
    worker = Worker(name="hammer").start()
    per_thread, threads_n = 250, 4
    submitted: list[list[int]] = [[] for _ in range(threads_n)]
    cancelled: set[int] = set()
    lock = threading.Lock()

    def job(job, value):
        job.progress(f"working on {value}")
        job.check()
        if job.id % 5 == 0:  # a cancel that lands after the job's last check, while it is still running
            canceller = threading.Thread(target=cancel, args=(job.id,))
            canceller.start()
            canceller.join()
        return value

    def cancel(request_id: int) -> None:
        with lock:
            if worker.cancel(request_id):
                cancelled.add(request_id)

    def submit(k: int) -> None:
        for i in range(per_thread):
            request_id = worker.submit(lambda j, v=(k, i): job(j, v), group=f"thread{k}")
            submitted[k].append(request_id)
            if request_id % 7 == 0:
                cancel(request_id)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = {i for ids in submitted for i in ids}
    events = drain(worker, all_ids, 300)
    worker.stop()
    tally.tried(per_thread * threads_n)
    terminal = [e for e in events if e.kind in (RESULT, ERROR, CANCELLED)]
    tally.check(len(terminal) == len(all_ids) == per_thread * threads_n,
                f"{len(terminal)} terminal events for {len(all_ids)} jobs")
    tally.check(sorted(e.request_id for e in terminal) == sorted(all_ids), "a job ended twice or never")
    results = [e for e in terminal if e.kind == RESULT]
    tally.check([e.request_id for e in results] == sorted(e.request_id for e in results), "results out of order")
    mid_run = {i for i in cancelled if i % 5 == 0}
    tally.check(len(mid_run) >= 100, f"only {len(mid_run)} jobs were cancelled while running")
    for event in terminal:
        if event.request_id in cancelled:  # cancel() returned True: its value must never reach the UI
            tally.check(event.kind == CANCELLED, f"cancelled job {event.request_id} ended {event.kind}")
        else:
            tally.check(event.kind == RESULT, f"job {event.request_id} ended {event.kind}")
    for k, ids in enumerate(submitted):  # each result is its own job's value
        for i, request_id in enumerate(ids):
            found = [e for e in results if e.request_id == request_id]
            if found:
                tally.check(found[0].data == (k, i), f"job {request_id} returned {found[0].data}, not {(k, i)}")
    progress = [e for e in events if e.kind == PROGRESS]
    tally.check(len(progress) <= len(all_ids), "more progress events than jobs")
    print(f"{len(all_ids)} jobs, {len(cancelled)} cancelled ({len(mid_run)} while running), {len(results)} results")
    tally.assert_ok()


def test_cancel_is_not_acknowledged_after_the_result_was_sent(tally):
    """Worker.cancel() returns True while the job is still `_current`, which lasts until just *after* its
    result event was put on the queue. A cancel arriving in that gap is acknowledged, yet the UI gets the
    result: "a running job ... whatever it returns is dropped: the UI only ever sees a `cancelled` event"
    does not hold. The gap is made certain here by cancelling from inside `_emit`."""
    worker = Worker(name="cancel-race")
    acknowledged = {}
    emit = worker._emit

    def emit_then_cancel(event):
        emit(event)
        if event.kind == RESULT:
            acknowledged[event.request_id] = worker.cancel(event.request_id)

    worker._emit = emit_then_cancel
    worker.start()
    request_id = worker.submit(lambda job: "done")
    events = drain(worker, {request_id}, 30)
    worker.stop()
    tally.fault()
    delivered = [e.kind for e in events if e.kind in (RESULT, CANCELLED)]
    tally.check(not (acknowledged.get(request_id) and delivered == [RESULT]),
                "cancel() returned True for a job whose result had already been delivered")
    tally.assert_ok()
