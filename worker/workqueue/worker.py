"""The `work` command: take items from the queue, process them, acknowledge them.

An item is acknowledged only after its work succeeded. A failed item goes back to
the queue for another attempt; on its last allowed attempt, or when it can never
succeed, the worker moves it to the dead-letter queue with the reason in its headers.
The work runs on its own thread while the main thread keeps the connection's
heartbeats flowing, so a long item is not redelivered behind its back. A fine-mode
worker that finds the queue empty stays while other workers still hold items, since
a failed or killed one returns its items to the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from workqueue import exitcodes
from workqueue.broker import connect, describe
from workqueue.handlers import Handler, PoisonItem
from workqueue.queues import DELIVERY_COUNT_HEADER, declare_queues
from workqueue.settings import WorkSettings

log = logging.getLogger(__name__)

#: How long a fine-mode worker waits for a delivery before it asks whether the queue
#: is empty; short, because asking costs one round trip and exiting late costs a pod.
IDLE_CHECK_SECONDS = 0.2
#: The first wait after the worker's last item, in seconds. It grows by half with each
#: check that finds the queue empty, up to `IDLE_CHECK_SECONDS`: the few checks that
#: let the workers leave come quickly, and a long idle wait still asks only that often.
FIRST_IDLE_CHECK_SECONDS = 0.02
#: Checks in a row that find the queue empty before an idle worker stops consuming.
#: An item the broker sends while the consumer is being cancelled goes back to the
#: queue and counts as a delivery, so one check is not enough.
QUIET_CHECKS_BEFORE_IDLE = 2
#: How long a cancelled handler gets to return before the worker gives up on it.
CANCEL_GRACE_SECONDS = 5.0
#: Longest part of the item's body that goes into a log line.
LOGGED_BODY_BYTES = 40
#: Headers a dead-lettered item carries, beside the broker's own `x-death`.
REASON_HEADER = "x-workqueue-reason"
ATTEMPTS_HEADER = "x-workqueue-attempts"
FAILED_AT_HEADER = "x-workqueue-failed-at"


class Delivery(NamedTuple):
    """One item as the broker delivered it."""

    method: pika.spec.Basic.Deliver | pika.spec.Basic.GetOk
    properties: pika.BasicProperties
    body: bytes


class Stopped(Exception):
    """SIGTERM arrived while an item was being processed."""


class ItemTimedOut(Exception):
    """The item ran past `ITEM_TIMEOUT_SECONDS`."""


class ItemTakenBack(Exception):
    """The channel or connection closed while the item ran: the broker requeued it.

    RabbitMQ does so when an item outlasts its `consumer_timeout`, or when it stops.
    The work is abandoned, since finishing it would run the item twice.
    """


@dataclass
class Tally:
    """What one worker did, for the summary line at exit."""

    acked: int = 0
    requeued: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    started: float = field(default_factory=time.monotonic)


class _HandlerThread:
    """Runs the handler on one daemon thread, an item at a time.

    A daemon, so that a handler which hangs past its time-out cannot keep the
    process alive once the worker has given up on it. Items and outcomes travel
    through two `SimpleQueue`s, which hand a short item over in about half the time
    a `Future` with `concurrent.futures.wait` takes.
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._busy = False
        threading.Thread(target=self._loop, name="handler", daemon=True).start()

    def submit(self, body: bytes) -> None:
        """Start the handler on `body`.

        Raises:
            RuntimeError: the previous item's outcome was not collected with `result`,
                so it could be taken for this item's.
        """
        if self._busy:
            raise RuntimeError("the handler thread is still busy with an earlier item")
        self._busy = True
        self._inbox.put(body)

    def result(self, timeout: float) -> tuple[bool, BaseException | None]:
        """Wait up to `timeout` seconds for the item submitted last.

        Returns:
            Whether the handler has finished, and what it raised (None: success).
        """
        try:
            error = self._outbox.get(timeout=timeout)
        except queue.Empty:
            return False, None
        self._busy = False
        return True, error

    def _loop(self) -> None:
        while True:
            body = self._inbox.get()
            try:
                self.handler(body)
            # The handler is the user's code: whatever it raises is that item's failure.
            except Exception as error:  # noqa: BLE001
                self._outbox.put(error)
            else:
                self._outbox.put(None)


