"""The `seed` command: fill the work queue with items, each exactly once.

A ledger queue beside the work queue records the recent seeding runs (`started` or
`complete`, with their batch ids), which makes the command safe to run again: a
completed batch is not published twice, and a run that died halfway has its partial
items purged and published again, as long as the queue held nothing else and nothing
consumes it. An exclusive lock queue keeps two seeding runs of one queue apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from workqueue.broker import connect, connection_parameters, describe
from workqueue.queues import declare_queues
from workqueue.settings import QueueSettings, SeedSettings

log = logging.getLogger(__name__)

#: Published but unconfirmed items at most; large enough to hide the round trip,
#: small enough that the broker never holds much of one run in flight.
CONFIRM_WINDOW = 4096
PERSISTENT = pika.DeliveryMode.Persistent
#: Seeding runs the ledger remembers, newest last.
LEDGER_RUNS = 20
#: RabbitMQ's reply when an exclusive queue belongs to another connection.
RESOURCE_LOCKED = 405


class SeedInputError(ValueError):
    """The items cannot be seeded as given; nothing was published."""


class SeedError(RuntimeError):
    """The broker refused or could not route an item; the run is not complete."""


@dataclass(frozen=True)
class LedgerEntry:
    """The state of one seeding run of a queue."""

    batch: str
    state: str
    ready_before: int


def read_items(source: BinaryIO, max_item_bytes: int, name: str) -> list[bytes]:
    """One item per line of `source`, without line endings; blank lines are skipped.

    Raises:
        SeedInputError: an item is over `max_item_bytes`, or there is no item.
    """
    items = []
    for number, line in enumerate(source, start=1):
        item = line.removesuffix(b"\n").removesuffix(b"\r")
        if not item.strip():
            continue
        if len(item) > max_item_bytes:
            raise SeedInputError(
                f"{name} line {number}: item of {len(item)} bytes is over the limit "
                f"of {max_item_bytes} bytes (MAX_ITEM_BYTES)"
            )
        items.append(item)
    if not items:
        raise SeedInputError(f"{name} holds no items: give one item per line")
    return items


def load_items(path: str | None, max_item_bytes: int) -> list[bytes]:
    """Read the items from the file at `path`, or from stdin when it is None or `-`.

    Raises:
        SeedInputError: the file cannot be read, or `read_items` refuses its content.
    """
    if path in (None, "-"):
        return read_items(sys.stdin.buffer, max_item_bytes, "stdin")
    try:
        with Path(path).open("rb") as source:
            return read_items(source, max_item_bytes, path)
    except OSError as error:
        raise SeedInputError(
            f"cannot read item file {path}: {error.strerror}"
        ) from None


def batch_id(items: Sequence[bytes]) -> str:
    """A stable id for a list of items: the same items give the same id."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(len(item).to_bytes(8, "big"))
        digest.update(item)
    return digest.hexdigest()[:16]


def ledger_name(queue: QueueSettings) -> str:
    """The queue that holds the ledger of recent seeding runs."""
    return f"{queue.name}.seed-ledger"


def _take_lock(channel: BlockingChannel, queue: QueueSettings) -> None:
    """Hold the queue's seed lock for as long as this connection lives.

    An exclusive queue belongs to one connection and goes with it, even when the
    process is killed, so a lock is never left behind.

    Raises:
        SeedError: another seeding run of the queue holds the lock.
    """
    try:
        channel.queue_declare(
            f"{queue.name}.seed-lock", exclusive=True, auto_delete=True
        )
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != RESOURCE_LOCKED:
            raise
        raise SeedError(
            f"another seeding run of queue {queue.name} is in progress; "
            "try again once it has finished"
        ) from None


def _declare_ledger(channel: BlockingChannel, queue: QueueSettings) -> None:
    # A classic queue keeping only the newest message: reading it back and returning
    # it costs nothing, where a quorum queue would count each read as a delivery.
    channel.queue_declare(
        ledger_name(queue),
        durable=True,
        arguments={"x-queue-type": "classic", "x-max-length": 1},
    )


