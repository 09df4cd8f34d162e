"""The program and the image agree on their interface: the seed and work
containers' command, arguments and environment, exactly as rendered, run as local
processes against the local broker and process every item.

Only what a cluster would supply is translated: the image's `python` is this
interpreter with worker/ on its path, a ConfigMap volume is a directory with its
files, and the Secret reference for AMQP_URL resolves to the local broker's URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest

from tests.conftest import BROKER_URL, delete_queues
from tests.pulumi_harness import ROOT, ProgramRun, run_program

#: How long one pod's process may run before the test gives up on it.
POD_TIMEOUT_SECONDS = 120


def _broker_is_up() -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(BROKER_URL)).close()
    except pika.exceptions.AMQPConnectionError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not (ROOT / "worker/workqueue/__main__.py").exists(),
    reason="the worker package is not there yet",
)


class RenderedPod:
    """One Job's container, made runnable here."""

    def __init__(self, run: ProgramRun, component: str, scratch: Path):
        parent = run.one(f"workqueue:index:{component}")
        self.job = next(
            r for r in run.children_of(parent) if r.type == "kubernetes:batch/v1:Job"
        )
        self.spec = self.job.inputs["spec"]
        pod = self.spec["template"]["spec"]
        (self.container,) = pod["containers"]
        self.run = run
        self.mounts = self._mount_config_maps(pod, scratch)

    def _mount_config_maps(self, pod: dict, scratch: Path) -> dict[str, Path]:
        """Each ConfigMap volume as a local directory; mount path -> directory."""
        config_maps = {
            r.state["metadata"]["name"]: r.inputs["data"]
            for r in self.run.of_type("kubernetes:core/v1:ConfigMap")
        }
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" not in volume:
                continue
            directory = scratch / mount["name"]
            directory.mkdir(parents=True)
            for key, text in config_maps[volume["configMap"]["name"]].items():
                (directory / key).write_text(text)
            mounts[mount["mountPath"]] = directory
        return mounts

    def command_line(self) -> list[str]:
        command = [*self.container["command"], *self.container["args"]]
        assert command[0] == "python", f"the image runs {command[0]}, not python"
        local = [sys.executable, *command[1:]]
        for mount_path, directory in self.mounts.items():
            local = [arg.replace(mount_path, str(directory)) for arg in local]
        return local

    def environment(self, broker_url: str) -> dict[str, str]:
        """The rendered environment; the Secret reference resolves locally."""
        credentials = {
            r.state["metadata"]["name"]: r
            for r in self.run.of_type("kubernetes:core/v1:Secret")
        }
        environment = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT / "worker"),
        }
        for variable in self.container["env"]:
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
                continue
            reference = variable["valueFrom"]["secretKeyRef"]
            secret = credentials[reference["name"]].inputs["stringData"]
            assert reference["key"] in secret, f"{variable['name']} names no key"
            environment[variable["name"]] = broker_url
        return environment

    def start(self, broker_url: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command_line(),
            env=self.environment(broker_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _run_job(pod: RenderedPod, broker_url: str) -> list[tuple[int, str, str]]:
    """Run pods as the Job controller would and return each one's exit code,
    stdout and stderr.

    With completions: waves of at most `parallelism` pods until that many have
    succeeded, or until an exit code the pod failure policy fails the Job on.
    Without (fine mode): `parallelism` pods, each until it ends.
    """
    completions = pod.spec.get("completions")
    parallelism = pod.spec["parallelism"]
    if completions is None:
        return _wave(pod, broker_url, parallelism)
    fail_job_codes = {
        code
        for rule in pod.spec["podFailurePolicy"]["rules"]
        if rule["action"] == "FailJob"
        for code in rule["onExitCodes"]["values"]
    }
    finished: list[tuple[int, str, str]] = []
    while (succeeded := sum(code == 0 for code, _, _ in finished)) < completions:
        if any(code in fail_job_codes for code, _, _ in finished):
            return finished
        assert len(finished) < 2 * completions, f"pods keep failing: {finished}"
        finished += _wave(pod, broker_url, min(parallelism, completions - succeeded))
    return finished


def _wave(pod: RenderedPod, broker_url: str, count: int) -> list[tuple[int, str, str]]:
    processes = [pod.start(broker_url) for _ in range(count)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=POD_TIMEOUT_SECONDS)
        results.append((process.returncode, stdout, stderr))
    return results


@pytest.fixture
def queue_name():
    name = f"test.program-interface.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(BROKER_URL, name)


@pytest.mark.skipif(not _broker_is_up(), reason="needs the local RabbitMQ")
@pytest.mark.parametrize("mode", ["coarse", "fine"])
def test_rendered_seed_and_work_pods_process_every_item(tmp_path, queue_name, mode):
    run = run_program("dev", {"queue": queue_name, "workSeconds": "0", "mode": mode})
    seed = RenderedPod(run, "SeedJob", tmp_path / "seed")
    work = RenderedPod(run, "WorkJob", tmp_path / "work")
    items = run.config["items"]

    seeded = _run_job(seed, BROKER_URL)
    worked = _run_job(work, BROKER_URL)

    assert [code for code, _, _ in seeded] == [0], f"seed failed: {seeded}"
    assert all(code == 0 for code, _, _ in worked), f"a work pod failed: {worked}"
    printed = [line for _, stdout, _ in worked for line in stdout.splitlines()]
    assert sorted(printed) == sorted(items), f"processed {printed}, seeded {items}"
    if mode == "coarse":
        assert len(worked) == len(items), "coarse mode runs one pod per item"
    depths = _depths(queue_name)
    assert depths == (0, 0), f"left in the queue and its dead-letter queue: {depths}"


def _depths(queue: str) -> tuple[int, int]:
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        return tuple(
            channel.queue_declare(name, passive=True).method.message_count
            for name in (queue, f"{queue}.dead")
        )
    finally:
        connection.close()
