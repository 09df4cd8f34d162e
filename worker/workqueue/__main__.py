"""The image's entry point: `python -m workqueue seed|work`."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys

from workqueue import exitcodes, logs
from workqueue.broker import BrokerRefused, BrokerUnreachable, ConnectStopped
from workqueue.handlers import build_handler
from workqueue.seeder import SeedError, SeedInputError, batch_id, load_items, seed
from workqueue.settings import (
    SettingsError,
    check_command_exists,
    log_level,
    seed_settings,
    work_settings,
)
from workqueue.worker import Worker

log = logging.getLogger("workqueue")
#: Batch ids go into message ids and the ledger; AMQP short strings cap both.
BATCH_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _batch_id(text: str) -> str:
    if not BATCH_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not a batch id: use 1 to 100 letters, digits, "
            "'.', '_', ':' or '-'"
        )
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workqueue",
        description="Seed a RabbitMQ work queue, or work on its items.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    seed_command = commands.add_parser("seed", help="publish one item per line")
    seed_command.add_argument(
        "--file", default="-", help="item file, one item per line ('-': stdin)"
    )
    seed_command.add_argument(
        "--batch",
        type=_batch_id,
        default=None,
        help="id of this seeding run (default: a hash of the items); "
        "a batch already seeded is not published again",
    )
    commands.add_parser("work", help="take items from the queue and process them")
    return parser


def _seed(args: argparse.Namespace) -> int:
    settings = seed_settings()
    items = load_items(args.file, settings.max_item_bytes)
    seed(settings, items, args.batch or batch_id(items))
    return exitcodes.OK


def _work() -> int:
    settings = work_settings()
    check_command_exists(settings)
    worker = Worker(settings, build_handler(settings))
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    return worker.run()


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see `workqueue.exitcodes`)."""
    args = _parser().parse_args(argv)
    try:
        logs.configure(log_level())
        if args.command == "seed":
            return _seed(args)
        return _work()
    except (SettingsError, SeedInputError, BrokerRefused) as error:
        log.error("event=bad-input command=%s error=%r", args.command, str(error))
        return exitcodes.BAD_CONFIG
    except BrokerUnreachable as error:
        log.error(
            "event=broker-unreachable command=%s error=%r", args.command, str(error)
        )
        return exitcodes.BROKER_UNREACHABLE
    except ConnectStopped:
        log.info("event=stopped command=%s while waiting for the broker", args.command)
        return exitcodes.TERMINATED
    except SeedError as error:
        log.error("event=seed-failed error=%r", str(error))
        return exitcodes.BROKER_FAILED


if __name__ == "__main__":
    sys.exit(main())