class Worker:
    """One worker process: connects, takes items in its mode, and reports."""

    def __init__(self, settings: WorkSettings, handler: Handler):
        self._settings = settings
        self._runner = _HandlerThread(handler)
        self._deliveries: deque[Delivery] = deque()
        self._poll_seconds = min(0.5, settings.broker.heartbeat_seconds / 4)
        self._stop_requested = False
        self._handler_stuck = False
        self._consumer_tag: str | None = None
        self.tally = Tally()

    def request_stop(self, *_signal_args: object) -> None:
        """Ask the worker to return its in-flight item and exit; signal-handler safe."""
        self._stop_requested = True

    def run(self) -> int:
        """Work until done; returns the process exit code (see `exitcodes`).

        Raises:
            BrokerUnreachable: no connection before the connect deadline.
        """
        connection = connect(self._settings.broker)
        ready: int | None = None
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            ready = declare_queues(channel, self._settings.queue)
            if self._settings.mode == "coarse":
                code = self._run_coarse(connection, channel)
            else:
                code = self._run_fine(connection, channel, ready)
        except pika.exceptions.ChannelClosedByBroker as error:
            log.error("event=broker-error error=%r", describe(error))
            # 406 to the declaration: the queue exists with other arguments, which no
            # retry can fix. Later on, 406 is the broker's consumer timeout.
            code = (
                exitcodes.BAD_CONFIG
                if error.reply_code == 406 and ready is None
                else exitcodes.BROKER_FAILED
            )
        except (
            pika.exceptions.AMQPConnectionError,
            pika.exceptions.AMQPChannelError,
            ItemTakenBack,
        ) as error:
            log.error("event=broker-error error=%r", describe(error))
            code = exitcodes.BROKER_FAILED
        finally:
            _close_quietly(connection)
        self._log_summary(code)
        return code

    def _run_coarse(
        self, connection: pika.BlockingConnection, channel: BlockingChannel
    ) -> int:
        method, properties, body = channel.basic_get(self._settings.queue.name)
        if method is None:
            log.info("event=queue-empty queue=%s", self._settings.queue.name)
            return exitcodes.OK
        outcome = self._process(connection, channel, Delivery(method, properties, body))
        if outcome == "acked":
            return exitcodes.OK
        return exitcodes.TERMINATED if self._stop_requested else exitcodes.ITEM_FAILED

    def _run_fine(
        self, connection: pika.BlockingConnection, channel: BlockingChannel, ready: int
    ) -> int:
        queue_name = self._settings.queue.name
        channel.basic_qos(prefetch_count=self._settings.prefetch)
        if ready:
            self._consume(channel)
        quiet_checks = 0
        while not (self._stop_requested or self._handler_stuck):
            if self._deliveries:
                self._process(connection, channel, self._deliveries.popleft())
                quiet_checks = 0
                continue
            connection.process_data_events(time_limit=_idle_wait(quiet_checks))
            if self._deliveries:
                continue
            # Deliveries that crossed the passive declare on the consuming channel are
            # dispatched by the call after it.
            ready, consumers = _queue_counts(channel, queue_name)
            connection.process_data_events(time_limit=0)
            if self._deliveries:
                continue
            quiet_checks = 0 if ready else quiet_checks + 1
            consuming = self._consumer_tag is not None
            if ready and not consuming:
                self._consume(channel)
            elif quiet_checks >= QUIET_CHECKS_BEFORE_IDLE and consuming:
                # Idle workers stop consuming, so that they can tell from the
                # consumer count when no worker holds an item any more.
                self._stop_consuming(channel)
                log.info("event=idle queue=%s consumers=%d", queue_name, consumers - 1)
            elif not ready and consumers == 0:
                log.info("event=queue-empty queue=%s", queue_name)
                break
            # Else other workers hold items that may come back (a failed attempt, a
            # killed pod); exiting now could end the Job without them, since the Job
            # controller starts no pod once one has succeeded.

        if self._stop_requested:
            return exitcodes.TERMINATED
        if self._handler_stuck or self.tally.dead_lettered:
            return exitcodes.ITEM_FAILED
        return exitcodes.OK

    def _consume(self, channel: BlockingChannel) -> None:
        self._consumer_tag = channel.basic_consume(
            self._settings.queue.name,
            lambda _channel, method, properties, body: self._deliveries.append(
                Delivery(method, properties, body)
            ),
        )

    def _stop_consuming(self, channel: BlockingChannel) -> None:
        if self._consumer_tag is not None:
            channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None

    def _process(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        delivery: Delivery,
    ) -> str:
        """Run the work on one item, settle it with the broker, return the outcome.

        Raises:
            ItemTakenBack: the broker took the item back while it ran.
            pika.exceptions.AMQPError: the item could not be settled; the broker will
                deliver it again, so work that succeeded will run twice (logged as
                `outcome=done-not-acked`).
        """
        headers = delivery.properties.headers or {}
        attempt = int(headers.get(DELIVERY_COUNT_HEADER, 0)) + 1
        started = time.monotonic()
        if delivery.method.redelivered:
            self.tally.redelivered += 1

        error = self._run_handler(connection, channel, delivery.body)
        if isinstance(error, ItemTakenBack):
            self._log_item(delivery, "abandoned", attempt, started, error)
            raise error
        if self._stop_requested or self._handler_stuck:
            # This process takes no more items: were it still consuming, the broker
            # could hand the requeued item straight back to it.
            self._stop_consuming(channel)

        try:
            outcome = self._settle(channel, delivery, error, attempt)
        except (
            pika.exceptions.AMQPConnectionError,
            pika.exceptions.AMQPChannelError,
        ) as settle_error:
            outcome = "done-not-acked" if error is None else "unsettled"
            self._log_item(delivery, outcome, attempt, started, error or settle_error)
            raise
        self._log_item(delivery, outcome, attempt, started, error)
        return outcome

    def _settle(
        self,
        channel: BlockingChannel,
        delivery: Delivery,
        error: BaseException | None,
        attempt: int,
    ) -> str:
        """Ack, requeue or dead-letter the item after its work; returns the outcome."""
        tag = delivery.method.delivery_tag
        if error is None:
            channel.basic_ack(tag)
            outcome = "acked"
            self.tally.acked += 1
        elif isinstance(error, Stopped):
            channel.basic_nack(tag, requeue=True)
            outcome = "requeued-on-stop"
            self.tally.requeued += 1
        elif (
            isinstance(error, PoisonItem)
            or attempt >= self._settings.queue.delivery_limit
        ):
            self._dead_letter(channel, delivery, describe(error), attempt)
            channel.basic_ack(tag)
            outcome = "dead-lettered"
            self.tally.dead_lettered += 1
        else:
            # A reject, not a nack: from RabbitMQ 4.3 on, only a reject counts as a
            # failed delivery toward the queue's delivery limit (3.x counts both).
            channel.basic_reject(tag, requeue=True)
            outcome = "requeued"
            self.tally.requeued += 1
        return outcome

    def _log_item(
        self,
        delivery: Delivery,
        outcome: str,
        attempt: int,
        started: float,
        error: BaseException | None,
    ) -> None:
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "event=item item=%s body=%r outcome=%s attempt=%d ms=%d redelivered=%s%s",
            delivery.properties.message_id or f"tag-{delivery.method.delivery_tag}",
            delivery.body[:LOGGED_BODY_BYTES],
            outcome,
            attempt,
            (time.monotonic() - started) * 1000,
            str(delivery.method.redelivered).lower(),
            "" if error is None else f" error={describe(error)!r}",
        )

    def _run_handler(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        body: bytes,
    ) -> BaseException | None:
        """Run the handler on its thread; returns its error, or None on success."""
        if not body:
            return PoisonItem("empty item")
        deadline = time.monotonic() + self._settings.item_timeout_seconds
        self._runner.submit(body)
        while True:
            finished, error = self._runner.result(self._poll_seconds)
            if finished:
                return error
            try:
                connection.process_data_events(time_limit=0)
            except pika.exceptions.AMQPConnectionError as error:
                self._cancel_handler()
                return ItemTakenBack(f"connection lost: {describe(error)}")
            if channel.is_closed:
                self._cancel_handler()
                return ItemTakenBack(
                    "the broker closed the channel (a consumer_timeout shorter "
                    "than the item?)"
                )
            if self._stop_requested:
                # No grace period: the process exits next, and the item goes back.
                self._cancel_handler()
                return Stopped("SIGTERM during the item")
            if time.monotonic() > deadline:
                self._cancel()
                return ItemTimedOut(
                    "ran past ITEM_TIMEOUT_SECONDS="
                    f"{self._settings.item_timeout_seconds:g}"
                )

    def _cancel_handler(self) -> None:
        """Stop a command handler's command; a Python handler cannot be stopped."""
        cancel = getattr(self._runner.handler, "cancel", None)
        if cancel is not None:
            cancel()

    def _cancel(self) -> None:
        self._cancel_handler()
        finished, _error = self._runner.result(CANCEL_GRACE_SECONDS)
        if not finished:
            # A Python handler cannot be interrupted: this process stops taking items.
            self._handler_stuck = True

    def _dead_letter(
        self, channel: BlockingChannel, delivery: Delivery, reason: str, attempt: int
    ) -> None:
        """Publish the item to the dead-letter queue, confirmed, before it is acked."""
        headers = dict(delivery.properties.headers or {})
        headers.update(
            {
                REASON_HEADER: reason,
                ATTEMPTS_HEADER: attempt,
                FAILED_AT_HEADER: datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=delivery.properties.message_id,
            content_type=delivery.properties.content_type,
            headers=headers,
        )
        channel.basic_publish(
            "",
            self._settings.queue.dead_letter_name,
            delivery.body,
            properties,
            mandatory=True,
        )

    def _log_summary(self, code: int) -> None:
        tally = self.tally
        log.info(
            "event=summary mode=%s queue=%s acked=%d requeued=%d dead_lettered=%d "
            "redelivered=%d ms=%d exit=%d",
            self._settings.mode,
            self._settings.queue.name,
            tally.acked,
            tally.requeued,
            tally.dead_lettered,
            tally.redelivered,
            (time.monotonic() - tally.started) * 1000,
            code,
        )


def _idle_wait(quiet_checks: int) -> float:
    """Seconds to wait for a delivery after `quiet_checks` checks found no item."""
    growths = min(quiet_checks, 20)  # a long idle wait must not overflow a float
    return min(IDLE_CHECK_SECONDS, FIRST_IDLE_CHECK_SECONDS * 1.5**growths)


def _queue_counts(channel: BlockingChannel, queue_name: str) -> tuple[int, int]:
    """Items ready in the queue, and consumers on it (each may hold items)."""
    declared = channel.queue_declare(queue_name, passive=True).method
    return declared.message_count, declared.consumer_count


def _close_quietly(connection: pika.BlockingConnection) -> None:
    if connection.is_open:
        try:
            connection.close()
        except pika.exceptions.AMQPError as error:
            log.debug("event=close outcome=failed error=%r", describe(error))
