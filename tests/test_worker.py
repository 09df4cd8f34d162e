"""The `work` command on a real broker: every item processed, failures never hidden."""

import signal
import socket
import subprocess
import time

from tests.work_handlers import processed_counts
from workqueue import exitcodes
from workqueue.localjob import LocalJob
from workqueue.worker import ATTEMPTS_HEADER, REASON_HEADER

TUTORIAL_ITEMS = [
    b"apple", b"banana", b"cherry", b"date", b"fig", b"grape", b"lemon", b"melon"
]  # fmt: skip


def test_eight_items_in_coarse_mode_with_parallelism_two_each_run_once(work_queue):
    work_queue.seed(TUTORIAL_ITEMS)
    job = LocalJob(
        work_queue.environment(WORK_MODE="coarse", WORK_SECONDS="0.2"),
        work_queue.workdir / "pods",
        parallelism=2,
        completions=len(TUTORIAL_ITEMS),
    )

    result = job.run()

    assert result.complete, result.reason
    assert result.succeeded == 8 and result.failed == 0
    assert processed_counts(work_queue.record_file) == dict.fromkeys(TUTORIAL_ITEMS, 1)
    assert work_queue.depths() == (0, 0)


def test_a_thousand_items_across_four_fine_workers_each_run_once(work_queue):
    items = [f"item-{number:04}".encode() for number in range(1000)]
    work_queue.seed(items)

    workers = [work_queue.start_worker(WORK_MODE="fine") for _ in range(4)]
    exit_codes = [worker.wait(timeout=120) for worker in workers]

    assert exit_codes == [exitcodes.OK] * 4
    assert processed_counts(work_queue.record_file) == dict.fromkeys(items, 1)
    assert work_queue.depths() == (0, 0)


def test_an_item_that_always_fails_is_dead_lettered_and_its_pod_fails(work_queue):
    work_queue.seed(TUTORIAL_ITEMS, DELIVERY_LIMIT=3)
    job = LocalJob(
        work_queue.environment(
            WORK_HANDLER="work_handlers:fail_some",
            FAIL_ITEMS="cherry",
            DELIVERY_LIMIT=3,
        ),
        work_queue.workdir / "pods",
        parallelism=2,
        completions=len(TUTORIAL_ITEMS),
    )

    result = job.run()

    failed_codes = [pod.exit_code for pod in result.pods if pod.exit_code != 0]
    assert set(failed_codes) == {exitcodes.ITEM_FAILED}, failed_codes
    assert not result.complete, "a Job with a dead-lettered item must fail"
    assert result.succeeded == 7, "every other item completes"
    others = [item for item in TUTORIAL_ITEMS if item != b"cherry"]
    assert processed_counts(work_queue.record_file) == dict.fromkeys(others, 1)
    [(properties, body)] = work_queue.dead_letters()
    assert body == b"cherry"
    assert properties.headers[ATTEMPTS_HEADER] == 3
    assert "refusing b'cherry'" in properties.headers[REASON_HEADER]
    assert work_queue.depths() == (0, 0)


def test_a_worker_killed_mid_item_loses_nothing(work_queue):
    work_queue.seed([b"precious"])
    doomed = work_queue.start_worker(WORK_SECONDS="30")
    _wait_for_slow_item_to_start(work_queue, doomed)

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    replacement = work_queue.work(WORK_SECONDS="0")

    assert replacement.returncode == exitcodes.OK, replacement.stderr.decode()
    assert processed_counts(work_queue.record_file) == {b"precious": 1}
    assert b"redelivered=true" in replacement.stderr, "the retry must say it is one"


def test_sigterm_during_an_item_puts_it_back_and_exits_promptly(work_queue):
    work_queue.seed([b"interrupted"])
    worker = work_queue.start_worker(WORK_SECONDS="60")
    _wait_for_slow_item_to_start(work_queue, worker)

    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    exit_code = worker.wait(timeout=15)
    stop_seconds = time.monotonic() - stopped_at

    assert exit_code == exitcodes.TERMINATED
    assert stop_seconds < 10, f"took {stop_seconds:.1f}s to stop"
    assert work_queue.depths() == (1, 0), "the item must be back in the queue"
    assert b"outcome=requeued-on-stop" in worker.stderr.read()


def test_an_item_longer_than_several_heartbeats_is_processed_once(work_queue):
    work_queue.seed([b"slow"])

    result = work_queue.work(HEARTBEAT_SECONDS="2", WORK_SECONDS="9")

    assert result.returncode == exitcodes.OK, result.stderr.decode()
    assert processed_counts(work_queue.record_file) == {b"slow": 1}
    assert b"outcome=acked attempt=1" in result.stderr
    assert work_queue.depths() == (0, 0)


def test_an_empty_queue_ends_the_worker_at_once_in_both_modes(work_queue):
    work_queue.seed([b"only"])
    work_queue.work()

    coarse = work_queue.work(WORK_MODE="coarse")
    fine = work_queue.work(WORK_MODE="fine")

    assert (coarse.returncode, fine.returncode) == (exitcodes.OK, exitcodes.OK)
    assert b"event=queue-empty" in coarse.stderr
    assert b"event=queue-empty" in fine.stderr


