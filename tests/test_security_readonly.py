"""The worker runs as the pods run it: as the numeric user of the image, on a
read-only root filesystem with only /tmp writable, with the image's environment.

Each pod runs in a private mount namespace (tests/rendered_pods.py), so this needs
root, `unshare` and `setpriv`; it is skipped where they are missing.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pika
import pytest

from components.pods import NON_ROOT_ID
from tests.conftest import BROKER_URL, delete_queues
from tests.pulumi_harness import run_program
from tests.rendered_pods import RenderedPod, run_job, sandbox_available

pytestmark = pytest.mark.skipif(
    not sandbox_available(), reason="needs root, unshare and setpriv"
)


def _sandboxed(pod: RenderedPod, program: str) -> subprocess.CompletedProcess:
    command = pod.command_line()
    python = command.index(sys.executable)
    return subprocess.run(
        [*command[:python], sys.executable, "-c", program],
        env=pod.environment(BROKER_URL),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def queue_name():
    name = f"test.program-readonly.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(BROKER_URL, name)


def test_the_sandbox_is_read_only_but_for_tmp_and_runs_as_the_pod_user(tmp_path):
    run = run_program("dev")
    pod = RenderedPod(run, "WorkJob", tmp_path, sandboxed=True)

    probe = _sandboxed(
        pod,
        "import os, pathlib, sys\n"
        "pathlib.Path('/tmp/scratch').write_text('ok')\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    pathlib.Path(sys.prefix, 'written-by-test').write_text('no')\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n",
    )

    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[:2] == [
        f"{NON_ROOT_ID} {NON_ROOT_ID}",
        "Read-only file system",
    ]


def test_seed_and_work_run_on_a_read_only_root_as_a_numeric_user(tmp_path, queue_name):
    items = ["alpha", "beta", "gamma"]
    run = run_program("dev", {"queue": queue_name, "workSeconds": "0", "items": items})
    seed = RenderedPod(run, "SeedJob", tmp_path / "seed", sandboxed=True)
    work = RenderedPod(run, "WorkJob", tmp_path / "work", sandboxed=True)

    seeded = run_job(seed, BROKER_URL)
    worked = run_job(work, BROKER_URL)

    assert [code for code, _, _ in seeded] == [0], f"seed failed: {seeded}"
    assert all(code == 0 for code, _, _ in worked), f"a work pod failed: {worked}"
    printed = sorted(line for _, out, _ in worked for line in out.splitlines())
    assert printed == sorted(items)
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        left = connection.channel().queue_declare(queue_name, passive=True)
    finally:
        connection.close()
    assert left.method.message_count == 0
