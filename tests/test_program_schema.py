"""Every Kubernetes object every committed stack registers is valid against the
OpenAPI schema of the oldest Kubernetes version the README supports, in
kubernetes-validate's strict mode (unknown fields are errors)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from tests.pulumi_harness import ROOT, committed_stacks, run_program

#: Variants beyond the committed stacks whose objects differ in shape.
VARIANTS = {
    "existing broker": (
        "dev",
        {"brokerCidrs": ["10.20.0.0/16"]},
        {"brokerUrl": "amqp://u:p@mq.example:5672/%2F"},
    ),
    "egress and no wait": (
        "prod",
        {"workEgress": ["10.0.0.0/8:443", "192.168.0.0/16"], "waitForWork": False},
        None,
    ),
}


def oldest_supported_kubernetes() -> str:
    """The version in the README line 'Supported Kubernetes versions: X'."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"Supported Kubernetes versions: (\d+\.\d+) and later", text)
    assert match, "README.md does not say which Kubernetes it supports"
    return f"{match.group(1)}.0"


def _validate_all(run) -> list[str]:
    version = oldest_supported_kubernetes()
    problems = []
    for registration, manifest in run.kubernetes_objects():
        try:
            validated = kubernetes_validate.validate(manifest, version, strict=True)
            assert f"{validated}.0" == version, f"validated against {validated}"
        except kubernetes_validate.ValidationError as error:
            problems.append(
                f"{registration.type} {registration.name}: {error.message} at "
                f"{'/'.join(map(str, error.path))}"
            )
    return problems


def test_the_supported_version_has_a_schema():
    version = oldest_supported_kubernetes()

    assert version in all_versions(), f"kubernetes-validate has no schema for {version}"


@pytest.mark.parametrize("stack", committed_stacks())
def test_every_object_of_a_committed_stack_is_schema_valid(stack):
    run = run_program(stack)

    assert run.kubernetes_objects(), "the stack rendered no Kubernetes object"
    assert _validate_all(run) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_of_a_variant_is_schema_valid(variant):
    stack, overrides, secrets = VARIANTS[variant]

    run = run_program(stack, overrides, secrets)

    assert _validate_all(run) == []


def test_strict_validation_refuses_a_misspelt_field():
    run = run_program("dev")
    _, manifest = next(
        (r, m) for r, m in run.kubernetes_objects() if m["kind"] == "Job"
    )
    manifest["spec"]["template"]["spec"]["restartPolicyy"] = "Never"

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            manifest, oldest_supported_kubernetes(), strict=True
        )
