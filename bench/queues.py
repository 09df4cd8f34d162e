"""The bench's own queues on the local broker: uniquely named, filled, emptied, gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika

from workqueue.queues import declare_queues
from workqueue.settings import QueueSettings

#: The delivery limit of the bench's queues; the seed and work commands' default.
DELIVERY_LIMIT = 5
#: Longest wait for the broker to settle a queue's depth after a timed run, seconds.
SETTLE_TIMEOUT_SECONDS = 120
#: The project's root, and its worker code for the commands' PYTHONPATH.
ROOT = Path(__file__).resolve().parents[1]
WORKER_DIR = ROOT / "worker"


def item_bodies(count: int) -> list[bytes]:
    """`count` short items, as a user's item file would hold them: `item-000042`."""
    return [f"item-{number:06d}".encode() for number in range(count)]


class BenchQueues:
    """Creates work queues named `bench.<kind>.<random>` and deletes every one of them.

    Each queue is declared exactly as the seed and work commands declare theirs (a
    quorum queue with a delivery limit and a dead-letter queue), through
    `workqueue.queues.declare_queues`.
    """

    def __init__(self, url: str):
        self.url = url
        self._names: list[str] = []

    def _connection(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url))

    def new(self, kind: str) -> QueueSettings:
        """Declare a fresh, empty work queue for one timed run and return it."""
        queue = QueueSettings(
            name=f"bench.{kind}.{uuid.uuid4().hex[:8]}", delivery_limit=DELIVERY_LIMIT
        )
        self._names.append(queue.name)
        connection = self._connection()
        try:
            declare_queues(connection.channel(), queue)
        finally:
            connection.close()
        return queue

    def fill(self, queue: QueueSettings, items: list[bytes], log_path: Path) -> None:
        """Put `items` in the queue with the seed command (confirmed, so none is lost
        on the way), then wait until the broker reports all of them ready.

        Raises:
            RuntimeError: the seed command failed; its output is in `log_path`.
        """
        environment = {
            **os.environ,
            "PYTHONPATH": str(WORKER_DIR),
            "AMQP_URL": self.url,
            "QUEUE_NAME": queue.name,
            "DELIVERY_LIMIT": str(queue.delivery_limit),
            "LOG_LEVEL": "WARNING",
        }
        with log_path.open("ab") as log_file:
            done = subprocess.run(
                [sys.executable, "-m", "workqueue", "seed"],
                input=b"".join(item + b"\n" for item in items),
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=SETTLE_TIMEOUT_SECONDS,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"seeding {queue.name} failed; see {log_path}")
        self.wait_depth(queue, len(items))

    def depth(self, queue: QueueSettings) -> int:
        """Items ready in the work queue."""
        connection = self._connection()
        try:
            declared = connection.channel().queue_declare(queue.name, passive=True)
            return declared.method.message_count
        finally:
            connection.close()

    def wait_depth(self, queue: QueueSettings, expected: int) -> None:
        """Wait until the broker reports `expected` ready items, so that the work it
        still does for one run does not slow the next.

        Raises:
            RuntimeError: the depth did not reach `expected` in time.
        """
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while (depth := self.depth(queue)) != expected:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"queue {queue.name} holds {depth} items, expected {expected}"
                )
            time.sleep(0.1)

    def delete(self, queue: QueueSettings) -> None:
        """Delete the work queue, its dead-letter queue and its seed ledger."""
        connection = self._connection()
        try:
            channel = connection.channel()
            for name in (
                queue.name,
                queue.dead_letter_name,
                f"{queue.name}.seed-ledger",
            ):
                channel.queue_delete(name)
        finally:
            connection.close()
        if queue.name in self._names:
            self._names.remove(queue.name)

    def delete_all(self) -> None:
        """Delete every queue this object created and has not deleted yet."""
        for name in list(self._names):
            self.delete(QueueSettings(name=name, delivery_limit=DELIVERY_LIMIT))
