"""Connecting to the broker: retries with backoff until a deadline, no secret logged."""

from __future__ import annotations

import logging
import time

import pika
import pika.exceptions

from workqueue.settings import BrokerSettings

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


def connection_parameters(broker: BrokerSettings) -> pika.URLParameters:
    """pika's parameters for the broker, with our heartbeat and timeouts."""
    parameters = pika.URLParameters(broker.url)
    parameters.heartbeat = broker.heartbeat_seconds
    parameters.connection_attempts = 1
    parameters.socket_timeout = SOCKET_TIMEOUT_SECONDS
    parameters.stack_timeout = SOCKET_TIMEOUT_SECONDS * 2
    parameters.blocked_connection_timeout = max(60, broker.heartbeat_seconds * 2)
    parameters.client_properties = {"connection_name": "workqueue"}
    return parameters


def describe(error: BaseException) -> str:
    """A short description of a connection error, without the broker's credentials."""
    return f"{type(error).__name__}: {error}".replace("\n", " ")[:300]


def connect(broker: BrokerSettings) -> pika.BlockingConnection:
    """Open a blocking connection, retrying with backoff until the connect deadline.

    Raises:
        BrokerUnreachable: every attempt failed; the message names the broker's
            host, port and virtual host, never its user or password.
        BrokerRefused: the broker answered but refused the credentials or the
            virtual host.
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
            time.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        else:
            log.debug(
                "event=connect outcome=ok broker=%s attempt=%d", broker.address, attempt
            )
            return connection