def _read_ledger(channel: BlockingChannel, queue: QueueSettings) -> list[LedgerEntry]:
    method, _properties, body = channel.basic_get(ledger_name(queue), auto_ack=False)
    if method is None:
        return []
    channel.basic_reject(method.delivery_tag, requeue=True)
    return [LedgerEntry(**fields) for fields in json.loads(body)["runs"]]


def _write_ledger(
    channel: BlockingChannel, queue: QueueSettings, runs: list[LedgerEntry]
) -> None:
    body = json.dumps({"runs": [run.__dict__ for run in runs]}).encode()
    channel.basic_publish(
        "",
        ledger_name(queue),
        body,
        pika.BasicProperties(delivery_mode=PERSISTENT, content_type="application/json"),
        mandatory=True,
    )


class _ConfirmedPublisher:
    """Publishes items asynchronously, with publisher confirms and mandatory routing.

    Up to `CONFIRM_WINDOW` items are in flight at once, so seeding pays one round
    trip per window, not per item.
    """

    def __init__(
        self,
        settings: SeedSettings,
        items: Sequence[bytes],
        batch: str,
        keepalive: pika.BlockingConnection,
    ):
        self._settings = settings
        self._keepalive = keepalive
        self._keepalive_seconds = min(5.0, settings.broker.heartbeat_seconds / 4)
        self._items = items
        self._batch = batch
        self._next = 0
        self._unconfirmed: set[int] = set()
        self._confirmed = 0
        self._error: str | None = None
        self._channel = None
        self._connection = pika.SelectConnection(
            connection_parameters(settings.broker),
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed,
        )

    def run(self) -> int:
        """Publish every item; returns how many were confirmed. Raises `SeedError`."""
        self._connection.ioloop.start()
        if self._error is not None:
            raise SeedError(self._error)
        return self._confirmed

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        if self._connection.is_open:
            self._connection.close()

    def _on_connection_open(self, connection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)
        connection.ioloop.call_later(self._keepalive_seconds, self._pump_keepalive)

    def _pump_keepalive(self) -> None:
        # The ledger's connection holds the seed lock, and it is idle while this one
        # publishes: without its heartbeats the broker would close it midway.
        if self._connection.is_open and self._keepalive.is_open:
            self._keepalive.process_data_events(time_limit=0)
            self._connection.ioloop.call_later(
                self._keepalive_seconds, self._pump_keepalive
            )

    def _on_connection_error(self, _connection, error) -> None:
        self._error = f"connection failed: {describe(error)}"
        self._connection.ioloop.stop()

    def _on_connection_closed(self, _connection, reason) -> None:
        if self._confirmed < len(self._items):
            self._error = self._error or f"connection closed: {describe(reason)}"
        self._connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(
            self._on_confirm, callback=lambda _frame: self._publish()
        )

    def _on_channel_closed(self, _channel, reason) -> None:
        if self._confirmed < len(self._items):
            self._fail(f"channel closed: {describe(reason)}")

    def _on_return(self, _channel, method, properties, _body) -> None:
        self._fail(
            f"item {properties.message_id} was not routed to queue "
            f"{self._settings.queue.name}: {method.reply_text}"
        )

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail(f"the broker refused item number {method.delivery_tag}")
            return
        if method.multiple:
            done = {tag for tag in self._unconfirmed if tag <= method.delivery_tag}
        else:
            done = {method.delivery_tag} & self._unconfirmed
        self._unconfirmed -= done
        self._confirmed += len(done)
        if self._confirmed == len(self._items):
            self._connection.close()
        else:
            self._publish()

    def _publish(self) -> None:
        if self._error is not None:
            return
        queue_name = self._settings.queue.name
        while self._next < len(self._items) and len(self._unconfirmed) < CONFIRM_WINDOW:
            index = self._next
            self._channel.basic_publish(
                "",
                queue_name,
                self._items[index],
                pika.BasicProperties(
                    delivery_mode=PERSISTENT, message_id=f"{self._batch}:{index}"
                ),
                mandatory=True,
            )
            self._next += 1
            # Delivery tags count publishes on this channel from 1.
            self._unconfirmed.add(self._next)


