"""How long the Pulumi program takes to evaluate under mocks, per committed stack.

Reuses the tests' harness (`tests/pulumi_harness.py`), which runs `__main__.py`
with Pulumi's mocks and a stack's configuration. Each measurement is a fresh
process, so that importing the program's modules and providers counts, as it does
in a real `pulumi preview`; `python -m bench.program STACK` prints one measurement
as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The harness that runs the program under mocks; the tests own it.
HARNESS = ROOT / "tests" / "pulumi_harness.py"
#: Longest one evaluation may take before the bench gives up, in seconds.
EVALUATION_TIMEOUT_SECONDS = 120


class ProgramUnavailable(RuntimeError):
    """The program or its harness is missing or fails; the message says which."""


def committed_stacks() -> list[str]:
    """The stacks with a committed Pulumi.<stack>.yaml."""
    return sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))


def evaluate_once(stack: str) -> dict[str, float]:
    """Evaluate the program for `stack` in a fresh process.

    Returns:
        `eval_s`: the first evaluation (cold: the program's imports included);
        `warm_s`: a second evaluation in the same process; `harness_import_s`:
        importing Pulumi and the mocks before either.
    Raises:
        ProgramUnavailable: no harness or no program, or the evaluation failed.
    """
    if not HARNESS.exists():
        raise ProgramUnavailable(f"no harness at {HARNESS.relative_to(ROOT)}")
    if not (ROOT / "__main__.py").exists():
        raise ProgramUnavailable("no __main__.py: the Pulumi program is not there")
    done = subprocess.run(
        [sys.executable, "-m", "bench.program", stack],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=EVALUATION_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ProgramUnavailable(f"the {stack} stack did not evaluate: {last_line}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "worker"), str(ROOT)]),
    }


def _measure(stack: str) -> dict[str, float]:
    started = time.perf_counter()
    from tests.pulumi_harness import run_program

    imported = time.perf_counter()
    run_program(stack)
    evaluated = time.perf_counter()
    run_program(stack)
    again = time.perf_counter()
    return {
        "harness_import_s": imported - started,
        "eval_s": evaluated - imported,
        "warm_s": again - evaluated,
    }


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1])))
