"""What the fault-injection tests share: a Job run in the background that faults can
be injected into, the figures each scenario reports, and their terminal summary.

Loaded as a pytest plugin by `tests/test_faults.py` (`pytest_plugins`), which imports
it first, too late for assertion rewriting: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from tests.work_handlers import processed_counts
from workqueue.localjob import JobResult, LocalJob
from workqueue.queues import declare_queues
from workqueue.settings import QueueSettings

#: The `record_property` key under which a scenario leaves its figure line.
FIGURES_PROPERTY = "fault_figures"
#: Failed pods a Job may have before it gives up; far above what the faults cause,
#: so that only a real endless failure loop ends a Job early.
BACKOFF_LIMIT = 1000
#: How long one Job may run in a fault test before the test stops it and fails.
JOB_DEADLINE_SECONDS = 180


@dataclass(frozen=True)
class Figures:
    """The outcome of one scenario, counted from what the workers recorded.

    `lost` counts items that neither completed nor reached the dead-letter queue by
    the time the Job ended; `duplicates` counts completions beyond the first.
    """

    items: int
    faults: int
    lost: int
    duplicates: int
    dead_lettered: int

    @property
    def line(self) -> str:
        """The figure line the issue asks for."""
        return (
            f"items={self.items} faults={self.faults} lost={self.lost} "
            f"duplicates={self.duplicates} dead_lettered={self.dead_lettered}"
        )


def count_figures(
    items: Iterable[bytes],
    record_file: Path,
    dead_lettered: Iterable[bytes],
    faults: int,
) -> tuple[Figures, dict[bytes, int]]:
    """The figures of a run, and how often each item completed."""
    items = list(items)
    dead = set(dead_lettered)
    completions = processed_counts(record_file)
    lost = sum(1 for item in items if item not in completions and item not in dead)
    duplicates = sum(count - 1 for count in completions.values())
    figures = Figures(len(items), faults, lost, duplicates, len(dead))
    return figures, completions


def report_figures(record_property, figures: Figures) -> None:
    """Print the figure line and keep it for the terminal summary."""
    print(figures.line)
    record_property(FIGURES_PROPERTY, figures.line)


def pytest_terminal_summary(terminalreporter) -> None:
    """List every scenario's figure line at the end of the run, passed or failed."""
    lines = [
        f"{report.nodeid.rpartition('::')[2]}: {value}"
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in report.user_properties
        if key == FIGURES_PROPERTY
    ]
    if lines:
        terminalreporter.section("fault-injection figures")
        for line in lines:
            terminalreporter.write_line(line)


class JobDeadlineExceeded(AssertionError):
    """The Job did not end within `JOB_DEADLINE_SECONDS`."""


