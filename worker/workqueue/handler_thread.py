"""The handler thread: runs the work on the items the worker hands it, in order.

The worker's main thread keeps the broker connection (and its heartbeats) while this
thread runs the user's handler, so a long item is never redelivered behind its back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pika

from workqueue.handlers import Handler, PoisonItem
from workqueue.queues import DELIVERY_COUNT_HEADER


class Delivery(NamedTuple):
    """One item as the broker delivered it."""

    method: pika.spec.Basic.Deliver | pika.spec.Basic.GetOk
    properties: pika.BasicProperties
    body: bytes


class ItemTimedOut(Exception):
    """The item ran past `ITEM_TIMEOUT_SECONDS`."""


@dataclass(eq=False, slots=True)
class Attempt:
    """One delivery of an item on its way through the handler thread."""

    delivery: Delivery
    started: float | None = None
    """When the handler thread began the work (monotonic); None until it does."""
    error: BaseException | None = None
    """What the work raised, None on success; the handler thread sets it."""
    timed_out: ItemTimedOut | None = None
    """Set once the work ran past `ITEM_TIMEOUT_SECONDS`; it is then the outcome."""
    grace_ends: float = 0.0
    """When a timed-out handler's time to return is up (monotonic)."""

    @property
    def tag(self) -> int:
        """The delivery tag, unique on the channel."""
        return self.delivery.method.delivery_tag

    @property
    def number(self) -> int:
        """Which attempt at the item this is: the broker's delivery count + 1."""
        headers = self.delivery.properties.headers or {}
        return int(headers.get(DELIVERY_COUNT_HEADER, 0)) + 1

    @property
    def result(self) -> BaseException | None:
        """The outcome of finished work: its error, or the time-out that overrode it."""
        return self.timed_out or self.error


#: Items to settle, each with the error its work ended in (None: it succeeded).
Outcomes = Sequence[tuple[Attempt, BaseException | None]]


class HandlerThread:
    """Runs the handler on one daemon thread, on the items handed to it, in order.

    The worker hands over every item as soon as it is delivered, so that short items
    run back to back while the main thread settles the ones before them: the two
    threads do not take turns on every item. Items and outcomes travel through two
    `SimpleQueue`s. A daemon, so that a handler which hangs past its time-out cannot
    keep the process alive once the worker has given up on it.

    After `close` no further item starts, so the worker can tell the items that ran
    from those that never will, and give the latter back to the queue.
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self._inbox: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        # Handed over and not collected, by delivery tag; used by the main thread only.
        self._handed: dict[int, Attempt] = {}
        # Guards `_closed` and `_running`: an item starts before `close` or never,
        # and `cancel` reaches only the item it names.
        self._lock = threading.Lock()
        self._closed = False
        self._running: Attempt | None = None
        threading.Thread(target=self._loop, name="handler", daemon=True).start()

    @property
    def holds_items(self) -> bool:
        """Whether items were handed over whose outcome was not collected."""
        return bool(self._handed)

    @property
    def running(self) -> Attempt | None:
        """The item whose work is running now, if any."""
        return self._running

    def submit(self, attempt: Attempt) -> None:
        """Queue the item behind those handed over before it."""
        self._handed[attempt.tag] = attempt
        self._inbox.put(attempt)

    def finished(self, timeout: float) -> list[Attempt]:
        """The items finished since the last call, in order.

        Waits up to `timeout` seconds for the first one, then takes every other one
        already there: the main thread wakes once per batch, not once per item.

        Returns:
            The finished items, each with `error` set; empty if none finished.
        """
        if not self._handed:
            return []
        try:
            batch = [self._outbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        # An item already given back (see `unfinished`) is no longer ours to report.
        return [done for done in batch if self._handed.pop(done.tag, None) is done]

    def unfinished(self) -> list[Attempt]:
        """Take back every item handed over and not yet finished, in order.

        Call it after `close` and `finished`: those with `started` set are running
        (or stuck), the others will never start.
        """
        attempts = list(self._handed.values())
        self._handed.clear()
        return attempts

    def close(self) -> None:
        """Start no further item. Once it returns, every finished item is in the
        outbox, so `finished` collects them all."""
        with self._lock:
            self._closed = True

    def close_if_running(self, attempt: Attempt) -> bool:
        """`close`, but only while `attempt` runs; returns whether it did."""
        with self._lock:
            if self._running is not attempt:
                return False
            self._closed = True
            return True

    def cancel(self, attempt: Attempt) -> None:
        """Kill `attempt`'s command if it is still running; a Python handler cannot be
        stopped."""
        cancel = getattr(self.handler, "cancel", None)
        with self._lock:
            # Under the lock, so that the next item cannot start meanwhile and have
            # its command killed in this one's place.
            if cancel is not None and self._running is attempt:
                cancel()

    def _loop(self) -> None:
        while True:
            attempt = self._inbox.get()
            if self._start(attempt):
                attempt.error = self._run(attempt.delivery.body)
                self._finish(attempt)

    def _start(self, attempt: Attempt) -> bool:
        with self._lock:
            if self._closed:
                return False
            attempt.started = time.monotonic()
            self._running = attempt
            return True

    def _run(self, body: bytes) -> BaseException | None:
        if not body:
            return PoisonItem("empty item")
        try:
            self.handler(body)
        # The handler is the user's code: whatever it raises is that item's failure,
        # SystemExit and KeyboardInterrupt too, which would otherwise end this thread.
        except BaseException as error:  # noqa: BLE001
            return error
        return None

    def _finish(self, attempt: Attempt) -> None:
        with self._lock:
            self._running = None
            # Under the lock: `close` then knows the item either finished or runs.
            self._outbox.put(attempt)
