"""`make demo`: the dev stack's job on the local broker, with an honest summary."""

import os
import re
import subprocess
import sys

from tests.conftest import BROKER_URL, ROOT, delete_queues
from workqueue import demo, exitcodes, localbroker
from workqueue.demo import TUTORIAL_ITEMS, stack_config


def _demo(*args: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workqueue.demo", "--work-seconds", "0.1", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "worker"), str(ROOT / "tests")]),
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_demo_processes_every_item_of_the_dev_stack_once():
    expected = len(stack_config().get("items", TUTORIAL_ITEMS))

    result = _demo()

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Summary: {expected} of {expected} items processed" in result.stdout
    assert "0 lost, 0 processed twice" in result.stdout


def test_the_demo_fails_when_an_item_is_dead_lettered():
    result = _demo(
        "--mode", "fine", "--parallelism", "3",
        WORK_HANDLER="work_handlers:fail_some", FAIL_ITEMS="cherry",
        RECORD_FILE=os.devnull,
    )  # fmt: skip

    kept = re.search(r"kept in queue (\S+)\.dead ", result.stdout)
    if kept:
        delete_queues(BROKER_URL, kept.group(1))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 dead-lettered" in result.stdout
    assert "dead-lettered b'cherry': RuntimeError: refusing b'cherry'" in result.stdout
    assert kept, "the summary must say where the dead-lettered items are"
    assert "Result: FAILED" in result.stdout


def test_without_a_broker_the_demo_starts_a_private_node(monkeypatch, capsys):
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.setattr(localbroker, "broker_answers", lambda _host, _port: False)

    exit_code = demo.main(["--work-seconds", "0"])

    output = capsys.readouterr().out
    assert exit_code == 0, output
    assert "starting a private RabbitMQ node" in output
    assert "items processed" in output and "0 lost" in output


def test_without_rabbitmq_installed_the_demo_says_what_to_install(monkeypatch, capsys):
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.setattr(localbroker, "broker_answers", lambda _host, _port: False)
    monkeypatch.setattr(localbroker.shutil, "which", lambda _name: None)

    exit_code = demo.main([])

    assert exit_code == exitcodes.BAD_CONFIG
    assert "sudo apt-get install -y rabbitmq-server" in capsys.readouterr().err


def test_without_root_the_demo_says_how_to_get_a_broker(monkeypatch, capsys):
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.setattr(localbroker, "broker_answers", lambda _host, _port: False)
    monkeypatch.setattr(localbroker.os, "geteuid", lambda: 1000)

    exit_code = demo.main([])

    assert exit_code == exitcodes.BAD_CONFIG
    assert "starting a private RabbitMQ node takes root" in capsys.readouterr().err
