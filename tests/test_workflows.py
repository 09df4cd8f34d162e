"""The GitHub Actions workflows: schema-valid, and shaped as the README says.

Pull requests are tested, then previewed on every committed stack; main deploys dev,
then prod behind approval; destroy runs only on a typed confirmation.
"""

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
STACKS_SCRIPT = ROOT / ".github" / "scripts" / "stacks.py"
OPERATING_DOC = ROOT / "README.md"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml"))

#: The reusable workflows every other workflow goes through.
PULUMI_WORKFLOW = "./.github/workflows/pulumi.yml"
STACKS_WORKFLOW = "./.github/workflows/stacks.yml"

#: An exact release tag: v1.2.3. A moving major tag (v7), a branch or no ref is refused.
RELEASE_TAG = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+\.\d+\.\d+$")

#: An image with an exact version tag (rabbitmq:3.13.7-management), maybe a digest too.
VERSIONED_IMAGE = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")

#: Longest a GitHub-hosted runner keeps one job, in minutes.
GITHUB_HOSTED_JOB_MINUTES = 360

#: What `pulumi up` may spend on the broker's readiness and the image build before
#: the seed Job starts: Kubernetes' await default of 10 minutes, plus the build.
BROKER_AND_IMAGE_SECONDS = 30 * 60

#: The only grants a job may hold, and the one job that may write to pull requests.
READ_ONLY = {"contents": "read"}
PREVIEW_GRANT = {"contents": "read", "pull-requests": "write"}


@cache
def workflow(name: str) -> dict:
    """The parsed workflow file `name`, with its `on:` key under "on" (not True)."""
    document = yaml.safe_load((WORKFLOWS_DIR / name).read_text())
    if True in document:
        document["on"] = document.pop(True)
    return document


def steps_of(document: dict) -> list[dict]:
    """Every step of every job in a workflow."""
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def expression(text: object, **contexts: object) -> object:
    """Evaluate a workflow value holding `${{ ... }}` expressions, with `contexts`.

    A value that is one expression gives its result; expressions inside a longer
    string are replaced by their results; a value that is no string (true) is
    itself. Covers the subset these workflows use: context.property, string
    literals, ==, !=, &&, ||, ! and format(). Unset properties read as '', as on
    GitHub.
    """
    if not isinstance(text, str):
        return text
    whole = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.S)
    if whole and "${{" not in whole[1] and "}}" not in whole[1]:
        return _evaluate(whole[1], contexts)
    assert "${{" in text, f"no expression in {text!r}"
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda part: str(_evaluate(part[1], contexts)), text
    )


def _evaluate(source: str, contexts: dict[str, object]) -> object:
    source = " ".join(source.split())
    source = source.replace("&&", " and ").replace("||", " or ")
    source = re.sub(r"!(?!=)", " not ", source)
    source = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", source))

    def github_format(template: str, *values: object) -> str:
        return re.sub(r"\{(\d+)\}", lambda match: str(values[int(match[1])]), template)

    class Context(SimpleNamespace):
        def __getattr__(self, _name: str) -> str:
            return ""

    namespace = {name: Context(**values) for name, values in contexts.items()}
    namespace["format"] = github_format
    # Only this repository's own workflow files reach this eval.
    return eval(source, {"__builtins__": {}}, namespace)  # noqa: S307


def run_stacks_script(project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run .github/scripts/stacks.py on `project_dir`, as the workflows do."""
    environment = {
        key: value for key, value in os.environ.items() if key != "GITHUB_OUTPUT"
    }
    return subprocess.run(
        [sys.executable, str(STACKS_SCRIPT), "--project-dir", str(project_dir), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=30,
    )


def script_outputs(project_dir: Path) -> dict[str, str]:
    """The key=value lines the stacks script writes for the workflows."""
    done = run_stacks_script(project_dir)
    assert done.returncode == 0, f"stacks.py failed: {done.stderr}"
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def committed_stack_files() -> list[str]:
    """The stacks of this repository, read from its Pulumi.<stack>.yaml files."""
    return sorted(
        path.name[len("Pulumi.") : -len(".yaml")] for path in ROOT.glob("Pulumi.*.yaml")
    )


def pulumi_calls() -> list[tuple[str, str, dict]]:
    """(workflow file, job id, job) for every job that calls the Pulumi workflow."""
    return [
        (path.name, job_id, job)
        for path in WORKFLOW_FILES
        for job_id, job in workflow(path.name)["jobs"].items()
        if job.get("uses") == PULUMI_WORKFLOW
    ]


def run_step_script(step: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one workflow `run:` step with bash, as the runner would, with `env`."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        check=False,
        timeout=30,
    )


# Schema


def test_the_workflows_are_there():
    names = {path.name for path in WORKFLOW_FILES}

    assert {"pull-request.yml", "deploy.yml", "destroy.yml"} <= names, f"found {names}"


def check_schema(schema: str, path: Path) -> subprocess.CompletedProcess:
    """Validate `path` with check-jsonschema's built-in `schema`, offline."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            schema,
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
@pytest.mark.parametrize(
    "schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"]
)
def test_workflow_validates_against_the_github_workflow_schema(path, schema):
    done = check_schema(schema, path)

    assert done.returncode == 0, f"{path.name} fails {schema}:\n{done.stdout}"


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    step: []\n"
    )

    done = check_schema("vendor.github-workflows", broken)

    assert done.returncode == 1, f"a job with `step:` passed the schema: {done.stdout}"


