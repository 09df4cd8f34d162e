"""Handlers the fault tests run in real worker processes, each item telling its fate.

`WORK_HANDLER=fault_handlers:misbehave`: an item starting with `crash` raises, one
starting with `hang` never returns, one starting with `slow` takes `SLOW_SECONDS`,
bytes that are not UTF-8 are a poison item; every other item is recorded as done.
"""

import os
import time

from work_handlers import record

from workqueue.handlers import PoisonItem

#: Long enough to outlast any time-out of the tests; the handler thread is a daemon.
HANG_SECONDS = 3600


def misbehave(item: bytes) -> None:
    """Fail, hang, dawdle or succeed, as the item's first word says."""
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PoisonItem(f"item is not UTF-8 text: {error.reason}") from None
    if text.startswith("crash"):
        raise RuntimeError(f"handler crashed on {text!r}, as the test asked")
    if text.startswith("hang"):
        time.sleep(HANG_SECONDS)
    if text.startswith("slow"):
        time.sleep(float(os.environ["SLOW_SECONDS"]))
    record(item)
