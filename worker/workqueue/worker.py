"""The `work` command: take items from the queue, process them, acknowledge them.

An item is acknowledged only after its work succeeded. A failed item goes back to
the queue for another attempt; on its last allowed attempt, or when it can never
succeed, the worker moves it to the dead-letter queue with the reason in its headers.
The work runs on its own thread while the main thread keeps the connection's
heartbeats flowing, so a long item is not redelivered behind its back. Each item is
handed to that thread as soon as it is delivered, so that short items run back to
back while the main thread settles the ones before them. A fine-mode worker that
finds the queue empty stays while other workers still hold items, since a failed or
killed one returns its items to the queue.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from workqueue import exitcodes
from workqueue.broker import connect, describe
from workqueue.handler_thread import (
    Attempt,
    Delivery,
    HandlerThread,
    ItemTimedOut,
    Outcomes,
)
from workqueue.handlers import Handler, PoisonItem
from workqueue.queues import declare_queues
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


class Stopped(Exception):
    """The worker stopped before the item's work ended: SIGTERM arrived, or the
    handler is stuck on an earlier item. The item goes back to the queue."""


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


class Worker:
    """One worker process: connects, takes items in its mode, and reports."""

    def __init__(self, settings: WorkSettings, handler: Handler):
        self._settings = settings
        self._runner = HandlerThread(handler)
        self._deliveries: deque[Delivery] = deque()
        self._poll_seconds = min(0.5, settings.broker.heartbeat_seconds / 4)
        self._stop_requested = False
        self._handler_stuck = False
        self._consumer_tag: str | None = None
        self.tally = Tally()

    def request_stop(self, *_signal_args: object) -> None:
        """Ask the worker to return the items it holds and exit; signal-handler safe."""
        self._stop_requested = True

    def run(self) -> int:
        """Work until done; returns the process exit code (see `exitcodes`).

        Raises:
            BrokerUnreachable: no connection before the connect deadline.
            BrokerRefused: the broker refused the credentials, vhost or TLS.
            ConnectStopped: SIGTERM arrived while the broker was waited for.
            SettingsError: pika cannot use the broker URL's options, or the queue
                exists with other arguments.
        """
        connection = connect(self._settings.broker, lambda: self._stop_requested)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            ready = declare_queues(channel, self._settings.queue).message_count
            if self._settings.mode == "coarse":
                code = self._run_coarse(connection, channel)
            else:
                code = self._run_fine(connection, channel, ready)
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

    @property
    def _holds_items(self) -> bool:
        """Whether any item delivered to this worker is not settled yet."""
        return bool(self._deliveries) or self._runner.holds_items

    @property
    def _stopping(self) -> bool:
        """Whether this process takes no more items: SIGTERM, or a stuck handler."""
        return self._stop_requested or self._handler_stuck

    def _run_coarse(
        self, connection: pika.BlockingConnection, channel: BlockingChannel
    ) -> int:
        method, properties, body = channel.basic_get(self._settings.queue.name)
        if method is None:
            return self._queue_done(channel)
        self._deliveries.append(Delivery(method, properties, body))
        while self._holds_items and not self._stopping:
            self._work_a_while(connection, channel)
        if self._stopping and self._holds_items:
            self._give_back(channel)
        if self.tally.acked:
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
        empty_code = exitcodes.OK
        while not self._stopping:
            if self._holds_items:
                self._work_a_while(connection, channel)
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
                empty_code = self._queue_done(channel)
                break
            # Else other workers hold items that may come back (a failed attempt, a
            # killed pod); exiting now could end the Job without them, since the Job
            # controller starts no pod once one has succeeded.

        if self._stopping and self._holds_items:
            self._give_back(channel)
        if self._stop_requested:
            return exitcodes.TERMINATED
        if self._handler_stuck or self.tally.dead_lettered:
            return exitcodes.ITEM_FAILED
        return empty_code

    def _queue_done(self, channel: BlockingChannel) -> int:
        """The exit code once the queue is empty: a failure while dead letters wait.

        A Job whose items were dead-lettered must not look complete: every worker
        that finds the queue empty fails until someone has dealt with the
        dead-letter queue, so the Job fails once its back-off limit is reached.
        """
        dead_letter_name = self._settings.queue.dead_letter_name
        dead = channel.queue_declare(dead_letter_name, passive=True).method
        if dead.message_count:
            log.warning(
                "event=queue-empty queue=%s outcome=failed dead_letters=%d: "
                "items wait in %s",
                self._settings.queue.name,
                dead.message_count,
                dead_letter_name,
            )
            return exitcodes.ITEM_FAILED
        log.info("event=queue-empty queue=%s", self._settings.queue.name)
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

    def _work_a_while(
        self, connection: pika.BlockingConnection, channel: BlockingChannel
    ) -> None:
        """Hand every delivered item to the handler thread, settle each one it
        finished, pump the connection once and watch the running item's time.

        Waits at most `_poll_seconds` for an item to finish, so that heartbeats keep
        flowing and SIGTERM is noticed during a long item.

        Raises:
            ItemTakenBack: the broker took the items back (see `_pump`).
            pika.exceptions.AMQPError: an item could not be settled.
        """
        while self._deliveries:
            self._runner.submit(self._attempt(self._deliveries.popleft()))
        finished = self._runner.finished(self._poll_seconds)
        self._settle_all(channel, [(attempt, attempt.result) for attempt in finished])
        self._pump(connection, channel)
        self._watch_running_item()

    def _attempt(self, delivery: Delivery) -> Attempt:
        """A delivery taken on by this worker, counted if it is a redelivery."""
        if delivery.method.redelivered:
            self.tally.redelivered += 1
        return Attempt(delivery)

    def _pump(
        self, connection: pika.BlockingConnection, channel: BlockingChannel
    ) -> None:
        """Send and receive what is due: heartbeats, acknowledgements, deliveries.

        Raises:
            ItemTakenBack: the connection or the channel closed, so the broker has
                taken back every item this worker held; their work is abandoned.
        """
        try:
            connection.process_data_events(time_limit=0)
        except pika.exceptions.AMQPConnectionError as error:
            lost = ItemTakenBack(f"connection lost: {describe(error)}")
        else:
            if not channel.is_closed:
                return
            lost = ItemTakenBack(
                "the broker closed the channel (a consumer_timeout shorter than the "
                "item?)"
            )
        self._abandon(lost)
        raise lost

    def _watch_running_item(self) -> None:
        """Time the running item out `ITEM_TIMEOUT_SECONDS` after its work started.

        A command is killed at once. A Python handler cannot be interrupted: if it
        has not returned `CANCEL_GRACE_SECONDS` later, it is stuck, and this process
        stops taking items.
        """
        attempt = self._runner.running
        if attempt is None:
            return
        now = time.monotonic()
        if attempt.timed_out is None:
            if now - attempt.started > self._settings.item_timeout_seconds:
                attempt.timed_out = ItemTimedOut(
                    "ran past ITEM_TIMEOUT_SECONDS="
                    f"{self._settings.item_timeout_seconds:g}"
                )
                attempt.grace_ends = now + CANCEL_GRACE_SECONDS
                self._runner.cancel(attempt)
        elif now > attempt.grace_ends and self._runner.close_if_running(attempt):
            self._handler_stuck = True

    def _give_back(self, channel: BlockingChannel) -> None:
        """On SIGTERM, or once the handler is stuck: settle the items that finished
        as usual, and return every other item this worker holds to the queue.

        Raises:
            pika.exceptions.AMQPError: an item could not be settled.
        """
        # This process takes no more items: were it still consuming, the broker
        # could hand the requeued items straight back to it.
        self._stop_consuming(channel)
        self._runner.close()
        outcomes = [(done, done.result) for done in self._runner.finished(0)]
        for attempt in self._runner.unfinished():
            if attempt.started is not None:
                # No grace period: the process exits next, and the item goes back.
                self._runner.cancel(attempt)
            outcomes.append((attempt, self._unfinished_error(attempt)))
        while self._deliveries:
            attempt = self._attempt(self._deliveries.popleft())
            outcomes.append((attempt, self._unfinished_error(attempt)))
        self._settle_all(channel, outcomes)

    def _unfinished_error(self, attempt: Attempt) -> BaseException:
        """Why an item given back did not finish, which decides how it is settled."""
        if attempt.timed_out is not None:
            return attempt.timed_out
        if attempt.started is not None:
            return Stopped("SIGTERM during the item")
        cause = "SIGTERM" if self._stop_requested else "the handler is stuck"
        return Stopped(f"{cause} before the item started")

    def _abandon(self, error: BaseException, unsettled: Outcomes = ()) -> None:
        """Give up every item this worker holds, since the broker can no longer be
        told about them, and log what became of each.

        The work running is stopped (a command is killed). Finished items in
        `unsettled` or in the outbox are logged as not settled. Items that never
        started are not logged: the broker returns them, as it does prefetched ones.
        """
        self._runner.close()
        finished = [(done, done.result) for done in self._runner.finished(0)]
        for attempt, result in [*unsettled, *finished]:
            if attempt.started is not None:
                self._log_item(attempt, _unsettled_outcome(result), result or error)
        for attempt in self._runner.unfinished():
            if attempt.started is not None:
                self._runner.cancel(attempt)
                self._log_item(attempt, "abandoned", error)

    def _settle_all(self, channel: BlockingChannel, outcomes: Outcomes) -> None:
        """Settle each item with the broker after its work, in order, and log it.

        Raises:
            pika.exceptions.AMQPError: an item could not be settled; the broker will
                deliver it again, so work that succeeded will run twice (logged as
                `outcome=done-not-acked`). The items after it are abandoned.
        """
        for index, (attempt, error) in enumerate(outcomes):
            try:
                outcome = self._settle(channel, attempt, error)
            except (
                pika.exceptions.AMQPConnectionError,
                pika.exceptions.AMQPChannelError,
            ) as settle_error:
                self._log_item(
                    attempt, _unsettled_outcome(error), error or settle_error
                )
                self._abandon(settle_error, outcomes[index + 1 :])
                raise
            self._log_item(attempt, outcome, error)

    def _settle(
        self,
        channel: BlockingChannel,
        attempt: Attempt,
        error: BaseException | None,
    ) -> str:
        """Ack, requeue or dead-letter the item after its work; returns the outcome."""
        tag = attempt.tag
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
            or attempt.number >= self._settings.queue.delivery_limit
        ):
            self._dead_letter(
                channel, attempt.delivery, describe(error), attempt.number
            )
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
        self, attempt: Attempt, outcome: str, error: BaseException | None
    ) -> None:
        delivery = attempt.delivery
        started = attempt.started
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "event=item item=%s body=%r outcome=%s attempt=%d ms=%d redelivered=%s%s",
            delivery.properties.message_id or f"tag-{attempt.tag}",
            delivery.body[:LOGGED_BODY_BYTES],
            outcome,
            attempt.number,
            0 if started is None else (time.monotonic() - started) * 1000,
            str(delivery.method.redelivered).lower(),
            "" if error is None else f" error={describe(error)!r}",
        )

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


def _unsettled_outcome(error: BaseException | None) -> str:
    """The outcome of an item whose work ended but the broker could not be told."""
    return "done-not-acked" if error is None else "unsettled"


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
