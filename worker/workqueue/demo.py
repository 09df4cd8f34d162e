"""`make demo`: the dev stack's main job on a local broker, without a cluster.

Seeds the dev stack's items with the `seed` command, then runs the `work` command as
separate processes, started the way the Job controller starts the work Job's pods,
and checks that every item was processed exactly once.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pika

from workqueue import exitcodes
from workqueue.localbroker import (
    BrokerNotInstalled,
    PrivateNode,
    local_or_private_broker,
)
from workqueue.localjob import JobResult, LocalJob, PodResult
from workqueue.seeder import SeedInputError, load_items, read_items
from workqueue.settings import DEFAULT_MAX_ITEM_BYTES, MODES
from workqueue.worker import REASON_HEADER

#: The project's root, where the stack files are.
ROOT = Path(__file__).resolve().parents[2]
#: The stack whose settings the demo runs.
STACK_FILE = ROOT / "Pulumi.dev.yaml"
#: Failed pods the demo's Job tolerates, as Kubernetes' default and the stacks'.
DEMO_BACKOFF_LIMIT = 6
#: The Kubernetes tutorial's items, used when the stack file names none.
TUTORIAL_ITEMS = ("apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon")
#: An item's log line; the seeder names items `<batch>:<index in the item file>`.
ITEM_LINE = re.compile(r"event=item item=\S+:(\d+) .* outcome=(\S+)")


@dataclass(frozen=True)
class DemoSettings:
    """What to run: the items, the mode, the parallelism and the work per item."""

    items: list[bytes]
    mode: str
    parallelism: int
    work_seconds: float
    queue: str
    delivery_limit: int


def stack_config(path: Path = STACK_FILE) -> dict[str, object]:
    """The `workqueue:` keys of a stack file, without their prefix ({} if no file)."""
    if not path.exists():
        return {}
    import yaml  # Only the demo reads stack files; the image does not carry PyYAML.

    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return {
        key.removeprefix("workqueue:"): value
        for key, value in config.items()
        if key.startswith("workqueue:")
    }


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value < (1 if kind is int else 0):
            raise argparse.ArgumentTypeError(f"{text} is too small")
        return value

    return parse


def demo_settings(argv: list[str] | None) -> DemoSettings:
    """The stack file's settings, overridden by the command line."""
    stack = stack_config()
    parser = argparse.ArgumentParser(
        prog="make demo",
        description=f"Run the main job locally with {STACK_FILE.name}.",
    )
    parser.add_argument(
        "--items-file", help="one item per line (default: the stack's items)"
    )
    parser.add_argument("--mode", choices=MODES, default=stack.get("mode", "coarse"))
    parser.add_argument(
        "--parallelism", type=_positive(int), default=int(stack.get("parallelism", 2))
    )
    parser.add_argument(
        "--work-seconds",
        type=_positive(float),
        default=float(stack.get("workSeconds", 10)),
        help="how long the demo work sleeps per item",
    )
    args = parser.parse_args(argv)

    items_file = args.items_file or stack.get("itemsFile")
    try:
        if items_file:
            path = Path(items_file) if args.items_file else ROOT / str(items_file)
            items = load_items(str(path), DEFAULT_MAX_ITEM_BYTES)
        else:
            listed = "\n".join(str(item) for item in stack.get("items", TUTORIAL_ITEMS))
            items = read_items(
                io.BytesIO(listed.encode()), DEFAULT_MAX_ITEM_BYTES, "items"
            )
    except SeedInputError as error:
        parser.error(str(error))
    return DemoSettings(
        items=items,
        mode=args.mode,
        parallelism=args.parallelism,
        work_seconds=args.work_seconds,
        queue=str(stack.get("queue", "job1")),
        delivery_limit=int(stack.get("deliveryLimit", 5)),
    )


def find_broker() -> tuple[str, PrivateNode | None]:
    """AMQP_URL when set, else a broker on localhost:5672, else a private node.

    Raises:
        BrokerNotInstalled: none of the three can be had here.
    """
    if os.environ.get("AMQP_URL"):
        return os.environ["AMQP_URL"], None
    return local_or_private_broker()


class Progress:
    """Prints one line per finished pod, with the items it processed."""

    def __init__(self, items: list[bytes]):
        self.items = items
        self.acked: Counter[int] = Counter()
        self.per_pod: dict[int, int] = {}

    def __call__(self, pod: PodResult, _job: JobResult) -> None:
        done = [
            index
            for index, outcome in item_outcomes(pod.log_path)
            if outcome == "acked"
        ]
        self.acked.update(done)
        self.per_pod[pod.number] = len(done)
        shown = ", ".join(self.items[index].decode(errors="replace") for index in done)
        print(
            f"  pod {pod.number:>3} exit {pod.exit_code:<3} {pod.seconds:5.1f}s  "
            f"{shown or 'no item'}   [{sum(self.acked.values())}/{len(self.items)}]",
            flush=True,
        )


