"""Fixtures shared by the tests: the local broker, a queue of each test's own, and
helpers that run the real `seed` and `work` commands as separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The shared broker every session and CI run starts on loopback.
BROKER_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@dataclass
class QueueUnderTest:
    """A queue that belongs to one test, and how to run the image's commands on it."""

    name: str
    url: str
    workdir: Path

    @property
    def record_file(self) -> Path:
        return self.workdir / "processed.txt"

    def environment(self, **overrides: object) -> dict[str, str]:
        """The environment of a seed or work container for this queue."""
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "worker"), str(ROOT / "tests")]),
            "AMQP_URL": self.url,
            "QUEUE_NAME": self.name,
            "RECORD_FILE": str(self.record_file),
            "WORK_HANDLER": "work_handlers:record",
            "WORK_SECONDS": "0",
            "CONNECT_DEADLINE_SECONDS": "5",
        }
        environment.update({key: str(value) for key, value in overrides.items()})
        return environment

    def seed(self, items: list[bytes], *args: str, **overrides: object):
        """Run `python -m workqueue seed` with the items on stdin; return the result."""
        return subprocess.run(
            [sys.executable, "-m", "workqueue", "seed", *args],
            input=b"".join(item + b"\n" for item in items),
            env=self.environment(**overrides),
            capture_output=True,
            timeout=120,
            check=False,
        )

    def start_worker(self, **overrides: object) -> subprocess.Popen:
        """Start `python -m workqueue work` in the background, output captured."""
        return subprocess.Popen(
            [sys.executable, "-m", "workqueue", "work"],
            env=self.environment(**overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def work(self, **overrides: object) -> subprocess.CompletedProcess:
        """Run one worker to its end; returns the result."""
        return subprocess.run(
            [sys.executable, "-m", "workqueue", "work"],
            env=self.environment(**overrides),
            capture_output=True,
            timeout=300,
            check=False,
        )

    def depths(self) -> tuple[int, int]:
        """Items ready in the work queue and in its dead-letter queue."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            return tuple(
                channel.queue_declare(name, passive=True).method.message_count
                for name in (self.name, f"{self.name}.dead")
            )
        finally:
            connection.close()

    def dead_letters(self) -> list[tuple[pika.BasicProperties, bytes]]:
        """Take every item out of the dead-letter queue."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        taken = []
        try:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(
                    f"{self.name}.dead", auto_ack=True
                )
                if method is None:
                    return taken
                taken.append((properties, body))
        finally:
            connection.close()


def delete_queues(url: str, name: str) -> None:
    """Remove a test's queue, its dead-letter queue and its seed ledger."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in (name, f"{name}.dead", f"{name}.seed-ledger"):
            channel.queue_delete(queue)
    finally:
        connection.close()


@pytest.fixture
def work_queue(request, tmp_path) -> Iterator[QueueUnderTest]:
    """A queue on the shared broker that only this test uses, deleted afterwards."""
    name = f"test.{request.node.name[:60]}.{uuid.uuid4().hex[:8]}"
    queue = QueueUnderTest(name=name, url=BROKER_URL, workdir=tmp_path)
    yield queue
    delete_queues(BROKER_URL, name)
