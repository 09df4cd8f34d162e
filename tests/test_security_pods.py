"""Every pod the program deploys (broker, seed Job, work Job) meets the restricted
Pod Security Standard and this project's rules on top of it, in every committed
stack; a shortfall names the object, the container and the field."""

from __future__ import annotations

import copy
import re

import pytest

from components.pods import NON_ROOT_ID
from components.rabbitmq_config import AMQP_PORT
from tests.pulumi_harness import ProgramRun, committed_stacks, run_program

#: The volume types the restricted standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
POD_KINDS = {"StatefulSet", "Job"}
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DIGEST = r"@sha256:[0-9a-f]{64}$"


@pytest.fixture(scope="module", params=committed_stacks())
def run(request) -> ProgramRun:
    return run_program(request.param)


def pods_of(run: ProgramRun) -> list[tuple[str, dict, dict]]:
    """(object, pod template, manifest) for every object that runs pods."""
    return [
        (f"{m['kind']} {m['metadata']['name']}", m["spec"]["template"], m)
        for _, m in run.kubernetes_objects()
        if m["kind"] in POD_KINDS
    ]


def _seccomp(pod: dict, container: dict) -> str | None:
    for context in (
        container.get("securityContext", {}),
        pod.get("securityContext", {}),
    ):
        if "seccompProfile" in context:
            return context["seccompProfile"].get("type")
    return None


def _run_as(pod: dict, container: dict, field: str):
    value = container.get("securityContext", {}).get(field)
    return pod.get("securityContext", {}).get(field) if value is None else value


