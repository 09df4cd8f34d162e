"""The seed and work Jobs' containers as rendered by the program, run as local
processes the way the Job controller would run their pods.

Only what a cluster supplies is translated: the image's `python` is this
interpreter with worker/ on its path, a ConfigMap volume is a directory with its
files, and the Secret reference for AMQP_URL resolves to a local broker's URL.
A pod may run in a sandbox like the cluster's: its own user and a read-only root
filesystem with a fresh /tmp (a private mount namespace; root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from components.pods import NON_ROOT_ID
from tests.pulumi_harness import ROOT, ProgramRun

#: How long one pod's process may run before the test gives up on it.
POD_TIMEOUT_SECONDS = 120
#: Where the sandbox mounts the pod's ConfigMap volumes (read-only).
SANDBOX_VOLUMES = "/mnt"
#: Inside a private mount namespace: the volumes on a read-only tmpfs, the root
#: filesystem read-only, a fresh /tmp, then the pod's command as the pod's user. A
#: checkout under /tmp (the second argument, else empty) is mounted back, read-only,
#: at its own path on the fresh /tmp, since the pods run the code from there.
SANDBOX_SCRIPT = f"""
set -eu
count=$1; shift
mount -t tmpfs -o size=16m,mode=0755 volumes {SANDBOX_VOLUMES}
while [ "$count" -gt 0 ]; do
  cp -R "$1" {SANDBOX_VOLUMES}/; shift; count=$((count - 1))
done
checkout=$1; shift
if [ -n "$checkout" ]; then
  mkdir {SANDBOX_VOLUMES}/.checkout
  mount --bind "$checkout" {SANDBOX_VOLUMES}/.checkout
fi
mount -o remount,ro {SANDBOX_VOLUMES}
mount -o remount,bind,ro /
mount -t tmpfs -o size=64m,mode=1777 tmp /tmp
if [ -n "$checkout" ]; then
  mkdir -p "$checkout"
  mount -n --move {SANDBOX_VOLUMES}/.checkout "$checkout"
  mount -n -o remount,bind,ro "$checkout"
fi
exec setpriv --reuid={NON_ROOT_ID} --regid={NON_ROOT_ID} --clear-groups "$@"
"""


def sandbox_available() -> bool:
    """Whether this machine can run a pod on a read-only root as another user."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def dockerfile_environment() -> dict[str, str]:
    """The ENV the worker's Dockerfile sets, as the image's processes see it."""
    text = (ROOT / "worker/Dockerfile").read_text().replace("\\\n", " ")
    environment = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.split()[1:]:
                key, _, value = pair.partition("=")
                environment[key] = value
    return environment


class RenderedPod:
    """One Job's container, made runnable here."""

    def __init__(
        self,
        run: ProgramRun,
        component: str,
        scratch: Path,
        sandboxed: bool = False,
    ):
        parent = run.one(f"workqueue:index:{component}")
        self.job = next(
            r for r in run.children_of(parent) if r.type == "kubernetes:batch/v1:Job"
        )
        self.spec = self.job.inputs["spec"]
        pod = self.spec["template"]["spec"]
        (self.container,) = pod["containers"]
        self.run = run
        self.sandboxed = sandboxed
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
            here = str(directory)
            if self.sandboxed:
                here = f"{SANDBOX_VOLUMES}/{directory.name}"
            local = [arg.replace(mount_path, here) for arg in local]
        if not self.sandboxed:
            return local
        sources = [str(directory) for directory in self.mounts.values()]
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SANDBOX_SCRIPT,
            "sandbox",
            str(len(sources)),
            *sources,
            str(ROOT) if ROOT.is_relative_to("/tmp") else "",
            *local,
        ]

    def environment(self, broker_url: str) -> dict[str, str]:
        """The rendered environment; the Secret reference resolves locally."""
        credentials = {
            r.state["metadata"]["name"]: r
            for r in self.run.of_type("kubernetes:core/v1:Secret")
        }
        environment = {
            **(dockerfile_environment() if self.sandboxed else {}),
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


def run_job(pod: RenderedPod, broker_url: str) -> list[tuple[int, str, str]]:
    """Run pods as the Job controller would and return each one's exit code,
    stdout and stderr.

    With completions: waves of at most `parallelism` pods until that many have
    succeeded, or until an exit code the pod failure policy fails the Job on.
    Without (fine mode): `parallelism` pods, each until it ends.
    """
    completions = pod.spec.get("completions")
    parallelism = pod.spec["parallelism"]
    if completions is None:
        return wave(pod, broker_url, parallelism)
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
        finished += wave(pod, broker_url, min(parallelism, completions - succeeded))
    return finished


def wave(pod: RenderedPod, broker_url: str, count: int) -> list[tuple[int, str, str]]:
    processes = [pod.start(broker_url) for _ in range(count)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=POD_TIMEOUT_SECONDS)
        results.append((process.returncode, stdout, stderr))
    return results
