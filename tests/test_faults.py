"""Fault injection on private RabbitMQ nodes: killed workers, a restarted broker,
poison items, an interrupted seeding run, an item that outlasts the consumer timeout.

Each scenario prints one figure line; `make test` lists them at the end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.conftest import QueueUnderTest
from tests.faults_support import (
    BackgroundJob,
    BrokerClient,
    Figures,
    count_figures,
    count_lines,
    report_figures,
    wait_until,
)
from workqueue.localbroker import PrivateNode
from workqueue.settings import QueueSettings
from workqueue.worker import ATTEMPTS_HEADER, FAILED_AT_HEADER, REASON_HEADER

pytestmark = pytest.mark.faults
pytest_plugins = ["tests.faults_support"]

#: Fine-mode workers per Job, as the issue's scenarios run them.
PARALLELISM = 4
#: Unacknowledged items a worker holds: each killed worker may have finished this
#: many without its acknowledgement reaching the broker.
PREFETCH = 4
#: Seconds between two SIGKILLs in the killed-workers scenario.
KILL_INTERVAL_SECONDS = 0.5
#: Kills below which the killed-workers scenario proved too little to count.
MIN_KILLS = 5
#: Items large enough that the seeder is still publishing when the test kills it.
SEED_ITEMS = 40_000
#: The short consumer timeout of the node in the consumer-timeout scenario.
CONSUMER_TIMEOUT_MS = 5000
#: That node's advanced.config: it checks consumer timeouts every half second, where
#: RabbitMQ's default channel tick would check them once a minute.
FAST_TICK_CONFIG = "[{rabbit, [{channel_tick_interval, 500}]}]."
#: How long the slow item takes: well past the consumer timeout.
SLOW_SECONDS = 12

#: Back-off limit of the Jobs that end with dead letters: they fail once it is
#: reached, since every pod that finds the queue empty exits 1 while dead letters
#: wait.
DEAD_LETTER_BACKOFF = 6


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateNode]:
    """One private node for the module's scenarios, stopped and removed at the end."""
    broker = PrivateNode()
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def short_timeout_node() -> Iterator[PrivateNode]:
    """A private node whose consumer timeout is a few seconds."""
    broker = PrivateNode(
        config=f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
        advanced_config=FAST_TICK_CONFIG,
    )
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def queue(node, request, tmp_path) -> QueueUnderTest:
    """A queue of this test's own on the module's private node."""
    return QueueUnderTest(
        name=f"faults.{request.node.name}", url=node.url, workdir=tmp_path
    )


def numbered_items(count: int, prefix: str = "item") -> list[bytes]:
    """`count` distinct items: `item-00000`, `item-00001`, ..."""
    return [f"{prefix}-{number:05d}".encode() for number in range(count)]


def seed_ok(queue: QueueUnderTest, items: list[bytes], **overrides: object) -> None:
    """Run the seed command on the items; fail the test if it fails."""
    seeded = queue.seed(items, **overrides)
    assert seeded.returncode == 0, f"seeding failed: {seeded.stderr.decode()[-2000:]}"


def test_killed_workers_lose_no_item(queue, chooser, record_property):
    items = numbered_items(2000)
    seed_ok(queue, items)
    environment = queue.environment(
        WORK_MODE="fine", PREFETCH=PREFETCH, WORK_SECONDS=0.01
    )

    with BackgroundJob(environment, queue.workdir / "pods", PARALLELISM) as job:
        kills = job.inject_until_done(
            lambda: job.kill_random_pod(chooser) is not None, KILL_INTERVAL_SECONDS
        )
        result = job.finish()
    ready, _dead = queue.depths()
    dead_lettered = [body for _properties, body in queue.dead_letters()]
    figures, _completions = count_figures(
        items, queue.record_file, dead_lettered, kills
    )
    report_figures(record_property, figures)

    assert kills >= MIN_KILLS, f"only {kills} kills landed; the run was too short"
    assert figures.lost == 0, f"{figures.lost} items were never processed"
    assert figures.dead_lettered == 0, "kills alone dead-lettered an item"
    assert figures.duplicates <= kills * PREFETCH, (
        f"{figures.duplicates} duplicates, more than {kills} kills x {PREFETCH}"
    )
    assert ready == 0, f"{ready} items were left in the work queue"
    assert result.complete, f"the Job failed: {result.reason}"