def item_outcomes(log_path: Path) -> list[tuple[int, str]]:
    """(index in the item file, outcome) of each item a pod's log reports."""
    outcomes = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = ITEM_LINE.search(line)
        if match:
            outcomes.append((int(match.group(1)), match.group(2)))
    return outcomes


def queue_depths(url: str, queue: str) -> tuple[int, int]:
    """Items still ready in the work queue and in its dead-letter queue."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        left = channel.queue_declare(queue, passive=True).method.message_count
        dead = channel.queue_declare(f"{queue}.dead", passive=True).method.message_count
        return left, dead
    finally:
        connection.close()


def dead_letter_reasons(url: str, queue: str) -> list[tuple[bytes, str]]:
    """Each dead-lettered item with the reason the worker recorded; the items stay."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        seen = []
        while True:
            method, properties, body = channel.basic_get(f"{queue}.dead")
            if method is None:
                return seen
            reason = (properties.headers or {}).get(REASON_HEADER, "(no reason)")
            seen.append((body, str(reason)))
    finally:
        # Closing the channel returns every item it took to the dead-letter queue.
        connection.close()


def delete_queues(url: str, queue: str, keep_dead_letters: bool) -> None:
    """Remove the demo's queues; keep the dead-letter queue when it holds items."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.seed-ledger"):
            channel.queue_delete(name)
        if not keep_dead_letters:
            channel.queue_delete(f"{queue}.dead")
    finally:
        connection.close()


def run(settings: DemoSettings, url: str) -> int:
    """Seed, run the work Job's pods, print the summary; returns the exit code."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir = ROOT / ".demo" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    queue = f"{settings.queue}.demo.{stamp}"
    items_file = run_dir / "items.txt"
    items_file.write_bytes(b"".join(item + b"\n" for item in settings.items))
    environment = {
        **os.environ,
        "AMQP_URL": url,
        "QUEUE_NAME": queue,
        "WORK_MODE": settings.mode,
        "WORK_SECONDS": str(settings.work_seconds),
        "DELIVERY_LIMIT": str(settings.delivery_limit),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "worker"), os.environ.get("PYTHONPATH")])
        ),
    }
    started = time.monotonic()

    print(f"Seeding {len(settings.items)} items into queue {queue} ...", flush=True)
    seeding = subprocess.run(
        [sys.executable, "-m", "workqueue", "seed", "--file", str(items_file)],
        env=environment,
        check=False,
    )
    if seeding.returncode != exitcodes.OK:
        print(f"Seeding failed with exit code {seeding.returncode}.", file=sys.stderr)
        return seeding.returncode

    coarse = settings.mode == "coarse"
    print(
        f"Running the work Job: mode={settings.mode} parallelism={settings.parallelism}"
        + (f" completions={len(settings.items)}" if coarse else "")
        + f" (pod logs in {run_dir.relative_to(ROOT)})",
        flush=True,
    )
    progress = Progress(settings.items)
    job = LocalJob(
        environment,
        run_dir,
        parallelism=settings.parallelism,
        completions=len(settings.items) if coarse else None,
        backoff_limit=DEMO_BACKOFF_LIMIT,
        on_pod_exit=progress,
    )
    result = job.run()
    wall = time.monotonic() - started

    left, dead = queue_depths(url, queue)
    processed = len(progress.acked)
    duplicates = sum(count - 1 for count in progress.acked.values())
    retried = sum(
        1
        for pod in result.pods
        for _index, outcome in item_outcomes(pod.log_path)
        if outcome.startswith("requeued")
    )
    lost = len(settings.items) - processed - dead - left
    per_worker = ", ".join(
        f"pod {n}: {count}" for n, count in sorted(progress.per_pod.items())
    )
    print(
        f"\nSummary: {processed} of {len(settings.items)} items processed, "
        f"{retried} retried, {dead} dead-lettered, {left} left in the queue, "
        f"{lost} lost, {duplicates} processed twice; {wall:.1f}s wall time; "
        f"the Job {'completed' if result.complete else 'failed: ' + result.reason}.\n"
        f"Items per worker: {per_worker}"
    )
    for body, reason in dead_letter_reasons(url, queue) if dead else []:
        print(f"  dead-lettered {body!r}: {reason}")
    delete_queues(url, queue, keep_dead_letters=dead > 0)
    if dead:
        print(f"Dead-lettered items are kept in queue {queue}.dead for inspection.")
    healthy = result.complete and processed == len(settings.items) and not duplicates
    print(
        "Result: every item processed exactly once."
        if healthy
        else "Result: FAILED: not every item was processed exactly once."
    )
    return exitcodes.OK if healthy else exitcodes.ITEM_FAILED


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make demo`."""
    settings = demo_settings(argv)
    try:
        url, node = find_broker()
    except BrokerNotInstalled as error:
        print(f"No RabbitMQ broker to run the demo on. {error}", file=sys.stderr)
        return exitcodes.BAD_CONFIG
    try:
        return run(settings, url)
    finally:
        if node is not None:
            node.stop()


if __name__ == "__main__":
    sys.exit(main())
