"""One timed run of each contestant, on a queue of its own, as separate processes.

Every function returns a rate (items per second) or a duration, measured as the
wall time of the processes a user would run, start-up and connection included.
Filling a queue beforehand and waiting for the broker to settle afterwards are not
timed.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.queues import ROOT, WORKER_DIR, BenchQueues, item_bodies
from workqueue import exitcodes

#: Settings of the seed and work commands that the bench sets itself; any value
#: of these in the caller's environment is dropped so that a run sees the defaults.
COMMAND_SETTINGS = (
    "AMQP_URL",
    "QUEUE_NAME",
    "DELIVERY_LIMIT",
    "MAX_ITEM_BYTES",
    "WORK_MODE",
    "WORK_HANDLER",
    "WORK_COMMAND",
    "WORK_SECONDS",
    "PREFETCH",
    "HEARTBEAT_SECONDS",
    "CONNECT_DEADLINE_SECONDS",
    "ITEM_TIMEOUT_SECONDS",
    "LOG_LEVEL",
)
#: Prefetch of the fine-mode worker on short items, as a user would set it for
#: items of well under a millisecond; the plain consumer gets the same.
SHORT_ITEM_PREFETCH = 100
#: The tutorial's per-item work as a Python process: read the item, do nothing.
PYTHON_ITEM_PROCESS = (sys.executable, "-c", "import sys; sys.stdin.buffer.read()")
#: The plain pika publisher and consumer, as a command.
PLAIN = (sys.executable, "-m", "bench.plain")
#: The tutorial's tools; the broker's URL follows each.
AMQP_PUBLISH = ("amqp-publish", "--url")
AMQP_CONSUME = ("amqp-consume", "--url")
#: An item's log line, as `workqueue.logs` formats it: when it ended, how long it took.
#: Searched, not matched: the demo handler's output shares the file and may precede it.
ITEM_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+ event=item "
    r".* ms=(?P<ms>\d+) "
)
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
#: Longest any one timed process may run before the bench gives up, in seconds.
PROCESS_TIMEOUT_SECONDS = 300


class BenchFailed(RuntimeError):
    """A contestant did not do the whole job; its figure would mean nothing."""


@dataclass(frozen=True)
class Context:
    """What every measurement needs: the broker, the bench's queues, a scratch dir."""

    url: str
    queues: BenchQueues
    scratch: Path

    def log_path(self, name: str) -> Path:
        """A log file in the scratch directory, for a process's stdout and stderr."""
        return self.scratch / f"{name}.log"


def command_environment(url: str, queue_name: str, **settings: object) -> dict:
    """The environment of a seed or work process: the defaults plus `settings`."""
    environment = {
        key: value for key, value in os.environ.items() if key not in COMMAND_SETTINGS
    }
    environment.update(PYTHONPATH=str(WORKER_DIR), AMQP_URL=url, QUEUE_NAME=queue_name)
    # As the image (worker/Dockerfile) sets it: output is written as it comes.
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update({key: str(value) for key, value in settings.items()})
    return environment


def run_process(argv, log_path: Path, environment=None, stdin=None) -> float:
    """Run one process to its end with its output in `log_path`; returns seconds.

    `argv` may hold numbers and bytes beside strings.

    Raises:
        BenchFailed: it exited non-zero.
    """
    argv = [str(part) if not isinstance(part, bytes) else part for part in argv]
    with log_path.open("ab") as log_file:
        started = time.perf_counter()
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=environment,
            stdin=stdin,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=PROCESS_TIMEOUT_SECONDS,
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchFailed(
            f"{Path(argv[0]).name} exited {done.returncode}; see {log_path}"
        )
    return seconds


def write_items(path: Path, count: int) -> Path:
    """An item file of `count` short items, one per line."""
    path.write_bytes(b"".join(item + b"\n" for item in item_bodies(count)))
    return path


# Seeding: a full item file into an empty queue.


def seed_project(context: Context, item_file: Path, count: int) -> float:
    """`python -m workqueue seed --file` on a fresh queue; returns items/s."""
    queue = context.queues.new("seed")
    try:
        seconds = run_process(
            [sys.executable, "-m", "workqueue", "seed", "--file", str(item_file)],
            context.log_path("seed-project"),
            command_environment(context.url, queue.name),
        )
        context.queues.wait_depth(queue, count)
    finally:
        context.queues.delete(queue)
    return count / seconds


def seed_plain(context: Context, item_file: Path, count: int, how="publish") -> float:
    """A plain pika publish loop without confirms on a fresh queue; returns items/s.

    `how` is `publish` (one blocking call per item) or `publish-async` (all items
    written by an asynchronous connection's I/O loop).
    """
    queue = context.queues.new(f"seed-{how}")
    try:
        seconds = run_process(
            [*PLAIN, how, context.url, queue.name, str(item_file)],
            context.log_path(f"seed-{how}"),
        )
        context.queues.wait_depth(queue, count)
    finally:
        context.queues.delete(queue)
    return count / seconds


def seed_tutorial(context: Context, count: int) -> float:
    """One `amqp-publish -p` process per item, as the tutorial fills its queue."""
    queue = context.queues.new("seed-amqp-publish")
    log_path = context.log_path("seed-amqp-publish")
    try:
        started = time.perf_counter()
        for item in item_bodies(count):
            run_process(
                [*AMQP_PUBLISH, context.url, "-r", queue.name, "-p", "-b", item],
                log_path,
            )
        seconds = time.perf_counter() - started
        context.queues.wait_depth(queue, count)
    finally:
        context.queues.delete(queue)
    return count / seconds