class BackgroundJob:
    """A `LocalJob` of fine-mode workers on its own thread, with faults on demand.

    Use it as a context manager: on the way out, a Job still running is stopped the
    way a deleted Job is, its pods killed and none started again.
    """

    def __init__(
        self,
        environment: Mapping[str, str],
        log_dir: Path,
        parallelism: int,
        backoff_limit: int = BACKOFF_LIMIT,
    ):
        self._stopping = threading.Event()
        self.job = LocalJob(
            environment,
            log_dir,
            parallelism,
            backoff_limit=backoff_limit,
            on_pod_exit=self._on_pod_exit,
        )
        self.log_dir = log_dir
        self.result: JobResult | None = None
        self._thread = threading.Thread(target=self._run, name="job", daemon=True)

    def __enter__(self) -> BackgroundJob:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._thread.is_alive():
            self.stop()

    @property
    def running(self) -> bool:
        """Whether the Job has not ended yet."""
        return self._thread.is_alive()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the Job to end; returns whether it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self, deadline_seconds: float = JOB_DEADLINE_SECONDS) -> JobResult:
        """Wait for the Job to end by itself and return its result.

        Raises:
            JobDeadlineExceeded: it was still running after `deadline_seconds`; it
                has been stopped.
        """
        if not self.wait(deadline_seconds):
            self.stop()
            raise JobDeadlineExceeded(
                f"the Job did not end within {deadline_seconds:g}s; "
                f"pod logs are in {self.log_dir}"
            )
        assert self.result is not None, f"the Job's thread failed; see {self.log_dir}"
        return self.result

    def inject_until_done(
        self,
        fault: Callable[[], bool],
        interval: float,
        deadline_seconds: float = JOB_DEADLINE_SECONDS,
    ) -> int:
        """Call `fault` every `interval` seconds until the Job ends.

        Returns:
            How many calls said that they injected a fault.
        Raises:
            JobDeadlineExceeded: the Job still ran after `deadline_seconds`; it has
                been stopped.
        """
        deadline = time.monotonic() + deadline_seconds
        injected = 0
        while not self.wait(interval):
            if time.monotonic() > deadline:
                self.stop()
                raise JobDeadlineExceeded(
                    f"the Job did not end within {deadline_seconds:g}s under "
                    f"{injected} faults; pod logs are in {self.log_dir}"
                )
            injected += bool(fault())
        return injected

    def kill_random_pod(self, chooser: random.Random) -> int | None:
        """SIGKILL one running pod chosen by `chooser`; returns its number, or None."""
        pods = sorted(self.job.running)
        if not pods:
            return None
        number = chooser.choice(pods)
        try:
            self.job.kill_pod(number, signal.SIGKILL)
        except (KeyError, ProcessLookupError):
            return None  # It ended by itself in the meantime.
        return number

    def stop(self) -> None:
        """End the Job: start no pod again, SIGKILL every running one."""
        self._stopping.set()
        for _attempt in range(100):
            for number in list(self.job.running):
                try:
                    self.job.kill_pod(number, signal.SIGKILL)
                except (KeyError, ProcessLookupError):
                    continue
            if self.wait(0.2):
                return

    def pod_logs(self) -> str:
        """Everything every pod of the Job wrote, pod after pod."""
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.log_dir.glob("pod-*.log"))
        )

    def _run(self) -> None:
        self.result = self.job.run()

    def _on_pod_exit(self, _pod, result: JobResult) -> None:
        # A reason ends the Job, as the controller ends a deleted or failed one.
        if self._stopping.is_set() and not result.reason:
            result.reason = "stopped by the test"


def wait_until(condition, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll `condition` until it is true.

    Raises:
        AssertionError: it was still false after `timeout` seconds; names `what`.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}, in vain")
        time.sleep(poll)


def count_lines(path: Path) -> int:
    """How many lines a file has (0 when it does not exist yet)."""
    try:
        with path.open("rb") as lines:
            return sum(1 for _line in lines)
    except FileNotFoundError:
        return 0


class BrokerClient:
    """A test's own connection to a private node, to look at and fill its queues."""

    def __init__(self, url: str):
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self._connection.channel()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._connection.is_open:
            self._connection.close()

    def ready(self, queue_name: str) -> int:
        """Items ready in a queue (not counting those a consumer holds)."""
        declared = self.channel.queue_declare(queue_name, passive=True)
        return declared.method.message_count

    def declare(self, queue: QueueSettings) -> None:
        """Declare the work queue and its dead-letter queue as the commands do."""
        declare_queues(self.channel, queue)

    def publish(self, queue: QueueSettings, items: Mapping[str, bytes]) -> None:
        """Publish items as persistent messages, `message_id: body`, confirmed."""
        self.declare(queue)
        self.channel.confirm_delivery()
        for message_id, body in items.items():
            self.channel.basic_publish(
                "",
                queue.name,
                body,
                pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent, message_id=message_id
                ),
                mandatory=True,
            )

    def drain(
        self, queue_name: str, idle_seconds: float = 1.0
    ) -> list[tuple[pika.BasicProperties, bytes]]:
        """Take every message out of a queue until none arrives for `idle_seconds`."""
        taken = []
        self.channel.basic_qos(prefetch_count=1000)
        for method, properties, body in self.channel.consume(
            queue_name, auto_ack=True, inactivity_timeout=idle_seconds
        ):
            if method is None:
                break
            taken.append((properties, body))
        self.channel.cancel()
        return taken


@pytest.fixture
def chooser() -> random.Random:
    """A seeded random source, so that a failing run can be replayed."""
    return random.Random(20261204)
