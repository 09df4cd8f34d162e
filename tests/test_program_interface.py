"""The program and the image agree on their interface: the seed and work
containers' command, arguments and environment, exactly as rendered, run as local
processes against the local broker and process every item.

What a cluster would supply is translated as tests/rendered_pods.py says: the
image's `python` is this interpreter, a ConfigMap volume a directory, and the Secret
reference for AMQP_URL resolves to the local broker's URL.
"""

from __future__ import annotations

import uuid

import pika
import pytest

from tests.conftest import BROKER_URL, delete_queues
from tests.pulumi_harness import ROOT, run_program
from tests.rendered_pods import RenderedPod, run_job


def _broker_is_up() -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(BROKER_URL)).close()
    except pika.exceptions.AMQPConnectionError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not (ROOT / "worker/workqueue/__main__.py").exists(),
    reason="the worker package is not there yet",
)


@pytest.fixture
def queue_name():
    name = f"test.program-interface.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(BROKER_URL, name)


@pytest.mark.skipif(not _broker_is_up(), reason="needs the local RabbitMQ")
@pytest.mark.parametrize("mode", ["coarse", "fine"])
def test_rendered_seed_and_work_pods_process_every_item(tmp_path, queue_name, mode):
    run = run_program("dev", {"queue": queue_name, "workSeconds": "0", "mode": mode})
    seed = RenderedPod(run, "SeedJob", tmp_path / "seed")
    work = RenderedPod(run, "WorkJob", tmp_path / "work")
    items = run.config["items"]

    seeded = run_job(seed, BROKER_URL)
    worked = run_job(work, BROKER_URL)

    assert [code for code, _, _ in seeded] == [0], f"seed failed: {seeded}"
    assert all(code == 0 for code, _, _ in worked), f"a work pod failed: {worked}"
    printed = [line for _, stdout, _ in worked for line in stdout.splitlines()]
    assert sorted(printed) == sorted(items), f"processed {printed}, seeded {items}"
    if mode == "coarse":
        assert len(worked) == len(items), "coarse mode runs one pod per item"
    depths = _depths(queue_name)
    assert depths == (0, 0), f"left in the queue and its dead-letter queue: {depths}"


def _depths(queue: str) -> tuple[int, int]:
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        return tuple(
            channel.queue_declare(name, passive=True).method.message_count
            for name in (queue, f"{queue}.dead")
        )
    finally:
        connection.close()