def test_restarted_broker_loses_no_item(node, queue, record_property):
    items = numbered_items(2000)
    seed_ok(queue, items)
    environment = queue.environment(
        WORK_MODE="fine",
        PREFETCH=PREFETCH,
        WORK_SECONDS=0.02,
        CONNECT_DEADLINE_SECONDS=120,
    )

    with BackgroundJob(environment, queue.workdir / "pods", PARALLELISM) as job:
        wait_until(
            lambda: count_lines(queue.record_file) >= len(items) // 5,
            timeout=60,
            what="a fifth of the items to complete",
        )
        node.stop(remove=False)
        completed_before_restart = count_lines(queue.record_file)
        node.start()
        result = job.finish()
    ready, _dead = queue.depths()
    dead_lettered = [body for _properties, body in queue.dead_letters()]
    figures, _completions = count_figures(items, queue.record_file, dead_lettered, 1)
    report_figures(record_property, figures)

    assert completed_before_restart < len(items), "the run ended before the stop"
    assert any(pod.exit_code != 0 for pod in result.pods), (
        "no worker noticed that the broker went away"
    )
    assert figures.lost == 0, f"{figures.lost} items were never processed"
    assert figures.dead_lettered == 0, "the restart dead-lettered an item"
    assert figures.duplicates <= PARALLELISM * PREFETCH, (
        f"{figures.duplicates} duplicates from one restart, more than "
        f"{PARALLELISM} workers x {PREFETCH} unacknowledged items"
    )
    assert ready == 0, f"{ready} items were left in the work queue"
    assert result.complete, f"the Job failed: {result.reason}"


#: Poison items by message id, and what their dead-letter headers must say:
#: a text the reason contains, and the attempt on which the item was given up.
POISON_ITEMS = {
    "poison:crash": b"crash: the handler raises on every attempt",
    "poison:hang": b"hang: the handler never returns",
    "poison:empty": b"",
    "poison:not-utf-8": b"\xff\xfe\xfa is not UTF-8",
}
POISON_OUTCOMES = {
    "poison:crash": ("RuntimeError", 2),
    "poison:hang": ("ItemTimedOut", 2),
    "poison:empty": ("empty item", 1),
    "poison:not-utf-8": ("not UTF-8", 1),
}


def test_poison_items_are_dead_lettered_with_their_reason(node, queue, record_property):
    delivery_limit = 2
    normal_items = numbered_items(200)
    seed_ok(queue, normal_items[:100], DELIVERY_LIMIT=delivery_limit)
    with BrokerClient(node.url) as client:
        client.publish(QueueSettings(queue.name, delivery_limit), POISON_ITEMS)
    seed_ok(queue, normal_items[100:], DELIVERY_LIMIT=delivery_limit)
    environment = queue.environment(
        WORK_MODE="fine",
        WORK_HANDLER="fault_handlers:misbehave",
        DELIVERY_LIMIT=delivery_limit,
        ITEM_TIMEOUT_SECONDS=1,
    )

    with BackgroundJob(
        environment,
        queue.workdir / "pods",
        PARALLELISM,
        backoff_limit=DEAD_LETTER_BACKOFF,
    ) as job:
        result = job.finish()
    ready, _dead = queue.depths()
    dead_letters = {
        properties.message_id: properties.headers or {}
        for properties, _body in queue.dead_letters()
    }
    figures, completions = count_figures(
        [*normal_items, *POISON_ITEMS.values()],
        queue.record_file,
        [POISON_ITEMS[message_id] for message_id in dead_letters],
        len(POISON_ITEMS),
    )
    report_figures(record_property, figures)

    assert sorted(dead_letters) == sorted(POISON_ITEMS), (
        f"dead-lettered {sorted(dead_letters)}, expected {sorted(POISON_ITEMS)}"
    )
    for message_id, (reason, attempts) in POISON_OUTCOMES.items():
        headers = dead_letters[message_id]
        assert reason in str(headers.get(REASON_HEADER)), (
            f"{message_id}: reason {headers.get(REASON_HEADER)!r} lacks {reason!r}"
        )
        assert headers.get(ATTEMPTS_HEADER) == attempts, (
            f"{message_id}: given up on attempt {headers.get(ATTEMPTS_HEADER)}, "
            f"expected {attempts}"
        )
        assert headers.get(FAILED_AT_HEADER), f"{message_id}: no {FAILED_AT_HEADER}"
    assert figures.lost == 0, f"{figures.lost} items were never processed"
    assert all(completions.get(item) == 1 for item in normal_items), (
        "a normal item did not complete exactly once"
    )
    assert not any(item in completions for item in POISON_ITEMS.values()), (
        "a poison item was recorded as done"
    )
    assert ready == 0, f"{ready} items were left in the work queue"
    _assert_failed_for_dead_letters(result, job)


