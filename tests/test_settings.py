"""Settings are checked at start-up, and a bad one is named with what it accepts."""

import pytest

from workqueue.settings import SettingsError, seed_settings, work_settings

GOOD = {"AMQP_URL": "amqp://user:s3cret-pass@broker.example:5672/%2F"}


def test_defaults_describe_the_tutorials_job():
    settings = work_settings(GOOD)

    assert settings.mode == "coarse"
    assert settings.queue.name == "job1"
    assert settings.queue.dead_letter_name == "job1.dead"
    assert settings.handler == "workqueue.handlers:demo"
    assert settings.command is None
    assert settings.broker.address == "broker.example:5672/%2F"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WORK_MODE", "medium", "WORK_MODE='medium' is not one of: coarse, fine"),
        ("PREFETCH", "0", "PREFETCH=0 must be at least 1"),
        ("PREFETCH", "many", "PREFETCH='many' is not a whole number"),
        ("HEARTBEAT_SECONDS", "0", "HEARTBEAT_SECONDS=0 must be at least 1"),
        ("DELIVERY_LIMIT", "0", "DELIVERY_LIMIT=0 must be at least 1"),
        ("ITEM_TIMEOUT_SECONDS", "soon", "ITEM_TIMEOUT_SECONDS='soon' is not a number"),
        ("QUEUE_NAME", "amq.work", "QUEUE_NAME='amq.work' is not a queue name"),
        ("QUEUE_NAME", "two words", "QUEUE_NAME='two words' is not a queue name"),
        ("WORK_HANDLER", "no_colon", "WORK_HANDLER='no_colon' is not a callable path"),
        ("AMQP_URL", "http://broker:80/", "AMQP_URL must look like amqp://"),
    ],
)
def test_a_bad_value_is_named_with_what_it_accepts(variable, value, expected):
    with pytest.raises(SettingsError) as raised:
        work_settings({**GOOD, variable: value})

    assert expected in str(raised.value), f"{variable}={value!r}: got {raised.value}"


def test_a_missing_broker_url_is_named():
    with pytest.raises(SettingsError, match="AMQP_URL is required"):
        seed_settings({})


def test_a_bad_broker_url_error_never_shows_the_password():
    with pytest.raises(SettingsError) as raised:
        work_settings({"AMQP_URL": "amqp://user:s3cret-pass@broker:notaport/"})

    assert "AMQP_URL" in str(raised.value)
    assert "s3cret-pass" not in str(raised.value)


def test_command_and_handler_cannot_both_be_set():
    env = {**GOOD, "WORK_COMMAND": "cat", "WORK_HANDLER": "pkg.mod:run"}

    with pytest.raises(SettingsError, match="WORK_COMMAND or WORK_HANDLER, not both"):
        work_settings(env)


def test_a_command_is_split_like_a_shell_would():
    settings = work_settings({**GOOD, "WORK_COMMAND": "sh -c 'cat > /dev/null'"})

    assert settings.command == ("sh", "-c", "cat > /dev/null")


def test_the_seed_item_limit_must_be_positive():
    with pytest.raises(SettingsError, match="MAX_ITEM_BYTES=0 must be at least 1"):
        seed_settings({**GOOD, "MAX_ITEM_BYTES": "0"})
