"""The work done per item: the demo handler, a command, or a Python callable.

A handler is called with the item's bytes and returns nothing when the work
succeeded. Raising `PoisonItem` says the item can never succeed, so it goes to the
dead-letter queue at once; any other exception is a failure worth retrying.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from workqueue.settings import SettingsError, WorkSettings

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]

#: A command exiting with this code (EX_DATAERR) says its item can never succeed.
POISON_EXIT_CODE = 65


class PoisonItem(ValueError):
    """The item can never be processed: retrying it is pointless."""


class WorkFailed(RuntimeError):
    """The work on one item failed; another attempt may succeed."""


def demo(item: bytes) -> None:
    """The tutorial's work: print the item, then sleep `WORK_SECONDS` seconds."""
    if not item:
        raise PoisonItem("empty item")
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PoisonItem(f"item is not UTF-8 text: {error.reason}") from None
    print(text, flush=True)
    time.sleep(float(os.environ.get("WORK_SECONDS", "10")))


class CommandHandler:
    """Runs a command per item with the item on its stdin, as amqp-consume did.

    Exit code 0 is success, `POISON_EXIT_CODE` marks a poison item, any other code
    is a failure worth retrying. `cancel` kills the running command from another
    thread, for SIGTERM and item time-outs.
    """

    def __init__(self, command: tuple[str, ...]):
        self._command = command
        self._running: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __call__(self, item: bytes) -> None:
        with self._lock:
            # A session of its own, so that a cancel kills what the command started.
            self._running = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, start_new_session=True
            )
        try:
            self._running.communicate(item)
        finally:
            with self._lock:
                code, self._running = self._running.returncode, None
        if code == POISON_EXIT_CODE:
            raise PoisonItem(f"command exited {code} (poison item)")
        if code != 0:
            raise WorkFailed(f"command exited {code}")

    def cancel(self) -> None:
        """Kill the command that is running, if any."""
        with self._lock:
            if self._running is not None and self._running.poll() is None:
                os.killpg(self._running.pid, signal.SIGKILL)


def load_callable(path: str) -> Handler:
    """Import `module:function` and return the function.

    Raises:
        SettingsError: the module cannot be imported or has no such callable.
    """
    module_name, _, function_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingsError(
            f"WORK_HANDLER={path!r}: cannot import {error.name}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SettingsError(
            f"WORK_HANDLER={path!r}: {module_name} has no callable {function_name}"
        )
    return function


def build_handler(settings: WorkSettings) -> Handler:
    """The handler the settings ask for; raises `SettingsError`."""
    if settings.command is not None:
        return CommandHandler(settings.command)
    return load_callable(settings.handler)


def noop(item: bytes) -> None:
    """Accept every item and do nothing: for measuring the worker's own cost."""
