"""Connecting to the broker: retries with backoff until a deadline, no secret logged."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions

from workqueue.settings import BrokerSettings, SettingsError

log = logging.getLogger(__name__)

#: First pause between connection attempts, in seconds; it doubles up to the cap.
FIRST_BACKOFF_SECONDS = 0.5
#: Longest pause between connection attempts, in seconds.
MAX_BACKOFF_SECONDS = 8.0
#: How long one TCP connect or AMQP handshake may take, in seconds.
SOCKET_TIMEOUT_SECONDS = 5.0


class BrokerUnreachable(ConnectionError):
    """The broker did not accept a connection before the deadline."""


class BrokerRefused(PermissionError):
    """The broker refused the credentials or the virtual host: retrying cannot help."""


class ConnectStopped(InterruptedError):
    """SIGTERM arrived while the broker was still being waited for."""


def connection_parameters(broker: BrokerSettings) -> pika.URLParameters:
    """pika's parameters for the broker, with our heartbeat and timeouts.

    Raises:
        SettingsError: pika cannot use the URL's query options.
    """
    try:
        parameters = pika.URLParameters(broker.url)
    except (ValueError, TypeError, AttributeError) as error:
        options = ", ".join(sorted(parse_qs(urlsplit(broker.url).query))) or "none"
        raise SettingsError(
            f"AMQP_URL cannot be used by pika ({type(error).__name__}); "
            f"its query options: {options}"
        ) from None
    parameters.heartbeat = broker.heartbeat_seconds
    parameters.connection_attempts = 1
    parameters.socket_timeout = SOCKET_TIMEOUT_SECONDS
    parameters.stack_timeout = SOCKET_TIMEOUT_SECONDS * 2
    parameters.blocked_connection_timeout = max(60, broker.heartbeat_seconds * 2)
    parameters.client_properties = {"connection_name": "workqueue"}
    return parameters


def describe(error: BaseException) -> str:
    """A short description of a connection error, without the broker's credentials.

    Some of pika's errors carry their cause only in their arguments, or in the
    exception they were raised from; those are named instead of an empty text.
    """
    text = str(error) or ", ".join(repr(argument) for argument in error.args)
    if not text and error.__context__ is not None:
        text = repr(error.__context__)
    return f"{type(error).__name__}: {text}".replace("\n", " ")[:300]


def connect(
    broker: BrokerSettings, stop_requested: Callable[[], bool] = lambda: False
) -> pika.BlockingConnection:
    """Open a blocking connection, retrying with backoff until the connect deadline.

    Raises:
        BrokerUnreachable: every attempt failed; the message names the broker's
            host, port and virtual host, never its user or password.
        BrokerRefused: the broker answered but refused the credentials or the
            virtual host, or its TLS certificate.
        ConnectStopped: `stop_requested` said yes between two attempts.
    """
    parameters = connection_parameters(broker)
    deadline = time.monotonic() + broker.connect_deadline_seconds
    backoff = FIRST_BACKOFF_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            connection = pika.BlockingConnection(parameters)
        except (
            pika.exceptions.AuthenticationError,
            pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError,
        ) as error:
            raise BrokerRefused(
                f"broker {broker.address} refused the user or virtual host in "
                f"AMQP_URL: {type(error).__name__}"
            ) from None
        except ssl.SSLError as error:
            raise BrokerRefused(
                f"TLS with broker {broker.address} failed: {error.reason or error}"
            ) from None
        except pika.exceptions.AMQPConnectionError as error:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnreachable(
                    f"broker {broker.address} not reachable after {attempt} attempts "
                    f"in {broker.connect_deadline_seconds:g}s: {describe(error)}"
                ) from None
            pause = min(backoff, remaining)
            log.info(
                "event=connect outcome=retry broker=%s attempt=%d wait_s=%.1f error=%r",
                broker.address,
                attempt,
                pause,
                describe(error),
            )
            _sleep_unless_stopped(pause, stop_requested)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        else:
            log.debug(
                "event=connect outcome=ok broker=%s attempt=%d", broker.address, attempt
            )
            return connection


def _sleep_unless_stopped(seconds: float, stop_requested: Callable[[], bool]) -> None:
    """Sleep in short steps, so that SIGTERM is answered within a fraction of a second.

    Raises:
        ConnectStopped: `stop_requested` said yes.
    """
    wake_at = time.monotonic() + seconds
    while not stop_requested():
        remaining = wake_at - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, 0.1))
    raise ConnectStopped("SIGTERM while waiting for the broker")
