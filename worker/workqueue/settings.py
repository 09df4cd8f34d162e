"""Settings of the `seed` and `work` commands, read from environment variables.

Every value is checked once at start-up; a bad one raises `SettingsError` naming the
variable and what it accepts, before the broker is contacted.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The modes a worker runs in: one item per process, or until the queue is empty.
MODES = ("coarse", "fine")
#: Queue names RabbitMQ accepts, minus the `amq.` prefix it reserves.
QUEUE_NAME_PATTERN = re.compile(r"^(?!amq\.)[A-Za-z0-9_.:-]{1,200}$")
HANDLER_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The largest item the seeder accepts unless `MAX_ITEM_BYTES` says otherwise.
DEFAULT_MAX_ITEM_BYTES = 65536
#: RabbitMQ's default largest message (`max_message_size`, 128 MiB).
BROKER_MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: Longest heartbeat interval accepted; brokers close connections that ask for more
#: than they allow, with an error that looks like refused credentials.
MAX_HEARTBEAT_SECONDS = 3600


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and what it accepts."""


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how long to keep trying to reach it."""

    url: str
    heartbeat_seconds: int
    connect_deadline_seconds: float

    @property
    def address(self) -> str:
        """`host:port/vhost` of the broker, safe to log: no user, no password."""
        parts = urlsplit(self.url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        vhost = parts.path[1:] if parts.path.startswith("/") else parts.path
        return f"{parts.hostname}:{port}/{vhost or '%2F'}"


@dataclass(frozen=True)
class QueueSettings:
    """The work queue and the arguments every declaration of it must share."""

    name: str
    delivery_limit: int

    @property
    def dead_letter_name(self) -> str:
        """The queue that holds items which failed `delivery_limit` times."""
        return f"{self.name}.dead"


@dataclass(frozen=True)
class SeedSettings:
    """What the `seed` command needs beyond the broker and the queue."""

    broker: BrokerSettings
    queue: QueueSettings
    max_item_bytes: int


@dataclass(frozen=True)
class WorkSettings:
    """What the `work` command needs beyond the broker and the queue."""

    broker: BrokerSettings
    queue: QueueSettings
    mode: str
    handler: str
    command: tuple[str, ...] | None
    work_seconds: float
    prefetch: int
    item_timeout_seconds: float


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"{name} is required and is not set")
    return default


def _number(env, name, default, *, kind=int, minimum, maximum=None):
    """The variable as a finite number within [minimum, maximum]."""
    raw = _text(env, name, str(default))
    try:
        value = kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {noun}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SettingsError(f"{name}={raw} must be at least {minimum}{upper}")
    return value


def _broker(env: Mapping[str, str]) -> BrokerSettings:
    url = _text(env, "AMQP_URL")
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        # The URL may hold a password: name the variable, never echo the value.
        raise SettingsError(
            "AMQP_URL must look like amqp://USER:PASSWORD@HOST:PORT/VHOST "
            "(scheme amqp or amqps, with a host)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise SettingsError("AMQP_URL has a port that is not a number") from None
    return BrokerSettings(
        url=url,
        heartbeat_seconds=_number(
            env, "HEARTBEAT_SECONDS", 30, minimum=1, maximum=MAX_HEARTBEAT_SECONDS
        ),
        connect_deadline_seconds=_number(
            env, "CONNECT_DEADLINE_SECONDS", 60, kind=float, minimum=0
        ),
    )


def _queue(env: Mapping[str, str]) -> QueueSettings:
    name = _text(env, "QUEUE_NAME", "job1")
    if not QUEUE_NAME_PATTERN.match(name):
        raise SettingsError(
            f"QUEUE_NAME={name!r} is not a queue name: use 1 to 200 letters, digits, "
            "'.', '_', ':' or '-', not starting with 'amq.'"
        )
    limit = _number(env, "DELIVERY_LIMIT", 5, minimum=1, maximum=1000)
    return QueueSettings(name=name, delivery_limit=limit)


def seed_settings(env: Mapping[str, str] = os.environ) -> SeedSettings:
    """Read the `seed` command's settings; raises `SettingsError`."""
    return SeedSettings(
        broker=_broker(env),
        queue=_queue(env),
        max_item_bytes=_number(
            env,
            "MAX_ITEM_BYTES",
            DEFAULT_MAX_ITEM_BYTES,
            minimum=1,
            maximum=BROKER_MAX_MESSAGE_BYTES,
        ),
    )


def work_settings(env: Mapping[str, str] = os.environ) -> WorkSettings:
    """Read the `work` command's settings; raises `SettingsError`."""
    mode = _text(env, "WORK_MODE", "coarse").lower()
    if mode not in MODES:
        raise SettingsError(f"WORK_MODE={mode!r} is not one of: {', '.join(MODES)}")

    handler = _text(env, "WORK_HANDLER", "workqueue.handlers:demo")
    if not HANDLER_PATTERN.match(handler):
        raise SettingsError(
            f"WORK_HANDLER={handler!r} is not a callable path: use module:function, "
            "e.g. mypackage.tasks:process"
        )
    command = None
    if env.get("WORK_COMMAND", "").strip():
        if env.get("WORK_HANDLER", "").strip():
            raise SettingsError("set WORK_COMMAND or WORK_HANDLER, not both")
        try:
            command = tuple(shlex.split(env["WORK_COMMAND"]))
        except ValueError as error:
            raise SettingsError(f"WORK_COMMAND cannot be split: {error}") from None

    return WorkSettings(
        broker=_broker(env),
        queue=_queue(env),
        mode=mode,
        handler=handler,
        command=command,
        work_seconds=_number(env, "WORK_SECONDS", 10, kind=float, minimum=0),
        prefetch=_number(env, "PREFETCH", 1, minimum=1, maximum=65535),
        item_timeout_seconds=_number(
            env, "ITEM_TIMEOUT_SECONDS", 1500, kind=float, minimum=0.1
        ),
    )


def log_level(env: Mapping[str, str] = os.environ) -> str:
    """The `LOG_LEVEL` setting, upper-cased; raises `SettingsError`."""
    level = _text(env, "LOG_LEVEL", "INFO").upper()
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"LOG_LEVEL={level!r} is not one of: {', '.join(LOG_LEVELS)}"
        )
    return level


def check_command_exists(settings: WorkSettings) -> None:
    """Refuse a `WORK_COMMAND` whose program is not on PATH, before taking an item.

    Separate from `work_settings`, since the Pulumi program checks the settings where
    the image's programs are not installed.

    Raises:
        SettingsError: the program cannot be found or run.
    """
    if settings.command is not None and shutil.which(settings.command[0]) is None:
        raise SettingsError(
            f"WORK_COMMAND: {settings.command[0]!r} is not an executable on PATH"
        )
