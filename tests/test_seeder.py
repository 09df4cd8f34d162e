"""The `seed` command: items reach the queue exactly once, and bad input publishes
nothing."""

import json
import signal
import subprocess
import sys
import time

import pika

from workqueue import exitcodes
from workqueue.queues import declare_queues
from workqueue.settings import QueueSettings


def _take_all(work_queue) -> list[bytes]:
    """Every item in the test's queue, taken and acknowledged, in queue order."""
    connection = pika.BlockingConnection(pika.URLParameters(work_queue.url))
    bodies = []
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        for method, _properties, body in channel.consume(
            work_queue.name, inactivity_timeout=1
        ):
            if method is None:
                break
            bodies.append(body)
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
    finally:
        connection.close()
    return bodies


def test_each_line_becomes_one_persistent_item(work_queue):
    items = [b"apple", b"banana split", b"\xffraw bytes"]

    result = work_queue.seed([items[0], b"", b"   ", items[1], items[2]])

    assert result.returncode == exitcodes.OK, result.stderr.decode()
    assert _take_all(work_queue) == items, "blank lines are not items; others are kept"


def test_seeding_the_same_batch_again_publishes_nothing(work_queue):
    items = [b"one", b"two", b"three"]

    first = work_queue.seed(items)
    second = work_queue.seed(items)

    assert first.returncode == second.returncode == exitcodes.OK
    assert b"already-complete" in second.stderr
    assert work_queue.depths() == (3, 0), "a completed batch must not be seeded twice"


def test_a_file_that_is_missing_is_refused_before_publishing(work_queue, tmp_path):
    missing = tmp_path / "nowhere.txt"

    result = work_queue.seed([b"ignored"], "--file", str(missing))

    assert result.returncode == exitcodes.BAD_CONFIG
    assert f"cannot read item file {missing}" in result.stderr.decode()
    _assert_nothing_published(work_queue)


def test_input_without_items_is_refused(work_queue):
    result = work_queue.seed([b"", b"  "])

    assert result.returncode == exitcodes.BAD_CONFIG
    assert "stdin holds no items" in result.stderr.decode()
    _assert_nothing_published(work_queue)


def test_an_item_over_the_limit_is_refused_with_its_line(work_queue):
    items = [b"fine", b"x" * 11, b"also fine"]

    result = work_queue.seed(items, MAX_ITEM_BYTES=10)

    assert result.returncode == exitcodes.BAD_CONFIG
    assert "stdin line 2: item of 11 bytes is over the limit of 10 bytes" in (
        result.stderr.decode()
    )
    _assert_nothing_published(work_queue)


def test_seeding_killed_halfway_and_run_again_holds_each_item_once(work_queue):
    items = [f"item-{number}".encode() for number in range(100_000)]
    items_file = work_queue.workdir / "items.txt"
    items_file.write_bytes(b"\n".join(items))
    command = [sys.executable, "-m", "workqueue", "seed", "--file", str(items_file)]
    seeder = subprocess.Popen(
        command, env=work_queue.environment(), stderr=subprocess.DEVNULL
    )
    for _ in range(1000):
        ready = _ready_or_zero(work_queue)
        if ready > 1000 or seeder.poll() is not None:
            break
        time.sleep(0.005)
    seeder.send_signal(signal.SIGKILL)
    seeder.wait(timeout=10)
    ready_after_kill = _ready_or_zero(work_queue)

    rerun = subprocess.run(command, env=work_queue.environment(), capture_output=True)

    assert 0 < ready_after_kill < len(items), "the kill must land mid-run"
    assert rerun.returncode == exitcodes.OK, rerun.stderr.decode()
    assert b"outcome=resumed" in rerun.stderr, "the rerun must purge the partial run"
    taken = _take_all(work_queue)
    assert len(taken) == len(items), f"{len(taken)} items, expected {len(items)}"
    assert set(taken) == set(items), "every item must be there, each exactly once"


def _ready_or_zero(work_queue) -> int:
    try:
        return work_queue.depths()[0]
    except pika.exceptions.ChannelClosedByBroker:
        return 0


