"""The bench's results: medians and targets for `results.json`, and the table."""

from __future__ import annotations

import statistics

from bench import measure

#: The issue's targets: figure, comparison, bound.
TARGETS = {
    "seed_ratio": (">=", 0.5),
    "drain_ratio": (">=", 0.5),
    "makespan_ratio": ("<=", 1.1),
    "program_eval_s": ("<=", 1.0),
}

#: Table rows: figure in the raw results, what it is, its unit.
ROWS = (
    ("seed_project_per_s", "seed: `workqueue seed`, confirms, quorum queue", "items/s"),
    ("seed_plain_per_s", "seed: plain pika loop, no confirms, same queue", "items/s"),
    (
        "seed_plain_async_per_s",
        "seed: plain pika, no confirms, async, all frames at once",
        "items/s",
    ),
    ("seed_amqp_publish_per_s", "seed: one `amqp-publish -p` per item", "items/s"),
    ("seed_ratio", "**seed_ratio** (seeder / plain loop)", ""),
    (
        "drain_worker_per_s",
        "drain: fine worker, no-op handler, PREFETCH={p}",
        "items/s",
    ),
    ("drain_plain_per_s", "drain: plain pika consumer, prefetch {p}", "items/s"),
    (
        "drain_amqp_consume_per_s",
        "drain: `amqp-consume -c 1` + Python per item",
        "items/s",
    ),
    ("drain_ratio", "**drain_ratio** (worker / plain consumer)", ""),
    ("command_worker_ms", "command: fine worker, `WORK_COMMAND=cat`", "ms/item"),
    ("command_amqp_consume_ms", "command: `amqp-consume -c 1 cat`", "ms/item"),
    ("makespan_fine_s", "makespan: {n} x {w} ms, {k} fine workers", "s"),
    ("makespan_coarse_s", "makespan: {n} x {w} ms, {k} coarse workers", "s"),
    ("makespan_ideal_s", "makespan: ideal ceil({n}/{k}) x {w} ms", "s"),
    (
        "makespan_fine_start_up_s",
        "makespan, fine: first worker start to first item",
        "s",
    ),
    ("makespan_fine_tail_s", "makespan, fine: last item to last worker exit", "s"),
    ("makespan_ratio", "**makespan_ratio** (fine / ideal)", ""),
    ("makespan_coarse_ratio", "makespan_coarse_ratio (coarse / ideal)", ""),
    ("program_eval_s", "**program_eval_s** (slowest stack, under mocks)", "s"),
)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def results(args, machine, raw, program_figures, tools_problem, seconds) -> dict:
    """Everything `results.json` holds: headline figures, medians, raw runs."""
    ideal = raw["makespan_ideal_s"][0]
    raw = dict(raw)
    raw["makespan_ratio"] = [value / ideal for value in raw["makespan_fine_s"]]
    raw["makespan_coarse_ratio"] = [value / ideal for value in raw["makespan_coarse_s"]]
    medians = {name: _median(values) for name, values in raw.items()}
    headline = {
        "seed_ratio": medians["seed_ratio"],
        "drain_ratio": medians["drain_ratio"],
        "makespan_ratio": medians["makespan_ratio"],
        "program_eval_s": program_figures["program_eval_s"],
    }
    targets = {}
    for name, (comparison, bound) in TARGETS.items():
        value = headline[name]
        met = None
        if value is not None:
            met = value >= bound if comparison == ">=" else value <= bound
        targets[name] = {"target": f"{comparison} {bound}", "value": value, "met": met}
    return {
        **headline,
        "targets": targets,
        "medians": medians,
        **{
            key: value
            for key, value in program_figures.items()
            if key != "program_eval_s"
        },
        "raw": raw,
        "settings": {
            "runs": args.runs,
            "drain_pairs_per_run": args.drain_pairs,
            "seed_items": args.seed_items,
            "drain_items": args.drain_items,
            "command_items": args.command_items,
            "amqp_tools_sample": args.sample,
            "prefetch_short_items": measure.SHORT_ITEM_PREFETCH,
            "makespan_items": args.makespan_items,
            "makespan_workers": args.makespan_workers,
            "work_seconds": args.work_seconds,
            "makespan_prefetch": "default (1)",
            "log_level": "default (INFO)",
            "program_runs": args.program_runs,
        },
        "amqp_tools_missing": tools_problem,
        "machine": machine,
        "bench_seconds": round(seconds, 1),
    }


def table(results: dict) -> str:
    """A Markdown table of the medians, with the spread over runs and the targets."""
    settings = results["settings"]
    labels = {
        "p": settings["prefetch_short_items"],
        "n": settings["makespan_items"],
        "w": round(settings["work_seconds"] * 1000),
        "k": settings["makespan_workers"],
    }
    medians = {**results["medians"], "program_eval_s": results["program_eval_s"]}
    lines = [
        "| figure | median | unit | runs (min - max) | target |",
        "|---|---:|---|---|---|",
    ]
    for name, label, unit in ROWS:
        value = medians.get(name)
        values = results["raw"].get(name) or []
        if name == "program_eval_s":
            values = _program_values(results)
        spread = f"{_number(min(values))} - {_number(max(values))}" if values else ""
        target = results["targets"].get(name)
        verdict = ""
        if target is not None:
            state = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
            verdict = f"{target['target']}: {state}"
        lines.append(
            f"| {label.format(**labels)} | {_number(value)} | {unit} | {spread} "
            f"| {verdict} |"
        )
    if results["program_eval_s"] is None:
        lines.append(f"\nprogram_eval_s: {results.get('program_eval_reason')}")
    return "\n".join(lines)


def _program_values(results: dict) -> list[float]:
    stack = results.get("program_eval_slowest_stack")
    if stack is None:
        return []
    return results["program_eval"]["raw"][stack]["eval_s"]


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
