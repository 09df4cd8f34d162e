"""An existing broker's URL is a secret: the program refuses one whose password
would spill out of the URL's authority, and no input or output of a run shows the
password in plain text."""

from __future__ import annotations

import pytest

from components.settings import SettingsError
from tests.pulumi_harness import (
    TEST_SECRETS,
    ProgramRun,
    plain_strings,
    run_program,
    run_program_expecting_error,
)

PASSWORD = "Pa55word"  # noqa: S105 (a test value)
NETWORKS = {"brokerCidrs": ["10.0.0.0/8"]}

#: URLs that urlsplit reads with the password (or part of it) as the host or port.
LEAKING_URLS = {
    "# in the password": f"amqp://app:{PASSWORD}#hash@mq.internal:5672/%2F",
    "? in the password": f"amqp://app:{PASSWORD}?q@mq.internal:5672/%2F",
    "/ in the password": f"amqp://app:{PASSWORD}/x@mq.internal:5672/%2F",
    "digits then / in the password": "amqp://app:5671/Pa55word@mq.internal/%2F",
}
MALFORMED_URLS = {
    "no host": f"amqp://app:{PASSWORD}@:5672/%2F",
    "port not a number": f"amqp://app:{PASSWORD}@mq.internal:amqp/%2F",
    "port out of range": f"amqp://app:{PASSWORD}@mq.internal:70000/%2F",
    "a fragment": f"amqp://app:{PASSWORD}@mq.internal:5672/%2F#top",
    "whitespace": f"amqp://app:{PASSWORD}@mq.internal:5672/ %2F",
    "another scheme": f"https://app:{PASSWORD}@mq.internal/",
}


def _existing_broker(url: str) -> dict[str, str]:
    return {**TEST_SECRETS, "brokerUrl": url}


def _plain_texts(run: ProgramRun) -> list[str]:
    """Every string of the run a person or a log could see without decrypting."""
    texts = [text for r in run.registrations for text in plain_strings(r.wire_inputs)]
    texts.append(repr(run.component_outputs))
    texts.append(repr(run.stack_outputs))
    return texts


@pytest.mark.parametrize("case", sorted(LEAKING_URLS) + sorted(MALFORMED_URLS))
def test_a_url_that_would_misplace_its_password_is_refused_without_showing_it(case):
    url = {**LEAKING_URLS, **MALFORMED_URLS}[case]

    error, registered = run_program_expecting_error(
        "prod", NETWORKS, secrets=_existing_broker(url)
    )

    assert isinstance(error, SettingsError), f"{case}: {error!r}"
    assert "workqueue:brokerUrl" in str(error), f"{case}: {error}"
    assert PASSWORD not in str(error) and url not in str(error), f"{case}: {error}"
    assert registered == [], f"{case}: registered {[r.name for r in registered]}"


ADDRESSES = {
    "amqp://app:Pa55word%23hash@mq.internal:5672/%2F": "mq.internal:5672",
    "amqp://app:Pa55word%2Fx@mq.internal/%2F": "mq.internal:5672",
    "amqps://app:Pa55word@mq.internal/batch": "mq.internal:5671",
    "amqps://app:Pa55word@MQ.internal:15671": "mq.internal:15671",
    "amqp://app:Pa55word@[fd00::1]:5672/%2F": "[fd00::1]:5672",
}


@pytest.mark.parametrize("url", sorted(ADDRESSES))
def test_the_broker_address_is_host_and_port_and_no_password_is_in_plain_text(url):
    run = run_program("prod", NETWORKS, secrets=_existing_broker(url))

    assert run.stack_outputs["brokerAddress"] == ADDRESSES[url]
    for text in _plain_texts(run):
        assert PASSWORD.lower() not in text.lower(), f"{url}: {text[:80]}"