def restricted_shortfalls(name: str, template: dict) -> list[str]:
    """What keeps one pod template from the restricted standard and our rules."""
    pod = template["spec"]
    found = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(f"{name}: spec.{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"{name}: volume {volume['name']} is {kinds}")
    if pod.get("automountServiceAccountToken") is not False:
        found.append(f"{name}: spec.automountServiceAccountToken is not false")
    if not pod.get("serviceAccountName"):
        found.append(f"{name}: spec.serviceAccountName is not set")
    if pod.get("enableServiceLinks") is not False:
        found.append(f"{name}: spec.enableServiceLinks is not false")
    containers = pod.get("initContainers", []) + pod["containers"]
    for container in containers:
        found += _container_shortfalls(
            f"{name} container {container['name']}", pod, container
        )
    return found


def _container_shortfalls(where: str, pod: dict, container: dict) -> list[str]:
    context = container.get("securityContext", {})
    found = []
    if context.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: securityContext.allowPrivilegeEscalation is not false")
    if context.get("privileged"):
        found.append(f"{where}: securityContext.privileged is true")
    capabilities = context.get("capabilities", {})
    if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
        found.append(f"{where}: securityContext.capabilities does not drop ALL only")
    if context.get("readOnlyRootFilesystem") is not True:
        found.append(f"{where}: securityContext.readOnlyRootFilesystem is not true")
    if _run_as(pod, container, "runAsNonRoot") is not True:
        found.append(f"{where}: runAsNonRoot is not true")
    user = _run_as(pod, container, "runAsUser")
    if not isinstance(user, int) or user == 0:
        found.append(f"{where}: runAsUser is {user!r}, not a non-zero id")
    if _seccomp(pod, container) != "RuntimeDefault":
        found.append(f"{where}: seccompProfile.type is not RuntimeDefault")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        found.append(f"{where}: ports set a hostPort")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(resources.get(kind, {}))
        if missing:
            found.append(f"{where}: resources.{kind} lacks {sorted(missing)}")
    mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
    if "/tmp" not in mounts:
        found.append(f"{where}: volumeMounts has no writable /tmp")
    return found


def test_every_pod_meets_the_restricted_standard(run):
    pods = pods_of(run)

    assert {name.split()[0] for name, _, _ in pods} == POD_KINDS
    shortfalls = [
        s for name, template, _ in pods for s in restricted_shortfalls(name, template)
    ]
    assert shortfalls == [], "\n".join(shortfalls)


def test_a_shortfall_names_the_object_container_and_field(run):
    name, template, _ = next(p for p in pods_of(run) if p[0].startswith("Job"))
    broken = copy.deepcopy(template)
    container = broken["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["resources"]["limits"]

    shortfalls = restricted_shortfalls(name, broken)

    assert f"{name} container {container['name']}: securityContext." in shortfalls[0]
    assert "allowPrivilegeEscalation" in shortfalls[0]
    assert any("resources.limits" in s for s in shortfalls)


def test_every_pod_has_its_own_service_account_without_a_token(run):
    accounts = {
        r.state["metadata"]["name"]: r.inputs
        for r in run.of_type("kubernetes:core/v1:ServiceAccount")
    }

    names = [t["spec"]["serviceAccountName"] for _, t, _ in pods_of(run)]
    assert len(set(names)) == len(names), f"pods share a ServiceAccount: {names}"
    for name in names:
        assert accounts[name]["automountServiceAccountToken"] is False, name


def test_containers_run_as_the_images_numeric_user(run):
    for name, template, _ in pods_of(run):
        assert template["spec"]["securityContext"]["runAsUser"] == NON_ROOT_ID, name


def test_the_broker_has_probes_and_a_pinned_image(run):
    (broker,) = [t for name, t, _ in pods_of(run) if name.startswith("StatefulSet")]

    container = broker["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"][0] == "rabbitmq-diagnostics"
    assert container["livenessProbe"]["exec"]["command"][0] == "rabbitmq-diagnostics"
    for each in broker["spec"]["initContainers"] + broker["spec"]["containers"]:
        assert re.search(r":[\w.-]+" + DIGEST, each["image"]), each["image"]


def test_job_images_are_pinned_by_digest(run):
    for name, template, _ in pods_of(run):
        for container in template["spec"]["containers"]:
            assert re.search(DIGEST, container["image"]), (
                f"{name}: {container['image']}"
            )


def test_no_environment_variable_holds_a_secret_literal(run):
    for name, template, _ in pods_of(run):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for variable in container.get("env", []):
                value = variable.get("value", "")
                leaked = [s for s in run.secret_values if s in value]
                assert not leaked, f"{name} {container['name']} env {variable['name']}"
                assert "://" not in value or "@" not in value, variable


def test_the_created_namespace_enforces_the_restricted_standard(run):
    (namespace,) = run.of_type("kubernetes:core/v1:Namespace")

    labels = namespace.inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _policies_selecting(run: ProgramRun, labels: dict) -> list[dict]:
    return [
        p.inputs["spec"]
        for p in run.of_type(NETWORK_POLICY)
        if p.inputs["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]


def test_the_broker_admits_amqp_only_from_labelled_clients(run):
    (broker,) = [t for name, t, _ in pods_of(run) if name.startswith("StatefulSet")]

    (policy,) = _policies_selecting(run, broker["metadata"]["labels"])
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": AMQP_PORT, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "the broker admits more than pods"
    for name, template, _ in pods_of(run):
        if name.startswith("Job"):
            labels = template["metadata"]["labels"]
            assert peer["podSelector"]["matchLabels"].items() <= labels.items(), name


def _is_dns(rule: dict) -> bool:
    return {p["port"] for p in rule["ports"]} == {53} and all(
        "namespaceSelector" in peer for peer in rule["to"]
    )


def _is_broker(rule: dict, broker_labels: dict) -> bool:
    return rule["ports"] == [{"port": AMQP_PORT, "protocol": "TCP"}] and all(
        set(peer) == {"podSelector"}
        and peer["podSelector"]["matchLabels"].items() <= broker_labels.items()
        for peer in rule["to"]
    )


def test_job_pods_reach_only_dns_and_the_broker_by_default(run):
    (broker,) = [t for name, t, _ in pods_of(run) if name.startswith("StatefulSet")]
    broker_labels = broker["metadata"]["labels"]

    for name, template, _ in pods_of(run):
        if not name.startswith("Job"):
            continue
        policies = _policies_selecting(run, template["metadata"]["labels"])
        assert any("Egress" in p["policyTypes"] for p in policies), name
        rules = [rule for p in policies for rule in p.get("egress", [])]
        assert rules, f"{name}: no egress allowed at all"
        others = [
            r for r in rules if not _is_dns(r) and not _is_broker(r, broker_labels)
        ]
        assert others == [], f"{name} may also reach {others}"


def test_configured_egress_opens_only_the_work_pods():
    run = run_program("dev", {"workEgress": ["10.0.0.0/8:443"]})

    by_component = {}
    for _, template, _ in pods_of(run):
        policies = _policies_selecting(run, template["metadata"]["labels"])
        blocks = [
            peer["ipBlock"]["cidr"]
            for p in policies
            for rule in p.get("egress", [])
            for peer in rule["to"]
            if "ipBlock" in peer
        ]
        by_component[template["metadata"]["labels"]["app.kubernetes.io/component"]] = (
            blocks
        )
    assert by_component == {"broker": [], "seed": [], "work": ["10.0.0.0/8"]}
