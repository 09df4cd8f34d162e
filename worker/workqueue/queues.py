"""The one place that says how the work queue and its dead-letter queue are declared.

RabbitMQ refuses a declaration whose arguments differ from the queue's, so the
seeder, the worker and the tests all declare through `declare_queues`.
"""

from __future__ import annotations

import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from workqueue.settings import QueueSettings, SettingsError

#: Header RabbitMQ's quorum queues set on a redelivered message: earlier deliveries.
DELIVERY_COUNT_HEADER = "x-delivery-count"
#: RabbitMQ's reply when a queue exists with other arguments.
PRECONDITION_FAILED = 406


def queue_arguments(queue: QueueSettings) -> dict[str, object]:
    """Arguments of the work queue: a quorum queue that dead-letters poison items.

    At-least-once dead-lettering keeps an item in the work queue until the
    dead-letter queue has confirmed it, so an item is never dropped on the way.
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": queue.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue.dead_letter_name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dead_letter_arguments() -> dict[str, object]:
    """Arguments of the dead-letter queue: a quorum queue that keeps what it gets."""
    return {"x-queue-type": "quorum"}


def declare_queues(
    channel: BlockingChannel, queue: QueueSettings
) -> pika.spec.Queue.DeclareOk:
    """Declare the dead-letter queue, then the work queue.

    Returns:
        The work queue's declaration: its ready items and its consumers.
    Raises:
        SettingsError: the queue exists with other arguments (a changed
            `DELIVERY_LIMIT`, say), which no retry can mend.
    """
    try:
        channel.queue_declare(
            queue.dead_letter_name, durable=True, arguments=dead_letter_arguments()
        )
        declared = channel.queue_declare(
            queue.name, durable=True, arguments=queue_arguments(queue)
        )
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != PRECONDITION_FAILED:
            raise
        raise SettingsError(
            f"queue {queue.name} exists with other arguments: {error.reply_text}"
        ) from None
    return declared.method
