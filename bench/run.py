"""`make bench`: run every measurement several times, interleaved, and report medians.

Each run measures the project's command and its comparison back to back on the
same machine, so that a ratio compares two figures taken under the same load; the
reported ratio is the median of the per-run ratios. Prints a table and writes
`bench/results.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench import measure, program, report, tools
from bench.queues import BenchQueues
from workqueue.localbroker import BrokerNotInstalled, local_or_private_broker

RESULTS_FILE = Path(__file__).resolve().parent / "results.json"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs of each figure")
    parser.add_argument(
        "--drain-pairs",
        type=int,
        default=2,
        help="drain pairs per run: the drain is short, so the load of other "
        "processes on the machine moves it most",
    )
    parser.add_argument("--seed-items", type=int, default=100_000)
    parser.add_argument("--drain-items", type=int, default=20_000)
    parser.add_argument(
        "--command-items", type=int, default=500, help="items for the command handler"
    )
    parser.add_argument(
        "--sample", type=int, default=50, help="items per run for amqp-tools loops"
    )
    parser.add_argument("--makespan-items", type=int, default=200)
    parser.add_argument("--makespan-workers", type=int, default=4)
    parser.add_argument("--work-seconds", type=float, default=0.05)
    parser.add_argument("--program-runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    return parser.parse_args(argv)


class Recorder:
    """Keeps every raw figure under its name and prints each as it comes."""

    def __init__(self):
        self.raw: dict[str, list[float]] = defaultdict(list)

    def take(self, name: str, measurement: Callable[[], float]) -> float:
        """Run one measurement, keep and print its figure, and return it."""
        value = measurement()
        self.raw[name].append(value)
        print(f"  {name:<28} {value:12.3f}", flush=True)
        return value

    def take_in_turn(self, run: int, measurements: dict[str, Callable[[], float]]):
        """Take a group of measurements back to back, starting with a different one
        each run, so that none always meets a broker still busy with another's
        queue."""
        names = list(measurements)
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            self.take(name, measurements[name])

    def ratio(self, name: str, numerator: str, denominator: str) -> None:
        """Record the ratio of the latest figures of two measurements."""
        self.raw[name].append(self.raw[numerator][-1] / self.raw[denominator][-1])


def _broker_runs(context: measure.Context, args, tutorial_ok: bool) -> Recorder:
    recorder = Recorder()
    seed_file = measure.write_items(context.scratch / "seed-items.txt", args.seed_items)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", flush=True)
        _seed_and_drain(context, args, recorder, run, seed_file)
        if tutorial_ok:
            _tutorial(context, args, recorder)
        _makespans(context, args, recorder)
    return recorder


def _seed_and_drain(context, args, recorder: Recorder, run: int, seed_file) -> None:
    count = args.seed_items
    recorder.take_in_turn(
        run,
        {
            "seed_project_per_s": lambda: measure.seed_project(
                context, seed_file, count
            ),
            "seed_plain_per_s": lambda: measure.seed_plain(context, seed_file, count),
            "seed_plain_async_per_s": lambda: measure.seed_plain(
                context, seed_file, count, how="publish-async"
            ),
        },
    )
    recorder.ratio("seed_ratio", "seed_project_per_s", "seed_plain_per_s")

    count = args.drain_items
    for repeat in range(args.drain_pairs):
        recorder.take_in_turn(
            run + repeat,
            {
                "drain_worker_per_s": lambda: measure.drain_worker(context, count),
                "drain_plain_per_s": lambda: measure.drain_plain(context, count),
            },
        )
        recorder.ratio("drain_ratio", "drain_worker_per_s", "drain_plain_per_s")

    recorder.take(
        "command_worker_ms",
        lambda: (
            1000 / measure.drain_worker(context, args.command_items, WORK_COMMAND="cat")
        ),
    )


def _tutorial(context, args, recorder: Recorder) -> None:
    recorder.take(
        "seed_amqp_publish_per_s", lambda: measure.seed_tutorial(context, args.sample)
    )
    recorder.take(
        "drain_amqp_consume_per_s",
        lambda: measure.drain_tutorial(
            context, args.sample, measure.PYTHON_ITEM_PROCESS
        ),
    )
    recorder.take(
        "command_amqp_consume_ms",
        lambda: 1000 / measure.drain_tutorial(context, args.sample, ("cat",)),
    )


def _makespans(context, args, recorder: Recorder) -> None:
    for mode in ("fine", "coarse"):
        job = measure.makespan(
            context,
            mode,
            args.makespan_items,
            args.makespan_workers,
            args.work_seconds,
        )
        recorder.take(f"makespan_{mode}_s", lambda job=job: job.seconds)
        recorder.raw[f"makespan_{mode}_start_up_s"].append(job.start_up)
        recorder.raw[f"makespan_{mode}_tail_s"].append(job.tail)
        recorder.raw["makespan_ideal_s"] = [job.ideal]


def _program_runs(runs: int) -> dict[str, object]:
    stacks = program.committed_stacks()
    per_stack: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(runs):
            for stack in stacks:
                figures = program.evaluate_once(stack)
                for key, value in figures.items():
                    per_stack.setdefault(stack, defaultdict(list))[key].append(value)
                print(f"  program_eval_s[{stack}]{'':<12} {figures['eval_s']:12.3f}")
    except program.ProgramUnavailable as error:
        return {"program_eval_s": None, "program_eval_reason": str(error)}
    if not stacks:
        return {"program_eval_s": None, "program_eval_reason": "no committed stack"}
    medians = {
        stack: {key: statistics.median(values) for key, values in figures.items()}
        for stack, figures in per_stack.items()
    }
    slowest = max(medians, key=lambda stack: medians[stack]["eval_s"])
    return {
        "program_eval_s": medians[slowest]["eval_s"],
        "program_eval_slowest_stack": slowest,
        "program_eval": {
            "median": medians,
            "raw": {stack: dict(figures) for stack, figures in per_stack.items()},
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns the process exit code."""
    args = _arguments(argv)
    started = time.monotonic()
    tools_problem = tools.amqp_tools_missing()
    if tools_problem:
        print(f"WARNING: {tools_problem}; the amqp-tools figures are left out.")
    try:
        url, node = local_or_private_broker()
    except BrokerNotInstalled as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1

    scratch = Path(tempfile.mkdtemp(prefix="workqueue-bench-"))
    context = measure.Context(url, BenchQueues(url), scratch)
    try:
        machine = tools.machine(url)
        recorder = _broker_runs(context, args, tutorial_ok=tools_problem is None)
    except measure.BenchFailed as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    finally:
        context.queues.delete_all()
        if node is not None:
            node.stop()
    shutil.rmtree(scratch, ignore_errors=True)

    print("program evaluation under mocks", flush=True)
    program_figures = _program_runs(args.program_runs)
    results = report.results(
        args,
        machine,
        recorder.raw,
        program_figures,
        tools_problem,
        time.monotonic() - started,
    )
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.table(results))
    print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
