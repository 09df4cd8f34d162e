"""List the committed Pulumi stacks for the workflows, from their Pulumi.<stack>.yaml.

This is the only place the workflows learn which stacks exist: adding or removing a
stack file is all it takes to add or remove its preview, deployment and teardown.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

#: The stack that is deployed last, behind the approval environment of the same name.
PRODUCTION_STACK = "prod"

#: Stack names the workflows accept. They end up in shell commands, concurrency group
#: names and environment names, so anything else is refused rather than quoted.
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

STACK_FILE = re.compile(r"^Pulumi\.(?P<stack>.+)\.yaml$")


def committed_stacks(project_dir: Path) -> list[str]:
    """Return the stack names that have a ``Pulumi.<stack>.yaml`` file, sorted.

    Parameters:
      project_dir: the directory that holds ``Pulumi.yaml``.

    Returns:
      The stack names, in alphabetical order; empty when there is no stack file.

    Raises:
      ValueError: a stack file's name holds a stack name the workflows refuse.
    """
    stacks = []
    for path in project_dir.iterdir():
        match = STACK_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        stack = match["stack"]
        if not STACK_NAME.match(stack):
            raise ValueError(
                f"{path.name}: stack name {stack!r} must match {STACK_NAME.pattern}"
            )
        stacks.append(stack)
    return sorted(stacks)


def deployment_plan(stacks: list[str]) -> dict[str, str]:
    """Split the stacks into the workflows' outputs, each a JSON string.

    Returns:
      ``stacks``: every stack; ``staged``: every stack but the production one,
      deployed first; ``production``: ``"prod"`` when that stack exists, else ``""``.
    """
    staged = [stack for stack in stacks if stack != PRODUCTION_STACK]
    production = PRODUCTION_STACK if PRODUCTION_STACK in stacks else ""
    return {
        "stacks": json.dumps(stacks),
        "staged": json.dumps(staged),
        "production": production,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", type=Path, default=Path())
    parser.add_argument(
        "--require",
        metavar="STACK",
        help="exit 1 unless STACK is one of the committed stacks",
    )
    args = parser.parse_args(argv)

    try:
        stacks = committed_stacks(args.project_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.require is not None and args.require not in stacks:
        print(
            f"error: stack {args.require!r} has no Pulumi.{args.require}.yaml;"
            f" committed stacks: {', '.join(stacks) or 'none'}",
            file=sys.stderr,
        )
        return 1

    lines = [f"{key}={value}" for key, value in deployment_plan(stacks).items()]
    print("\n".join(lines))
    github_output = os.environ.get("GITHUB_OUTPUT")
    if github_output:
        with open(github_output, "a", encoding="utf-8") as outputs:
            outputs.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