def test_dependabot_keeps_the_action_pins_current():
    dependabot = ROOT / ".github" / "dependabot.yml"
    updates = yaml.safe_load(dependabot.read_text())["updates"]

    done = check_schema("vendor.dependabot", dependabot)

    assert done.returncode == 0, f"dependabot.yml fails its schema: {done.stdout}"
    assert "github-actions" in {update["package-ecosystem"] for update in updates}


# The stack list


def test_the_stack_list_is_every_committed_stack_file():
    outputs = script_outputs(ROOT)

    assert yaml.safe_load(outputs["stacks"]) == committed_stack_files()


def test_an_added_stack_file_is_previewed_and_deployed_before_production(tmp_path):
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        (tmp_path / name).write_text("config: {}\n")
    (tmp_path / "Pulumi.staging.yaml").write_text("config: {}\n")

    outputs = script_outputs(tmp_path)

    assert yaml.safe_load(outputs["stacks"]) == ["dev", "prod", "staging"]
    assert yaml.safe_load(outputs["staged"]) == ["dev", "staging"]
    assert outputs["production"] == "prod"


def test_a_removed_production_stack_file_is_no_longer_deployed(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: workqueue\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")

    outputs = script_outputs(tmp_path)

    assert yaml.safe_load(outputs["stacks"]) == ["dev"]
    assert outputs["production"] == "", "prod is deployed without its stack file"


def test_a_stack_name_unsafe_for_the_workflows_is_refused(tmp_path):
    (tmp_path / "Pulumi.dev;rm -rf.yaml").write_text("config: {}\n")

    done = run_stacks_script(tmp_path)

    assert done.returncode == 1, f"an unsafe stack name was listed: {done.stdout}"
    assert "must match" in done.stderr


def test_the_stack_list_reaches_the_jobs_through_github_output(tmp_path):
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    github_output = tmp_path / "github-output"
    github_output.write_text("earlier=kept\n")

    done = subprocess.run(
        [sys.executable, str(STACKS_SCRIPT), "--project-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "GITHUB_OUTPUT": str(github_output)},
        check=False,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert github_output.read_text().splitlines() == [
        "earlier=kept",
        'stacks=["dev"]',
        'staged=["dev"]',
        "production=",
    ]
    outputs = workflow("stacks.yml")["on"]["workflow_call"]["outputs"]
    assert set(outputs) == {"stacks", "staged", "production"}


def test_no_workflow_names_a_stack_itself():
    literal_stacks = []
    for path_name, job_id, job in pulumi_calls():
        for key in ("stack", "environment"):
            value = str(job["with"][key])
            if "${{" not in value:
                literal_stacks.append(f"{path_name}:{job_id} {key}={value}")
    for path in WORKFLOW_FILES:
        for job_id, job in workflow(path.name)["jobs"].items():
            matrix = job.get("strategy", {}).get("matrix", {})
            if "stack" in matrix and not str(matrix["stack"]).startswith("${{"):
                literal_stacks.append(f"{path.name}:{job_id} matrix={matrix['stack']}")

    assert literal_stacks == [], f"stacks named outside stacks.py: {literal_stacks}"


# Pull requests


def test_pull_requests_preview_every_stack_file():
    pull_request = workflow("pull-request.yml")
    preview = pull_request["jobs"]["preview"]
    stacks_job = pull_request["jobs"]["stacks"]

    assert "pull_request" in pull_request["on"]
    assert stacks_job["uses"] == STACKS_WORKFLOW
    assert "stacks" in preview["needs"]
    assert preview["strategy"]["matrix"]["stack"] == (
        "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    ), "the preview matrix is not the full stack list"
    assert preview["uses"] == PULUMI_WORKFLOW
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["stack"] == "${{ matrix.stack }}"
    assert committed_stack_files() == yaml.safe_load(script_outputs(ROOT)["stacks"])


def test_previews_comment_on_the_pull_request_and_edit_their_own_comment():
    pulumi_steps = [
        step
        for step in steps_of(workflow("pulumi.yml"))
        if step.get("uses", "").startswith("pulumi/actions@")
        and "command" in step["with"]
    ]
    assert len(pulumi_steps) == 1, (
        "expected one pulumi/actions step that runs a command"
    )
    options = pulumi_steps[0]["with"]

    assert expression(options["comment-on-pr"], inputs={"command": "preview"}) is True
    assert expression(options["comment-on-pr"], inputs={"command": "up"}) is False
    assert options["edit-pr-comment"] is True
    assert expression(options["command"], inputs={"command": "preview"}) == "preview"


def test_failing_lint_or_tests_stop_the_previews():
    jobs = workflow("pull-request.yml")["jobs"]
    preview = jobs["preview"]
    condition = preview.get("if", "")

    assert {"lint", "test"} <= set(preview["needs"]), (
        f"preview needs {preview['needs']}"
    )
    for status_function in ("always()", "failure()", "cancelled()", "!success()"):
        assert status_function not in condition, (
            f"preview's if: uses {status_function}, so it may run after failed tests"
        )
    assert any(
        step.get("run", "").endswith("make test") for step in jobs["test"]["steps"]
    )
    assert any(step.get("run") == "make lint" for step in jobs["lint"]["steps"])


def test_the_tests_get_a_broker_on_localhost_and_debians_rabbitmq_server():
    test_job = workflow("pull-request.yml")["jobs"]["test"]
    broker = test_job["services"]["rabbitmq"]
    installs = [
        step["run"]
        for step in test_job["steps"]
        if "apt-get install" in step.get("run", "") and "rabbitmq-server" in step["run"]
    ]

    assert "5672:5672" in broker["ports"], "the broker is not on localhost:5672"
    assert "--health-cmd" in broker["options"], (
        "the tests could start before the broker"
    )
    assert len(installs) == 1, "Debian's rabbitmq-server is not installed for the tests"
    script = installs[0]
    assert script.index("exit 101") < script.index("apt-get install"), (
        "the packaged broker would start and take port 5672 from the service container"
    )
    assert script.index("rm -f /usr/sbin/policy-rc.d") > script.index("apt-get install")


def test_forks_do_not_get_previews_they_cannot_run():
    condition = workflow("pull-request.yml")["jobs"]["preview"]["if"]

    assert (
        "github.event.pull_request.head.repo.full_name == github.repository"
        in condition
    )


# Deployments


def test_main_deploys_the_staged_stacks_then_production_behind_approval():
    deploy = workflow("deploy.yml")
    staged = deploy["jobs"]["up-staged"]
    production = deploy["jobs"]["up-production"]
    plan = script_outputs(ROOT)

    assert deploy["on"]["push"]["branches"] == ["main"]
    assert staged["with"]["command"] == production["with"]["command"] == "up"
    assert (
        staged["strategy"]["matrix"]["stack"]
        == "${{ fromJSON(needs.stacks.outputs.staged) }}"
    )
    assert "up-staged" in production["needs"], "prod does not wait for dev"
    assert "!failure()" in production["if"], "prod would deploy after dev failed"
    assert production["with"]["stack"] == "${{ needs.stacks.outputs.production }}"
    assert production["with"]["environment"] == production["with"]["stack"], (
        "prod does not run in its own (approval) environment"
    )
    if "prod" in committed_stack_files():
        assert plan["production"] == "prod"
        assert "prod" not in yaml.safe_load(plan["staged"])


def test_the_pulumi_job_runs_in_the_environment_it_is_given():
    job = workflow("pulumi.yml")["jobs"]["pulumi"]
    environment = job["environment"]

    assert environment["name"] == "${{ inputs.environment }}"
    assert expression(environment["deployment"], inputs={"command": "up"}) is True
    assert expression(environment["deployment"], inputs={"command": "destroy"}) is True


def test_previews_never_wait_for_the_production_approval():
    for path_name, job_id, job in pulumi_calls():
        if job["with"]["command"] != "preview":
            continue
        environment = expression(job["with"]["environment"], matrix={"stack": "prod"})

        assert environment == "prod-preview", (
            f"{path_name}:{job_id} previews in {environment}"
        )


# Destroy


def test_destroy_asks_for_the_stack_name_twice():
    destroy = workflow("destroy.yml")
    inputs = destroy["on"]["workflow_dispatch"]["inputs"]

    assert set(inputs) == {"stack", "confirm"}
    assert all(field["required"] for field in inputs.values())
    assert destroy["jobs"]["destroy"]["needs"] == "confirm"
    assert destroy["jobs"]["destroy"]["if"] == "inputs.confirm == inputs.stack"
    assert destroy["jobs"]["destroy"]["with"]["command"] == "destroy"


def test_destroy_checks_the_confirmation_before_anything_else():
    first_step = workflow("destroy.yml")["jobs"]["confirm"]["steps"][0]
    main = {"REF": "refs/heads/main", "DEFAULT_BRANCH": "main"}

    mismatch = run_step_script(
        first_step, {**main, "STACK": "prod", "CONFIRMATION": "dev"}
    )
    empty = run_step_script(first_step, {**main, "STACK": "", "CONFIRMATION": ""})
    branch = run_step_script(
        first_step,
        {**main, "STACK": "dev", "CONFIRMATION": "dev", "REF": "refs/heads/x"},
    )
    match = run_step_script(first_step, {**main, "STACK": "dev", "CONFIRMATION": "dev"})

    assert "uses" not in first_step, "something runs before the confirmation is checked"
    assert first_step["env"]["CONFIRMATION"] == "${{ inputs.confirm }}"
    assert first_step["env"]["STACK"] == "${{ inputs.stack }}"
    assert mismatch.returncode == 1, "a wrong confirmation was accepted"
    assert empty.returncode == 1, "an empty stack name was accepted"
    assert branch.returncode == 1, "a destroy from another branch was accepted"
    assert match.returncode == 0, f"a matching confirmation was refused: {match.stdout}"


def test_destroy_refuses_a_stack_without_a_stack_file(tmp_path):
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")

    refused = run_stacks_script(tmp_path, "--require", "prod")
    accepted = run_stacks_script(tmp_path, "--require", "dev")

    assert refused.returncode == 1
    assert "no Pulumi.prod.yaml" in refused.stderr
    assert accepted.returncode == 0


# Concurrency, permissions, pins


def test_one_update_per_stack_at_a_time():
    concurrency = workflow("pulumi.yml")["jobs"]["pulumi"]["concurrency"]

    def group(command: str, stack: str, ref: str) -> str:
        return expression(
            concurrency["group"],
            inputs={"command": command, "stack": stack},
            github={"ref": ref},
        )

    def cancels(command: str) -> bool:
        return expression(
            concurrency["cancel-in-progress"], inputs={"command": command}
        )

    assert group("up", "dev", "refs/heads/main") == group(
        "destroy", "dev", "refs/heads/x"
    )
    assert group("up", "dev", "refs/heads/main") != group(
        "up", "prod", "refs/heads/main"
    )
    assert group("preview", "dev", "refs/pull/1/merge") != group(
        "up", "dev", "refs/heads/main"
    )
    assert group("preview", "dev", "refs/pull/1/merge") != group(
        "preview", "dev", "refs/pull/2/merge"
    )
    assert cancels("up") is False, "a running update would be cancelled"
    assert cancels("destroy") is False, "a running destroy would be cancelled"
    assert cancels("preview") is True


def test_every_call_to_pulumi_is_up_preview_or_destroy():
    commands = {job["with"]["command"] for _, _, job in pulumi_calls()}

    assert commands == {"preview", "up", "destroy"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_permissions_are_minimal(path):
    document = workflow(path.name)
    reusable = "workflow_call" in document["on"]

    if reusable:
        assert "permissions" not in document, (
            "a reusable workflow takes its caller's grant"
        )
        for job_id, job in document["jobs"].items():
            assert "permissions" not in job, f"{job_id} asks for more than its caller"
        return
    assert document["permissions"] == {}, "the workflow grants permissions by default"
    for job_id, job in document["jobs"].items():
        preview = job.get("with", {}).get("command") == "preview"
        expected = PREVIEW_GRANT if preview else READ_ONLY

        assert job.get("permissions") == expected, f"{path.name}:{job_id}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_action_and_image_is_pinned_to_a_release(path):
    document = workflow(path.name)
    unpinned = [
        step["uses"]
        for step in steps_of(document)
        if "uses" in step and not RELEASE_TAG.match(step["uses"])
    ]
    images = [
        service["image"]
        for job in document["jobs"].values()
        for service in job.get("services", {}).values()
    ]
    runners = [job["runs-on"] for job in document["jobs"].values() if "runs-on" in job]

    assert unpinned == [], f"not pinned to an exact release tag: {unpinned}"
    for image in images:
        assert VERSIONED_IMAGE.match(image), f"image {image} has no exact version tag"
    assert all(not runner.endswith("-latest") for runner in runners), runners


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_scripts_take_inputs_from_the_environment_and_parse(path):
    for step in steps_of(workflow(path.name)):
        if "run" not in step:
            continue

        assert "${{" not in step["run"], (
            f"an expression is pasted into a script: {step}"
        )
        done = subprocess.run(
            ["bash", "-n", "-c", step["run"]],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


def test_the_pulumi_step_refuses_an_unknown_command_or_stack_name():
    check = workflow("pulumi.yml")["jobs"]["pulumi"]["steps"][0]
    backend = {"PULUMI_ACCESS_TOKEN": "token"}

    unknown = run_step_script(check, {**backend, "COMMAND": "refresh", "STACK": "dev"})
    unsafe = run_step_script(check, {**backend, "COMMAND": "up", "STACK": "dev;ls"})
    no_backend = run_step_script(check, {"COMMAND": "up", "STACK": "dev"})
    fine = run_step_script(check, {**backend, "COMMAND": "up", "STACK": "dev"})

    assert unknown.returncode == 1
    assert unsafe.returncode == 1
    assert no_backend.returncode == 1, "a run without a backend went on"
    assert fine.returncode == 0, fine.stdout


# Secrets


def secrets_referenced() -> set[str]:
    text = "\n".join(path.read_text() for path in WORKFLOW_FILES)
    return set(re.findall(r"secrets\.([A-Z0-9_]+)", text))


def test_every_secret_the_workflows_use_is_documented():
    documented = set(
        re.findall(r"^\| `([A-Z0-9_]+)` \|", OPERATING_DOC.read_text(), re.M)
    )

    assert secrets_referenced() - documented == set(), "used but not in the README"
    assert documented - secrets_referenced() == set(), "documented but never used"


def test_the_pulumi_cli_version_is_read_from_requirements(tmp_path):
    step = next(
        step for step in steps_of(workflow("pulumi.yml")) if step.get("id") == "cli"
    )
    output = tmp_path / "github-output"
    pinned = re.search(
        r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M
    )

    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )

    assert done.returncode == 0, done.stdout
    assert output.read_text() == f"version={pinned[1]}\n"


# Agreement with the Pulumi program


def pulumi_project() -> dict:
    project_file = ROOT / "Pulumi.yaml"
    if not project_file.exists():
        pytest.skip("no Pulumi.yaml yet")
    return yaml.safe_load(project_file.read_text())


def test_the_config_keys_the_workflows_set_are_declared_by_the_program():
    project = pulumi_project()
    text = "\n".join(path.read_text() for path in WORKFLOW_FILES)
    keys_set = set(re.findall(rf"\b{project['name']}:([A-Za-z]+)\b", text))

    assert keys_set, "the workflows set no program config (registry credentials)"
    assert keys_set <= set(project["config"]), (
        f"not declared in Pulumi.yaml: {keys_set - set(project['config'])}"
    )


def stack_setting(project: dict, stack: str, key: str) -> object:
    """A config value of `stack`, or the default Pulumi.yaml declares for it."""
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = stack_file.get("config") or {}
    return config.get(f"{project['name']}:{key}", project["config"][key].get("default"))


@pytest.mark.parametrize("stack", committed_stack_files())
def test_the_pulumi_job_outlasts_the_longest_wait_of_pulumi_up(stack):
    from components.seed_job import SEED_DEADLINE_SECONDS
    from components.settings import WAIT_MARGIN_SECONDS

    project = pulumi_project()
    job_minutes = workflow("pulumi.yml")["jobs"]["pulumi"]["timeout-minutes"]
    work_wait = 0
    if stack_setting(project, stack, "waitForWork"):
        work_wait = int(stack_setting(project, stack, "workTimeoutSeconds")) or (
            int(stack_setting(project, stack, "workDeadlineSeconds"))
            + WAIT_MARGIN_SECONDS
        )

    longest_wait = BROKER_AND_IMAGE_SECONDS + SEED_DEADLINE_SECONDS + work_wait

    assert job_minutes <= GITHUB_HOSTED_JOB_MINUTES, "GitHub stops the job earlier"
    assert longest_wait <= job_minutes * 60, (
        f"{stack}: pulumi up may wait {longest_wait / 60:.0f} min, the job stops at "
        f"{job_minutes}; stopped mid-update, the stack stays locked"
    )


def test_the_tests_broker_is_the_broker_the_program_deploys():
    deployed = pulumi_project()["config"]["brokerImage"]["default"]
    service = workflow("pull-request.yml")["jobs"]["test"]["services"]["rabbitmq"]

    assert service["image"] == deployed, "the tests run another broker than prod does"
