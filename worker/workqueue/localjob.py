"""Worker processes started the way Kubernetes' Job controller starts a Job's pods.

`make demo` and the tests use it to run the real `work` command as separate
processes, with the controller's rules for completions, parallelism, back-off limit
and the pod failure policy's fail-fast exit code.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from workqueue import exitcodes

#: How often the controller looks at its pods, in seconds.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class PodResult:
    """One finished worker process."""

    number: int
    exit_code: int
    seconds: float
    log_path: Path


@dataclass
class JobResult:
    """What the Job controller would report when the Job ended."""

    pods: list[PodResult]
    succeeded: int
    failed: int
    complete: bool
    reason: str


class LocalJob:
    """Runs `python -m workqueue work` as pods of a Job would run.

    With `completions` (coarse mode) it keeps starting pods until that many exited 0,
    at most `parallelism` at a time. Without it (fine mode) it starts `parallelism`
    pods, replaces a failed one only while none has succeeded, and ends when all have
    exited. Either way the Job fails once more than `backoff_limit` pods failed, or
    at once when a pod exits with `exitcodes.BAD_CONFIG`.
    """

    def __init__(
        self,
        environment: Mapping[str, str],
        log_dir: Path,
        parallelism: int,
        completions: int | None = None,
        backoff_limit: int = 6,
        on_pod_exit: Callable[[PodResult, JobResult], None] | None = None,
    ):
        self._environment = dict(environment)
        self._log_dir = log_dir
        self._parallelism = parallelism
        self._completions = completions
        self._backoff_limit = backoff_limit
        self._on_pod_exit = on_pod_exit
        self.running: dict[int, tuple[subprocess.Popen, float]] = {}

    def run(self) -> JobResult:
        """Run the Job to its end and return its result."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        result = JobResult(pods=[], succeeded=0, failed=0, complete=False, reason="")
        started = 0
        while True:
            while self._wants_another_pod(result):
                started += 1
                self._start_pod(started)
            if not self.running and self._is_over(result):
                break
            time.sleep(POLL_SECONDS)
            for number, (process, began) in list(self.running.items()):
                if process.poll() is None:
                    continue
                del self.running[number]
                pod = PodResult(
                    number,
                    process.returncode,
                    time.monotonic() - began,
                    self._log_path(number),
                )
                result.pods.append(pod)
                if pod.exit_code == exitcodes.OK:
                    result.succeeded += 1
                else:
                    result.failed += 1
                    if pod.exit_code == exitcodes.BAD_CONFIG:
                        result.reason = (
                            f"pod {number} exited {pod.exit_code}: bad settings"
                        )
                if self._on_pod_exit is not None:
                    self._on_pod_exit(pod, result)
        result.complete = not result.reason
        return result

    def kill_pod(self, number: int, signal_number: int) -> None:
        """Send a signal to a running pod, as a node failure or an eviction would."""
        process, _began = self.running[number]
        process.send_signal(signal_number)

    def _wants_another_pod(self, result: JobResult) -> bool:
        if self._is_over(result):
            return False
        if len(self.running) >= self._parallelism:
            return False
        if self._completions is None:
            return result.succeeded == 0
        return result.succeeded + len(self.running) < self._completions

    def _is_over(self, result: JobResult) -> bool:
        if result.reason:
            return True
        if result.failed > self._backoff_limit:
            result.reason = f"{result.failed} pods failed, over the back-off limit"
            return True
        if self._completions is None:
            return result.succeeded > 0
        return result.succeeded >= self._completions

    def _log_path(self, number: int) -> Path:
        return self._log_dir / f"pod-{number}.log"

    def _start_pod(self, number: int) -> None:
        with self._log_path(number).open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "workqueue", "work"],
                env=self._environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.running[number] = (process, time.monotonic())