def _assert_nothing_published(work_queue):
    connection = pika.BlockingConnection(pika.URLParameters(work_queue.url))
    try:
        channel = connection.channel()
        channel.queue_declare(work_queue.name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        assert error.reply_code == 404, "the queue should not even exist"
    else:
        raise AssertionError(f"queue {work_queue.name} was declared by bad input")
    finally:
        if connection.is_open:
            connection.close()


def _ledger_says(work_queue, *runs: dict) -> None:
    """Arrange the ledger of earlier seeding runs as a dead seeder would leave it."""
    connection = pika.BlockingConnection(pika.URLParameters(work_queue.url))
    try:
        channel = connection.channel()
        declare_queues(channel, work_queue_settings(work_queue))
        channel.queue_declare(
            f"{work_queue.name}.seed-ledger",
            durable=True,
            arguments={"x-queue-type": "classic", "x-max-length": 1},
        )
        channel.basic_publish(
            "", f"{work_queue.name}.seed-ledger", json.dumps({"runs": list(runs)})
        )
        for number in range(3):
            channel.basic_publish("", work_queue.name, f"partial-{number}".encode())
    finally:
        connection.close()


def work_queue_settings(work_queue) -> QueueSettings:
    return QueueSettings(name=work_queue.name, delivery_limit=5)


def test_a_second_seeding_run_waits_for_the_first(work_queue):
    holder = pika.BlockingConnection(pika.URLParameters(work_queue.url))
    holder.channel().queue_declare(
        f"{work_queue.name}.seed-lock", exclusive=True, auto_delete=True
    )

    try:
        result = work_queue.seed([b"one", b"two"])
    finally:
        holder.close()

    assert result.returncode == exitcodes.BROKER_FAILED
    assert b"another seeding run of queue" in result.stderr
    _assert_nothing_published(work_queue)


def test_an_interrupted_run_is_not_resumed_while_workers_consume(work_queue):
    _ledger_says(work_queue, {"batch": "b1", "state": "started", "ready_before": 0})
    watcher = pika.BlockingConnection(pika.URLParameters(work_queue.url))
    channel = watcher.channel()
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(work_queue.name, lambda *_delivery: None)

    try:
        result = work_queue.seed([b"a", b"b", b"c"], "--batch", "b1")
    finally:
        watcher.close()

    assert result.returncode == exitcodes.BROKER_FAILED
    assert b"1 consumers are taking items from the queue" in result.stderr
    assert work_queue.depths() == (3, 0), "the partial items must stay untouched"


def test_an_interrupted_run_is_not_resumed_after_another_batch(work_queue):
    _ledger_says(
        work_queue,
        {"batch": "b1", "state": "started", "ready_before": 0},
        {"batch": "b2", "state": "complete", "ready_before": 2},
    )

    result = work_queue.seed([b"a", b"b", b"c"], "--batch", "b1")

    assert result.returncode == exitcodes.BROKER_FAILED
    assert b"batch b2 was seeded after it" in result.stderr
    assert work_queue.depths() == (3, 0)


def test_a_long_seeding_run_keeps_its_lock_connection_alive(work_queue):
    items = [f"long-{number}".encode() for number in range(150_000)]

    result = work_queue.seed(items, HEARTBEAT_SECONDS=1)

    assert result.returncode == exitcodes.OK, result.stderr.decode()
    assert work_queue.depths() == (len(items), 0)


def test_a_queue_declared_with_other_arguments_is_a_config_error(work_queue):
    work_queue.seed([b"first"], DELIVERY_LIMIT=5)

    result = work_queue.seed([b"second"], DELIVERY_LIMIT=9)

    assert result.returncode == exitcodes.BAD_CONFIG
    assert b"exists with other arguments" in result.stderr


def test_only_the_line_ending_is_taken_off_an_item(work_queue):
    result = work_queue.seed([b"carriage\r\r", b"  padded  "])

    assert result.returncode == exitcodes.OK, result.stderr.decode()
    assert _take_all(work_queue) == [b"carriage\r", b"  padded  "]
