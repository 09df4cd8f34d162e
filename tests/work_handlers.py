"""Handlers the tests run in real worker processes (`WORK_HANDLER=work_handlers:...`).

Each one appends what it did to the file named by `RECORD_FILE`, one line per item,
so a test can count how often each item was processed across processes.
"""

import os
import time

from workqueue.handlers import PoisonItem


def _record(item: bytes, outcome: str) -> None:
    line = f"{item.hex()} {os.getpid()} {outcome}\n".encode()
    fd = os.open(os.environ["RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def record(item: bytes) -> None:
    """Succeed after `WORK_SECONDS` seconds (default 0), recording the item."""
    time.sleep(float(os.environ.get("WORK_SECONDS", "0")))
    _record(item, "done")


def fail_some(item: bytes) -> None:
    """Fail the items listed in `FAIL_ITEMS` (comma-separated); record the others."""
    if item.decode() in os.environ.get("FAIL_ITEMS", "").split(","):
        _record(item, "failed")
        raise RuntimeError(f"refusing {item!r} as the test asked")
    _record(item, "done")


def poison_some(item: bytes) -> None:
    """Call `PoisonItem` on the items listed in `FAIL_ITEMS`; record the others."""
    if item.decode() in os.environ.get("FAIL_ITEMS", "").split(","):
        _record(item, "poison")
        raise PoisonItem("the test marked this item as poison")
    _record(item, "done")


def processed_counts(record_file) -> dict[bytes, int]:
    """How many times each item was recorded as done."""
    counts: dict[bytes, int] = {}
    if not os.path.exists(record_file):
        return counts
    with open(record_file) as lines:
        for line in lines:
            item_hex, _pid, outcome = line.split()
            if outcome == "done":
                item = bytes.fromhex(item_hex)
                counts[item] = counts.get(item, 0) + 1
    return counts


def exits(item: bytes) -> None:
    """Call sys.exit, as careless user code might: a failure, not a dead thread."""
    _record(item, "exiting")
    raise SystemExit(3)