def test_seeding_killed_halfway_then_run_again_seeds_each_item_once(
    node, queue, record_property
):
    items = numbered_items(SEED_ITEMS)
    item_file = queue.workdir / "items.txt"
    item_file.write_bytes(b"".join(item + b"\n" for item in items))

    with BrokerClient(node.url) as client:
        client.declare(QueueSettings(queue.name, delivery_limit=5))
        seeder = subprocess.Popen(
            [sys.executable, "-m", "workqueue", "seed", "--file", str(item_file)],
            env=queue.environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: (
                    seeder.poll() is not None
                    or client.ready(queue.name) >= len(items) // 2
                ),
                timeout=60,
                what="the seeder to publish half the items",
                poll=0.002,
            )
            seeder.send_signal(signal.SIGKILL)
        finally:
            seeder.kill()
            seeder.wait()
        published_before_kill = client.ready(queue.name)
        rerun = queue.seed(items)
        seeded = client.drain(queue.name)
    counts = Counter(body for _properties, body in seeded)
    message_ids = Counter(properties.message_id for properties, _body in seeded)
    figures = Figures(
        items=len(items),
        faults=1,
        lost=sum(1 for item in items if item not in counts),
        duplicates=sum(count - 1 for count in counts.values()),
        dead_lettered=0,
    )
    report_figures(record_property, figures)

    assert seeder.returncode == -signal.SIGKILL, "the seeder ended before the kill"
    assert 0 < published_before_kill < len(items), (
        f"{published_before_kill} of {len(items)} published at the kill: not halfway"
    )
    assert rerun.returncode == 0, f"the second run failed: {rerun.stderr.decode()}"
    assert b"outcome=resumed" in rerun.stderr, "the second run did not resume"
    assert figures.lost == 0, f"{figures.lost} items are missing from the queue"
    assert figures.duplicates == 0, f"{figures.duplicates} items are in it twice"
    assert all(count == 1 for count in message_ids.values()), "a message id repeats"


def test_item_outlasting_consumer_timeout_is_abandoned_then_dead_lettered(
    short_timeout_node, tmp_path, record_property
):
    queue = QueueUnderTest(
        name="faults.consumer-timeout", url=short_timeout_node.url, workdir=tmp_path
    )
    delivery_limit = 2
    slow_item = b"slow: outlasts the consumer timeout"
    normal_items = numbered_items(20)
    seed_ok(
        queue,
        [*normal_items[:10], slow_item, *normal_items[10:]],
        DELIVERY_LIMIT=delivery_limit,
    )
    environment = queue.environment(
        WORK_MODE="fine",
        WORK_HANDLER="fault_handlers:misbehave",
        DELIVERY_LIMIT=delivery_limit,
        SLOW_SECONDS=SLOW_SECONDS,
    )

    with BackgroundJob(
        environment, queue.workdir / "pods", 2, backoff_limit=DEAD_LETTER_BACKOFF
    ) as job:
        result = job.finish()
    ready, _dead = queue.depths()
    dead_letters = queue.dead_letters()
    abandoned = job.pod_logs().count("outcome=abandoned")
    figures, completions = count_figures(
        [*normal_items, slow_item],
        queue.record_file,
        [body for _properties, body in dead_letters],
        abandoned,
    )
    report_figures(record_property, figures)

    assert [body for _properties, body in dead_letters] == [slow_item], (
        f"dead-lettered {dead_letters}, expected only the slow item"
    )
    deaths = (dead_letters[0][0].headers or {}).get("x-death") or [{}]
    assert deaths[0].get("reason") == "delivery_limit", (
        f"the slow item was dead-lettered for {deaths[0].get('reason')!r}"
    )
    assert slow_item not in completions, "the slow item completed behind the timeout"
    assert abandoned == delivery_limit + 1, (
        f"{abandoned} abandoned attempts logged, expected {delivery_limit + 1}"
    )
    assert figures.lost == 0, f"{figures.lost} items were never processed"
    assert figures.duplicates == 0, f"{figures.duplicates} silent duplicates"
    assert ready == 0, f"{ready} items were left in the work queue"
    _assert_failed_for_dead_letters(result, job)


def _assert_failed_for_dead_letters(result, job) -> None:
    """A Job that dead-lettered items must fail, not complete: its last pods found
    the queue empty but dead letters waiting, and exited 1 until the back-off limit."""
    assert not result.complete, "a Job with dead-lettered items completed"
    assert "over the back-off limit" in result.reason, result.reason
    assert "outcome=failed dead_letters=" in job.pod_logs()
