"""Logging set-up: one line per event, `key=value` pairs, to stderr."""

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Send the project's log lines to stderr at `level`.

    pika logs each failed connection attempt with a traceback; the project's own
    lines say what failed, so pika speaks only at DEBUG, or when it is critical.
    """
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    pika_level = logging.DEBUG if level == "DEBUG" else logging.CRITICAL
    logging.getLogger("pika").setLevel(pika_level)