def seed(settings: SeedSettings, items: Sequence[bytes], batch: str) -> int:
    """Publish `items` to the work queue as batch `batch`, at most once per batch.

    Returns:
        How many items this run published (0 when the batch was already complete).
    Raises:
        SeedError: the broker refused or could not route an item, another seeding
            run of the queue is in progress, or a run of this batch died halfway
            and its partial items cannot be told apart from other items.
        SettingsError: the queue exists with other arguments.
        BrokerUnreachable: the broker could not be reached before the deadline.
    """
    queue = settings.queue
    started = time.monotonic()
    connection = connect(settings.broker)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        _take_lock(channel, queue)
        declared = declare_queues(channel, queue)
        ready, consumers = declared.message_count, declared.consumer_count
        _declare_ledger(channel, queue)
        runs = _read_ledger(channel, queue)
        mine = next((run for run in runs if run.batch == batch), None)

        if mine is not None and mine.state == "complete":
            log.info(
                "event=seed outcome=already-complete queue=%s batch=%s",
                queue.name,
                batch,
            )
            return 0
        if mine is not None:
            ready = _purge_interrupted_run(
                channel, queue, batch, runs, ready, consumers
            )
        elif runs and runs[-1].state == "started":
            log.warning(
                "event=seed outcome=earlier-batch-incomplete queue=%s batch=%s "
                "earlier_batch=%s: its items published so far stay in the queue",
                queue.name,
                batch,
                runs[-1].batch,
            )

        runs = [run for run in runs if run.batch != batch][-(LEDGER_RUNS - 1) :]
        _write_ledger(channel, queue, [*runs, LedgerEntry(batch, "started", ready)])
        published = _ConfirmedPublisher(settings, items, batch, connection).run()
        _write_ledger(channel, queue, [*runs, LedgerEntry(batch, "complete", ready)])
    except (pika.exceptions.AMQPError, pika.exceptions.ChannelError) as error:
        raise SeedError(
            f"broker {settings.broker.address}: {describe(error)}"
        ) from None
    finally:
        if connection.is_open:
            connection.close()

    elapsed = time.monotonic() - started
    log.info(
        "event=seed outcome=complete queue=%s batch=%s items=%d ms=%d per_s=%d",
        queue.name,
        batch,
        published,
        elapsed * 1000,
        published / elapsed if elapsed else 0,
    )
    return published


def _purge_interrupted_run(
    channel: BlockingChannel,
    queue: QueueSettings,
    batch: str,
    runs: list[LedgerEntry],
    ready: int,
    consumers: int,
) -> int:
    """Remove the partial items of this batch's interrupted run; returns items left.

    Only when the queue holds nothing but those items: the run was the latest, the
    queue was empty when it started, and no worker consumes it yet.
    """
    interrupted = runs[-1]
    problem = None
    if interrupted.batch != batch:
        problem = f"batch {interrupted.batch} was seeded after it"
    elif interrupted.ready_before > 0:
        problem = f"the queue already held {interrupted.ready_before} items"
    elif consumers > 0:
        problem = f"{consumers} consumers are taking items from the queue"
    if problem is not None:
        raise SeedError(
            f"a seeding run of this batch died halfway, and {problem}, so its "
            f"partial items in {queue.name} cannot be told apart; drain or purge "
            "the queue, then seed again"
        )
    purged = channel.queue_purge(queue.name).method.message_count
    log.warning(
        "event=seed outcome=resumed queue=%s batch=%s purged_partial_items=%d",
        queue.name,
        interrupted.batch,
        purged,
    )
    return ready - purged
