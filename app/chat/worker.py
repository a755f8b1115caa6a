"""One daemon thread for everything slow (model loading, detection, generation, retrieval).

The Thonny pattern: the thread never touches a widget. The UI submits jobs (plain callables) and gets
a request id back; the thread puts `Event`s on `events`, which the UI drains with `after()`. Jobs run
one at a time in submission order (the models are not thread-safe and this machine has two cores), so
messages sent while the models load simply wait their turn.

Cancelling: `cancel(id)` drops a job that has not started; a running job is asked to stop
(`job.cancelled`, `job.check()`) and whatever it returns is dropped: the UI only ever sees a
`cancelled` event for it. `cancel()` returns True only when that holds: a job's last event is decided
under the worker's lock, and a cancel that comes later finds the job finished and returns False.
`submit(..., supersede=True)` cancels the earlier jobs of the same group
(a second "Generate variants" replaces the first). Exceptions in a job are logged with their
traceback and become an `error` event: never swallowed.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Event kinds, in the order a job produces them.
STARTED, PROGRESS, RESULT, ERROR, CANCELLED = "started", "progress", "result", "error", "cancelled"


class Cancelled(Exception):
    """Raised by `Job.check()` inside a job that was cancelled."""


@dataclass
class Event:
    request_id: int
    kind: str          # started | progress | result | error | cancelled
    group: str
    data: Any = None   # progress: a message; result: the job's value; error: a WorkerError


@dataclass
class WorkerError:
    message: str       # one line for the user
    exc_type: str
    details: str       # the traceback, for the log and a "details" view
    exception: BaseException | None = field(default=None, repr=False)


class Job:
    def __init__(self, request_id: int, group: str, fn: Callable[[Job], Any], worker: Worker):
        self.id = request_id
        self.group = group
        self.fn = fn
        self._worker = worker
        self._cancel = threading.Event()
        self.finished = False  # its last event is decided (set under the worker's lock): no longer cancellable

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, message: Any) -> None:
        if not self._cancel.is_set():
            self._worker._emit(Event(self.id, PROGRESS, self.group, message))


class Worker:
    def __init__(self, name: str = "fashiongan-worker"):
        self.events: queue.Queue[Event] = queue.Queue()
        self._pending: deque[Job] = deque()
        self._current: Job | None = None
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def submit(self, fn: Callable[[Job], Any], group: str = "default", supersede: bool = False) -> int:
        """Queue `fn(job)`; returns the request id its events will carry."""
        with self._cv:
            if supersede:
                self._cancel_where(lambda job: job.group == group)
            job = Job(next(self._ids), group, fn, self)
            self._pending.append(job)
            self._cv.notify()
            return job.id

    def cancel(self, request_id: int) -> bool:
        with self._cv:
            return self._cancel_where(lambda job: job.id == request_id) > 0

    def cancel_group(self, group: str) -> int:
        with self._cv:
            return self._cancel_where(lambda job: job.group == group)

    def _cancel_where(self, match: Callable[[Job], bool]) -> int:
        count = 0
        for job in [*self._pending, *([self._current] if self._current else [])]:
            if match(job) and not job.cancelled and not job.finished:
                job._cancel.set()
                count += 1
        return count

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._current is not None or bool(self._pending)

    def pending(self, group: str | None = None) -> int:
        with self._cv:
            return sum(1 for job in self._pending if group is None or job.group == group)

    def stop(self, timeout: float = 0.0) -> None:
        """Ask the thread to finish after its current job; it is a daemon, so exit never waits on it."""
        with self._cv:
            self._stopping = True
            for job in self._pending:
                job._cancel.set()
            self._cv.notify()
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)

    def _emit(self, event: Event) -> None:
        self.events.put(event)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                job = self._current = self._pending.popleft()
            try:
                self._execute(job)
            finally:
                with self._cv:
                    self._current = None

    def _execute(self, job: Job) -> None:
        if job.cancelled:
            self._finish(job, CANCELLED)
            return
        self._emit(Event(job.id, STARTED, job.group))
        try:
            value = job.fn(job)
        except Cancelled:
            self._finish(job, CANCELLED)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
            log.exception("request %d (%s) failed", job.id, job.group)
            message = str(exc) or type(exc).__name__
            self._finish(job, ERROR, WorkerError(message, type(exc).__name__, traceback.format_exc(), exc))
        else:
            self._finish(job, RESULT, value)

    def _finish(self, job: Job, kind: str, data: Any = None) -> None:
        """Emit the job's last event. Cancelled-or-not is read and the job marked finished in one step under
        the lock, so a cancel() either lands first (a result is then dropped: the UI sees only `cancelled`) or
        finds the job finished and returns False; never both acknowledged and delivered."""
        with self._cv:
            if kind == RESULT and job.cancelled:
                kind, data = CANCELLED, None
            job.finished = True
        self._emit(Event(job.id, kind, job.group, data))