def test_an_unreachable_broker_fails_after_the_deadline_without_the_password(
    work_queue,
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"amqp://worker:hunter2-secret@127.0.0.1:{closed_port}/%2F"

    result = work_queue.work(AMQP_URL=url, CONNECT_DEADLINE_SECONDS="2")

    output = result.stderr.decode()
    assert result.returncode == exitcodes.BROKER_UNREACHABLE
    assert f"broker 127.0.0.1:{closed_port}/%2F not reachable after" in output
    assert "hunter2-secret" not in output and "worker:" not in output


def test_a_command_gets_the_item_on_stdin(work_queue):
    work_queue.seed([b"via-stdin"])
    copy = work_queue.workdir / "copied.txt"

    result = work_queue.work(WORK_HANDLER="", WORK_COMMAND=f"sh -c 'cat > {copy}'")

    assert result.returncode == exitcodes.OK, result.stderr.decode()
    assert copy.read_bytes() == b"via-stdin"


def test_a_failing_command_is_a_failed_item(work_queue):
    work_queue.seed([b"doomed"])

    result = work_queue.work(WORK_HANDLER="", WORK_COMMAND="sh -c 'exit 3'")

    assert result.returncode == exitcodes.ITEM_FAILED
    assert b"outcome=requeued" in result.stderr
    assert work_queue.depths() == (1, 0)


def test_a_handler_that_cannot_be_imported_fails_fast(work_queue):
    work_queue.seed([b"waiting"])

    result = work_queue.work(WORK_HANDLER="no_such_module:run")

    assert result.returncode == exitcodes.BAD_CONFIG
    assert b"WORK_HANDLER='no_such_module:run': cannot import no_such_module" in (
        result.stderr
    )
    assert work_queue.depths() == (1, 0), "nothing may be taken on bad settings"


def _wait_for_slow_item_to_start(work_queue, worker: subprocess.Popen) -> None:
    """Wait until the worker holds its item: the queue has none ready."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.stderr.read().decode()
        if work_queue.depths()[0] == 0:
            time.sleep(0.3)  # past the hand-over to the handler thread
            return
        time.sleep(0.05)
    raise AssertionError("the worker never took its item")


def test_a_queue_declared_with_another_delivery_limit_is_a_config_error(work_queue):
    work_queue.seed([b"item"], DELIVERY_LIMIT=5)

    result = work_queue.work(DELIVERY_LIMIT=7)

    assert result.returncode == exitcodes.BAD_CONFIG
    assert b"PRECONDITION_FAILED" in result.stderr
    assert work_queue.depths() == (1, 0)


def test_refused_credentials_fail_at_once_without_the_password(work_queue):
    url = "amqp://guest:not-the-password@127.0.0.1:5672/%2F"

    result = work_queue.work(AMQP_URL=url, CONNECT_DEADLINE_SECONDS="60")

    output = result.stderr.decode()
    assert result.returncode == exitcodes.BAD_CONFIG, output
    assert "broker 127.0.0.1:5672/%2F refused the user or virtual host" in output
    assert "not-the-password" not in output
    assert "Traceback" not in output, "one line per event, no pika tracebacks"


def test_a_handler_calling_sys_exit_fails_its_item_at_once(work_queue):
    work_queue.seed([b"careless"])

    result = work_queue.work(
        WORK_HANDLER="work_handlers:exits", ITEM_TIMEOUT_SECONDS=60
    )

    assert result.returncode == exitcodes.ITEM_FAILED
    assert b"outcome=requeued" in result.stderr
    assert b"error='SystemExit: 3'" in result.stderr, "not a time-out after 60 s"


def test_a_timed_out_command_is_killed_with_what_it_started(work_queue):
    work_queue.seed([b"slow"])
    finished = work_queue.workdir / "finished.txt"
    script = work_queue.workdir / "job.sh"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\nsleep 3\necho done >> {finished}\n")
    script.chmod(0o755)

    result = work_queue.work(
        WORK_HANDLER="", WORK_COMMAND=f"sh -c {script}", ITEM_TIMEOUT_SECONDS=1
    )
    time.sleep(3.5)

    assert result.returncode == exitcodes.ITEM_FAILED
    assert b"ItemTimedOut" in result.stderr
    assert not finished.exists(), "the command's own child outlived its time-out"


def test_sigterm_while_waiting_for_the_broker_exits_promptly(work_queue):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    worker = work_queue.start_worker(
        AMQP_URL=f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F",
        CONNECT_DEADLINE_SECONDS=60,
    )
    time.sleep(1.5)

    worker.send_signal(signal.SIGTERM)
    exit_code = worker.wait(timeout=10)

    assert exit_code == exitcodes.TERMINATED


def test_an_empty_queue_with_dead_letters_fails_the_pod(work_queue):
    work_queue.seed([b"doomed"], DELIVERY_LIMIT=1)
    work_queue.work(
        WORK_HANDLER="work_handlers:fail_some", FAIL_ITEMS="doomed", DELIVERY_LIMIT=1
    )

    coarse = work_queue.work(WORK_MODE="coarse", DELIVERY_LIMIT=1)
    fine = work_queue.work(WORK_MODE="fine", DELIVERY_LIMIT=1)

    assert work_queue.depths() == (0, 1)
    assert (coarse.returncode, fine.returncode) == (exitcodes.ITEM_FAILED,) * 2
    assert b"outcome=failed dead_letters=1" in coarse.stderr
