"""The resource graph of every committed stack, run under Pulumi's mocks: the four
components and their children, the order of the Jobs, the image they run, and
what changes (and does not) between two runs."""

from __future__ import annotations

import importlib.util
import time

import pytest
from pulumi.runtime.rpc import UNKNOWN

from components.rabbitmq_config import MEMORY_WATERMARK
from components.settings import memory_bytes
from tests.pulumi_harness import (
    ROOT,
    ProgramRun,
    committed_stacks,
    plain_strings,
    run_program,
)

JOB = "kubernetes:batch/v1:Job"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
SERVICE = "kubernetes:core/v1:Service"
SECRET_KIND = "kubernetes:core/v1:Secret"  # noqa: S105 (a type token)
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
IMAGE = "docker:index/image:Image"
COMPONENTS = {
    "workqueue:index:RabbitMQ": {STATEFUL_SET, SERVICE, SECRET_KIND, CONFIG_MAP},
    "workqueue:index:WorkerImage": {IMAGE},
    "workqueue:index:SeedJob": {JOB, CONFIG_MAP},
    "workqueue:index:WorkJob": {JOB},
}


def _exit_codes():
    spec = importlib.util.spec_from_file_location(
        "exitcodes", ROOT / "worker/workqueue/exitcodes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=committed_stacks())
def run(request) -> ProgramRun:
    return run_program(request.param)


def _job(run: ProgramRun, component: str):
    parent = run.one(f"workqueue:index:{component}")
    return next(r for r in run.children_of(parent) if r.type == JOB)


def _pod_spec(registration) -> dict:
    return registration.inputs["spec"]["template"]["spec"]


def test_there_are_dev_and_prod_stacks():
    assert {"dev", "prod"} <= set(committed_stacks())


def test_each_component_is_registered_once_under_the_stack(run):
    stack = run.one("pulumi:pulumi:Stack")

    for token in COMPONENTS:
        component = run.one(token)
        assert component.parent == stack.urn, f"{token} is not a child of the stack"
        assert not component.custom, f"{token} is not a component resource"


def test_every_resource_is_a_child_of_a_component(run):
    component_urns = {run.one(token).urn for token in COMPONENTS}

    for registration in run.registrations:
        if registration.custom:
            assert registration.parent in component_urns, (
                f"{registration.type} {registration.name} has parent "
                f"{registration.parent}, not one of the four components"
            )


@pytest.mark.parametrize("token", sorted(COMPONENTS))
def test_each_component_holds_its_resources(run, token):
    children = {child.type for child in run.children_of(run.one(token))}

    assert COMPONENTS[token] <= children, (
        f"{token} lacks {COMPONENTS[token] - children}"
    )


@pytest.mark.parametrize("token", sorted(COMPONENTS))
def test_each_component_registers_its_outputs(run, token):
    outputs = run.component_outputs.get(run.one(token).urn)

    assert outputs, f"{token} registered no outputs"
    assert all(value not in (None, "") for value in outputs.values()), outputs


def test_seed_job_waits_for_the_ready_broker_and_the_pushed_image(run):
    seed = _job(run, "SeedJob")

    assert run.one(STATEFUL_SET).urn in seed.dependencies, "seed runs before the broker"
    assert run.one(IMAGE).urn in seed.dependencies, "seed runs before the image push"


def test_work_job_runs_after_the_seed_job(run):
    seed, work = _job(run, "SeedJob"), _job(run, "WorkJob")

    assert seed.urn in work.dependencies, "the work Job does not wait for seeding"


def test_both_jobs_run_the_image_pinned_by_the_pushed_digest(run):
    pushed = run.one(IMAGE).state["repoDigest"]

    for component in ("SeedJob", "WorkJob"):
        containers = _pod_spec(_job(run, component))["containers"]
        assert [c["image"] for c in containers] == [pushed], component
    assert "@sha256:" in pushed
    assert run.stack_outputs["image"] == pushed


def test_coarse_completions_equal_the_items_and_fine_sets_none(run):
    work = _job(run, "WorkJob").inputs["spec"]
    seeded = _job(run, "SeedJob")
    items_file = run.one(CONFIG_MAP, "seed-items").inputs["data"]["items.txt"]

    item_count = len(items_file.splitlines())
    assert work["parallelism"] == run.config["parallelism"]
    if run.config["mode"] == "coarse":
        assert work["completions"] == item_count
    else:
        assert "completions" not in work, "fine mode must leave completions unset"
    assert seeded.inputs["spec"]["completions"] == 1


@pytest.mark.parametrize("count", [1, 3, 17])
def test_coarse_completions_follow_the_item_list(count):
    items = [f"item-{n}" for n in range(count)]

    run = run_program("dev", {"items": items, "mode": "coarse"})

    assert _job(run, "WorkJob").inputs["spec"]["completions"] == count


def test_client_service_selects_the_broker_pods(run):
    broker = run.one(STATEFUL_SET).inputs["spec"]
    client = run.one(SERVICE, "rabbitmq-amqp").inputs["spec"]

    pod_labels = broker["template"]["metadata"]["labels"]
    assert client["selector"].items() <= pod_labels.items()
    assert client["selector"] == broker["selector"]["matchLabels"]
    container_ports = {
        p["name"] for c in broker["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert {p["targetPort"] for p in client["ports"]} <= container_ports


def test_headless_service_governs_the_stateful_set(run):
    broker = run.one(STATEFUL_SET).inputs["spec"]
    headless = run.one(SERVICE, "rabbitmq-headless")

    assert broker["serviceName"] == headless.state["metadata"]["name"]
    assert headless.inputs["spec"]["clusterIP"] == "None"


def test_no_secret_value_appears_in_plain_text_in_any_input(run):
    assert run.secret_values, "the run knew no secret to look for"

    for registration in run.registrations:
        for text in plain_strings(registration.wire_inputs):
            for secret in run.secret_values:
                assert secret not in text, (
                    f"{registration.type} {registration.name} has a secret in "
                    f"plain text: {text[:60]}"
                )
    exported = repr(run.stack_outputs)
    assert not any(secret in exported for secret in run.secret_values)


def test_the_secret_search_sees_wrapped_secrets(run):
    credentials = run.one(SECRET_KIND, "rabbitmq-credentials")

    wrapped = repr(credentials.wire_inputs)
    assert any(secret in wrapped for secret in run.secret_values)
    assert not any(
        secret in text
        for text in plain_strings(credentials.wire_inputs)
        for secret in run.secret_values
    )


def test_broker_address_output_has_no_credentials(run):
    address = run.stack_outputs["brokerAddress"]

    assert "@" not in address and "amqp://" not in address
    assert address.endswith(".svc.cluster.local:5672")
    assert run.stack_outputs["namespace"] in address


def test_outputs_name_the_jobs_and_how_to_follow_the_work(run):
    outputs = run.stack_outputs
    work_name = _job(run, "WorkJob").state["metadata"]["name"]

    assert outputs["seedJob"] == _job(run, "SeedJob").state["metadata"]["name"]
    assert outputs["workJob"] == work_name
    assert outputs["queue"] == run.config["queue"]
    assert f"job-name={work_name}" in outputs["followWork"]
    assert f"--namespace {outputs['namespace']}" in outputs["followWork"]


def _template(run: ProgramRun, component: str) -> dict:
    return _job(run, component).inputs["spec"]["template"]


def test_an_unchanged_stack_renders_identical_jobs():
    first, second = run_program("dev"), run_program("dev")

    for component in ("SeedJob", "WorkJob"):
        assert _job(first, component).inputs == _job(second, component).inputs


def test_changed_items_change_both_job_templates():
    before = run_program("dev")
    after = run_program("dev", {"items": ["apple", "banana", "kiwi"]})

    for component in ("SeedJob", "WorkJob"):
        assert _template(before, component) != _template(after, component), (
            f"{component}'s pod template ignores the items"
        )


def test_a_new_image_digest_changes_both_job_templates():
    before = run_program("dev")
    after = run_program("dev", image_digest="sha256:" + "f" * 64)

    for component in ("SeedJob", "WorkJob"):
        assert _template(before, component) != _template(after, component)


def test_work_job_fails_fast_on_bad_config_and_ignores_disruptions(run):
    codes = _exit_codes()
    spec = _job(run, "WorkJob").inputs["spec"]

    rules = spec["podFailurePolicy"]["rules"]
    by_action = {}
    for rule in rules:
        by_action.setdefault(rule["action"], []).append(rule)
    fail_codes = [r["onExitCodes"]["values"] for r in by_action["FailJob"]]
    assert fail_codes == [[codes.BAD_CONFIG]]
    ignored = [r for r in by_action["Ignore"] if "onExitCodes" in r]
    assert ignored[0]["onExitCodes"]["values"] == [codes.TERMINATED]
    conditions = [
        c["type"] for r in by_action["Ignore"] for c in r.get("onPodConditions", [])
    ]
    assert conditions == ["DisruptionTarget"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == run.config["backoffLimit"]
    assert spec["activeDeadlineSeconds"] == run.config["workDeadlineSeconds"]


def test_no_job_sets_ttl_seconds_after_finished(run):
    for registration in run.of_type(JOB):
        assert "ttlSecondsAfterFinished" not in registration.inputs["spec"], (
            f"{registration.name}: the cluster would delete what the state holds"
        )


def test_pulumi_waits_for_the_work_job_with_the_configured_timeout(run):
    work = _job(run, "WorkJob")

    expected = run.config["workDeadlineSeconds"] + 300
    if run.config.get("workTimeoutSeconds"):
        expected = run.config["workTimeoutSeconds"]
    assert work.options["custom_timeouts"]["create"] == f"{expected}s"
    annotations = work.inputs["metadata"]["annotations"]
    assert "pulumi.com/skipAwait" not in annotations
    assert annotations["pulumi.com/replaceUnready"] == "true"


def test_pulumi_waits_for_seeding_past_its_deadline(run):
    seed = _job(run, "SeedJob")

    deadline = seed.inputs["spec"]["activeDeadlineSeconds"]
    timeout = seed.options["custom_timeouts"]["create"]
    assert int(timeout.removesuffix("s")) > deadline, "Pulumi gives up first"
    assert "pulumi.com/skipAwait" not in seed.inputs["metadata"]["annotations"]


def test_wait_for_work_false_skips_the_await():
    run = run_program("dev", {"waitForWork": False, "workTimeoutSeconds": 120})

    work = _job(run, "WorkJob")
    assert work.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert work.options["custom_timeouts"]["create"] == "120s"
    seed_annotations = _job(run, "SeedJob").inputs["metadata"]["annotations"]
    assert "pulumi.com/skipAwait" not in seed_annotations, "seeding is always awaited"


def test_the_broker_url_reaches_the_pods_only_through_the_secret(run):
    credentials = run.one(SECRET_KIND, "rabbitmq-credentials")

    for component in ("SeedJob", "WorkJob"):
        env = _pod_spec(_job(run, component))["containers"][0]["env"]
        amqp = [e for e in env if e["name"] == "AMQP_URL"]
        assert len(amqp) == 1 and "value" not in amqp[0], component
        reference = amqp[0]["valueFrom"]["secretKeyRef"]
        assert reference == {
            "name": credentials.state["metadata"]["name"],
            "key": "url",
        }


def test_job_pods_carry_the_labels_the_broker_admits(run):
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "rabbitmq-broker")

    admitted = policy.inputs["spec"]["ingress"][0]["from"][0]["podSelector"]
    for component in ("SeedJob", "WorkJob"):
        labels = _job(run, component).inputs["spec"]["template"]["metadata"]["labels"]
        assert admitted["matchLabels"].items() <= labels.items(), component


def test_persistence_uses_a_claim_template_and_its_retention(run):
    broker = run.one(STATEFUL_SET).inputs["spec"]

    retention = broker["persistentVolumeClaimRetentionPolicy"]["whenDeleted"]
    assert retention == run.config["claimRetentionOnDelete"]
    volumes = {v["name"]: v for v in broker["template"]["spec"]["volumes"]}
    if run.config["persistence"]:
        (claim,) = broker["volumeClaimTemplates"]
        requested = claim["spec"]["resources"]["requests"]["storage"]
        assert requested == run.config["storageSize"]
        assert "data" not in volumes, "data is both a claim and a volume"
    else:
        assert "volumeClaimTemplates" not in broker
        assert "emptyDir" in volumes["data"]


def test_memory_alarm_is_derived_from_the_memory_limit(run):
    broker = run.one(STATEFUL_SET).inputs["spec"]["template"]["spec"]
    conf = run.one(CONFIG_MAP, "rabbitmq-config").inputs["data"]["rabbitmq.conf"]

    limit = broker["containers"][0]["resources"]["limits"]["memory"]
    expected = int(memory_bytes(limit) * MEMORY_WATERMARK)
    assert f"vm_memory_high_watermark.absolute = {expected}\n" in conf


def test_an_existing_broker_replaces_the_deployed_one():
    url = "amqps://app:hunter2hunter2@mq.internal.example:5671/batch"

    run = run_program(
        "dev",
        {"brokerCidrs": ["10.20.0.0/16"]},
        secrets={"brokerUrl": url},
    )

    assert not run.of_type(STATEFUL_SET) and not run.of_type(SERVICE)
    assert not run.of_type("random:index/randomPassword:RandomPassword")
    url_secret = run.one(SECRET_KIND, "rabbitmq-url")
    assert url_secret.inputs["stringData"]["url"] == url
    for component in ("SeedJob", "WorkJob"):
        env = _pod_spec(_job(run, component))["containers"][0]["env"]
        reference = next(e for e in env if e["name"] == "AMQP_URL")
        assert (
            reference["valueFrom"]["secretKeyRef"]["name"]
            == (url_secret.state["metadata"]["name"])
        )
    assert run.stack_outputs["brokerAddress"] == "mq.internal.example:5671"
    assert url not in repr(run.stack_outputs)
    clients = run.one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "rabbitmq-clients"
    )
    blocks = [
        peer["ipBlock"]["cidr"]
        for rule in clients.inputs["spec"]["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
    ]
    assert blocks == ["10.20.0.0/16"], "the clients cannot reach the existing broker"


def test_an_existing_namespace_is_used_as_it_is():
    run = run_program("dev", {"namespace": "batch-team", "existingNamespace": True})

    assert not run.of_type("kubernetes:core/v1:Namespace")
    for registration, manifest in run.kubernetes_objects():
        assert manifest["metadata"]["namespace"] == "batch-team", registration.name


def test_registry_credentials_give_the_jobs_an_image_pull_secret():
    run = run_program(
        "dev", {"registryUsername": "ci"}, secrets={"registryPassword": "t0ken"}
    )

    pull = run.one(SECRET_KIND, "worker-pull")
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    for component in ("SeedJob", "WorkJob"):
        assert _pod_spec(_job(run, component))["imagePullSecrets"] == [
            {"name": pull.state["metadata"]["name"]}
        ]
    image = run.one(IMAGE).inputs
    assert image["registry"]["username"] == "ci"


def test_a_registry_without_credentials_needs_no_pull_secret():
    run = run_program("dev", {"registryUsername": ""}, secrets={})

    assert not [s for s in run.of_type(SECRET_KIND) if s.name == "worker-pull"]
    assert _pod_spec(_job(run, "WorkJob"))["imagePullSecrets"] == []


def test_items_file_feeds_the_seed_config_map():
    run = run_program("dev", {"items": None, "itemsFile": "items/prod.txt"})

    seeded = run.one(CONFIG_MAP, "seed-items").inputs["data"]["items.txt"]
    expected = (ROOT / "items/prod.txt").read_text()
    assert seeded.splitlines() == [line for line in expected.splitlines() if line]


def _seed_batch(run: ProgramRun) -> str:
    arguments = _pod_spec(_job(run, "SeedJob"))["containers"][0]["args"]
    return arguments[arguments.index("--batch") + 1]


def test_the_seed_batch_is_new_for_new_items_or_a_new_image_only():
    first, again = run_program("dev"), run_program("dev")
    new_items = run_program("dev", {"items": ["kiwi"]})
    new_image = run_program("dev", image_digest="sha256:" + "e" * 64)

    assert _seed_batch(first) == _seed_batch(again)
    assert _seed_batch(new_items) != _seed_batch(first)
    assert _seed_batch(new_image) != _seed_batch(first)


@pytest.mark.parametrize("stack", committed_stacks())
def test_a_stack_evaluates_under_the_mocks_in_well_under_a_second(stack):
    run_program(stack)  # the first run also imports the providers' SDKs
    started = time.perf_counter()

    run_program(stack)

    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{stack} took {elapsed:.2f} s under the mocks"


def test_clients_address_the_broker_by_the_services_fully_qualified_name(run):
    credentials = run.one(SECRET_KIND, "rabbitmq-credentials").inputs["stringData"]
    client = run.one(SERVICE, "rabbitmq-amqp").state["metadata"]["name"]

    host = credentials["url"].rpartition("@")[2].split("/")[0]
    namespace = run.stack_outputs["namespace"]
    assert host == f"{client}.{namespace}.svc.cluster.local:5672"
    assert host == run.stack_outputs["brokerAddress"]
    assert credentials["url"].startswith(f"amqp://{run.config['brokerUsername']}:")


def test_a_preview_before_the_image_is_built_registers_both_jobs():
    run = run_program("dev", image_digest=None)

    for component in ("SeedJob", "WorkJob"):
        container = _pod_spec(_job(run, component))["containers"][0]
        assert container["image"] == UNKNOWN, f"{component} runs {container['image']}"
    seed_args = _pod_spec(_job(run, "SeedJob"))["containers"][0]["args"]
    assert seed_args == UNKNOWN, "the seed batch cannot be known before the image"
    assert _job(run, "SeedJob").dependencies, "the preview lost the Jobs' order"