# Draining: a full queue to empty.


def _drained(context: Context, queue, contestant: str) -> None:
    depth = context.queues.depth(queue)
    if depth != 0:
        raise BenchFailed(f"{contestant} left {depth} items in {queue.name}")


def drain_worker(context: Context, count: int, **settings: object) -> float:
    """One fine-mode worker on a queue of `count` items; returns items/s.

    `settings` picks the work (default: the no-op handler) and may override the
    prefetch (default `SHORT_ITEM_PREFETCH`).
    """
    queue = context.queues.new("drain")
    settings = {"WORK_MODE": "fine", "PREFETCH": SHORT_ITEM_PREFETCH, **settings}
    if "WORK_COMMAND" not in settings:
        settings.setdefault("WORK_HANDLER", "workqueue.handlers:noop")
    try:
        context.queues.fill(queue, item_bodies(count), context.log_path("fill"))
        seconds = run_process(
            [sys.executable, "-m", "workqueue", "work"],
            context.log_path(f"drain-{queue.name}"),
            command_environment(context.url, queue.name, **settings),
        )
        _drained(context, queue, "the worker")
    finally:
        context.queues.delete(queue)
    return count / seconds


def drain_plain(context: Context, count: int) -> float:
    """A plain pika consumer acking each item at `SHORT_ITEM_PREFETCH`; items/s."""
    queue = context.queues.new("drain-plain")
    try:
        context.queues.fill(queue, item_bodies(count), context.log_path("fill"))
        seconds = run_process(
            [*PLAIN, "consume", context.url, queue.name, count, SHORT_ITEM_PREFETCH],
            context.log_path("drain-plain"),
        )
        _drained(context, queue, "the plain consumer")
    finally:
        context.queues.delete(queue)
    return count / seconds


def drain_tutorial(context: Context, count: int, command) -> float:
    """One `amqp-consume -c 1 COMMAND` process per item, as the tutorial's pods."""
    queue = context.queues.new("drain-amqp-consume")
    log_path = context.log_path("drain-amqp-consume")
    try:
        context.queues.fill(queue, item_bodies(count), context.log_path("fill"))
        started = time.perf_counter()
        for _ in range(count):
            run_process(
                [*AMQP_CONSUME, context.url, "-q", queue.name, "-c", 1, "--", *command],
                log_path,
                stdin=subprocess.DEVNULL,
            )
        seconds = time.perf_counter() - started
        _drained(context, queue, "amqp-consume")
    finally:
        context.queues.delete(queue)
    return count / seconds


# Makespan: items of fixed work spread over a Job's pods.


@dataclass(frozen=True)
class Makespan:
    """One Job's makespan, and where its time went beside the work itself."""

    seconds: float
    """From starting the first worker to the exit of the last."""
    ideal: float
    """ceil(items / workers) x work_seconds: the work alone, perfectly shared."""
    start_up: float
    """From starting the first worker until its first item began."""
    tail: float
    """From the end of the last item until the last worker exited."""


def makespan(
    context: Context, mode: str, items: int, workers: int, work_seconds: float
) -> Makespan:
    """Run `items` demo items of `work_seconds` each on `workers` worker processes.

    Fine mode starts `workers` processes that drain the queue; coarse mode keeps
    `workers` processes running, one item each, until `items` have exited 0, as the
    Job controller would with `completions`. The controller here waits on its
    processes instead of polling, so it adds no delay of its own.
    """
    queue = context.queues.new(f"makespan-{mode}")
    environment = command_environment(
        context.url,
        queue.name,
        WORK_MODE=mode,
        WORK_HANDLER="workqueue.handlers:demo",
        WORK_SECONDS=work_seconds,
    )
    completions = items if mode == "coarse" else workers
    log_path = context.log_path(queue.name)
    try:
        context.queues.fill(queue, item_bodies(items), context.log_path("fill"))
        with log_path.open("ab") as log_file:
            began = time.time()
            seconds = _run_job(environment, log_file, workers, completions)
        _drained(context, queue, f"the {mode}-mode Job")
    finally:
        context.queues.delete(queue)
    first_start, last_end = _item_span(log_path)
    return Makespan(
        seconds=seconds,
        ideal=math.ceil(items / workers) * work_seconds,
        start_up=first_start - began,
        tail=began + seconds - last_end,
    )


def _item_span(log_path: Path) -> tuple[float, float]:
    """When the first item began and the last one ended, from the workers' log."""
    starts, ends = [], []
    for line in log_path.read_text(errors="replace").splitlines():
        found = ITEM_LINE.search(line)
        if found:
            logged = datetime.strptime(found["time"], LOG_TIME_FORMAT).timestamp()
            starts.append(logged - int(found["ms"]) / 1000)
            ends.append(logged)
    if not starts:
        raise BenchFailed(f"no item lines in {log_path}")
    return min(starts), max(ends)


def _run_job(environment, log_file, parallelism: int, completions: int) -> float:
    running: dict[int, subprocess.Popen] = {}
    succeeded = 0
    started = time.perf_counter()
    while succeeded < completions:
        while len(running) < min(parallelism, completions - succeeded):
            process = subprocess.Popen(
                [sys.executable, "-m", "workqueue", "work"],
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            running[process.pid] = process
        pid, status = os.wait()
        process = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != exitcodes.OK:
            for other in running.values():
                other.kill()
                other.wait()
            raise BenchFailed(f"a worker exited {process.returncode}")
        succeeded += 1
    return time.perf_counter() - started
