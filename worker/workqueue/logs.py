"""Logging set-up: one line per event, `key=value` pairs, to stderr."""

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Send the project's log lines to stderr at `level`; keep pika's own quieter."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    logging.getLogger("pika").setLevel(
        max(logging.WARNING, logging.getLevelName(level))
    )
