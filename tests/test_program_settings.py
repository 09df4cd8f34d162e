"""Every bad setting stops the program before it registers a resource, with an
error that names the key and what it accepts."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from components.settings import CONFIGMAP_LIMIT_BYTES, SettingsError
from tests.pulumi_harness import (
    ROOT,
    committed_stacks,
    project_config_schema,
    run_program,
    run_program_expecting_error,
)

BAD_SETTINGS = {
    "parallelism below 1": ({"parallelism": 0}, "workqueue:parallelism", "at least 1"),
    "parallelism not a number": (
        {"parallelism": "two"},
        "workqueue:parallelism",
        "an integer",
    ),
    "unknown mode": ({"mode": "turbo"}, "workqueue:mode", "coarse, fine"),
    "no items": ({"items": []}, "workqueue:items", "non-empty list"),
    "items missing": ({"items": None}, "workqueue:items", "itemsFile"),
    "items not strings": ({"items": [1, 2]}, "workqueue:items", "list of strings"),
    "blank item": ({"items": ["apple", "  "]}, "workqueue:items", "non-blank"),
    "item with a newline": ({"items": ["a\nb"]}, "workqueue:items", "single-line"),
    "item over the size limit": (
        {"items": ["x" * 65537]},
        "workqueue:items",
        "at most 65536 bytes",
    ),
    "items beyond the ConfigMap limit": (
        {"items": ["y" * 60000] * 20, "maxItemBytes": 100000},
        "workqueue:items",
        f"at most {CONFIGMAP_LIMIT_BYTES} bytes in all",
    ),
    "items and itemsFile": (
        {"itemsFile": "items/prod.txt"},
        "workqueue:itemsFile",
        "empty when workqueue:items is set",
    ),
    "itemsFile outside the repository": (
        {"items": None, "itemsFile": "../../etc/passwd"},
        "workqueue:itemsFile",
        "a file inside the repository",
    ),
    "namespace not a Kubernetes name": (
        {"namespace": "Work_Queue"},
        "workqueue:namespace",
        "Kubernetes namespace name",
    ),
    "queue reserved by RabbitMQ": (
        {"queue": "amq.work"},
        "workqueue:queue",
        "not starting with 'amq.'",
    ),
    "missing registry": ({"registry": ""}, "workqueue:registry", "pushed to"),
    "image name not a repository": (
        {"imageName": "Worker Image"},
        "workqueue:imageName",
        "lowercase image repository",
    ),
    "delivery limit below 1": (
        {"deliveryLimit": 0},
        "workqueue:deliveryLimit",
        "at least 1",
    ),
    "work seconds not a number": (
        {"workSeconds": "ten"},
        "workqueue:workSeconds",
        "is not a number",
    ),
    "guest as the broker user": (
        {"brokerUsername": "guest"},
        "workqueue:brokerUsername",
        "other than guest",
    ),
    "broker image without a digest": (
        {"brokerImage": "rabbitmq:3.13"},
        "workqueue:brokerImage",
        "sha256 digest",
    ),
    "memory in millibytes": (
        {"brokerMemory": "500m"},
        "workqueue:brokerMemory",
        "memory quantity",
    ),
    "CPU not a quantity": (
        {"workCpuLimit": "lots"},
        "workqueue:workCpuLimit",
        "Kubernetes quantity",
    ),
    "work CPU request above its limit": (
        {"workCpuRequest": 4, "workCpuLimit": "100m"},
        "workqueue:workCpuRequest",
        "at most workqueue:workCpuLimit",
    ),
    "broker CPU request above its limit": (
        {"brokerCpuRequest": "2", "brokerCpuLimit": "1500m"},
        "workqueue:brokerCpuRequest",
        "at most workqueue:brokerCpuLimit",
    ),
    "registry with a scheme": (
        {"registry": "https://reg.example.com"},
        "workqueue:registry",
        "without a scheme",
    ),
    "registry with a space": (
        {"registry": "reg.example.com/my team"},
        "workqueue:registry",
        "HOST[:PORT][/PATH]",
    ),
    "unknown claim retention": (
        {"claimRetentionOnDelete": "Keep"},
        "workqueue:claimRetentionOnDelete",
        "Retain, Delete",
    ),
    "egress that is no network": (
        {"workEgress": ["example.com:443"]},
        "workqueue:workEgress",
        "CIDR:PORT",
    ),
    "handler and command together": (
        {"workHandler": "app:run", "workCommand": "./run.sh"},
        "workqueue:workCommand",
        "set WORK_COMMAND or WORK_HANDLER, not both",
    ),
    "cluster domain not a domain": (
        {"clusterDomain": "cluster_local"},
        "workqueue:clusterDomain",
        "DNS domain",
    ),
    "boolean not true or false": (
        {"persistence": "yes"},
        "workqueue:persistence",
        "true or false",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_is_refused_before_any_resource(case):
    overrides, key, accepts = BAD_SETTINGS[case]

    error, registered = run_program_expecting_error("dev", overrides)

    assert isinstance(error, SettingsError), f"{case}: {error!r}"
    assert key in str(error), f"{case}: the error does not name {key}: {error}"
    assert accepts in str(error), f"{case}: the error does not say {accepts!r}"
    assert registered == [], f"{case}: registered {[r.name for r in registered]}"


#: Values the worker image's own checks (worker/workqueue/settings.py) refuse at
#: start-up, with the key the program must name and what the worker says.
REFUSED_BY_THE_WORKER = {
    "queue with a space": ({"queue": "my queue"}, "workqueue:queue", "QUEUE_NAME"),
    "queue with a slash": ({"queue": "job/1"}, "workqueue:queue", "QUEUE_NAME"),
    "queue not ASCII": ({"queue": "jöb"}, "workqueue:queue", "not a queue name"),
    "delivery limit over 1000": (
        {"deliveryLimit": 5000},
        "workqueue:deliveryLimit",
        "at most 1000",
    ),
    "handler not module:function": (
        {"workHandler": "not a handler"},
        "workqueue:workHandler",
        "module:function",
    ),
    "command with an unclosed quote": (
        {"workCommand": "sh -c 'exit 3"},
        "workqueue:workCommand",
        "cannot be split",
    ),
    "work seconds infinite": (
        {"workSeconds": "inf"},
        "workqueue:workSeconds",
        "not a finite number",
    ),
    "work seconds overflowing to infinity": (
        {"workSeconds": "1e999"},
        "workqueue:workSeconds",
        "not a finite number",
    ),
    "work seconds not a number at all": (
        {"workSeconds": "nan"},
        "workqueue:workSeconds",
        "not a finite number",
    ),
    "max item bytes over the broker's message limit": (
        {"maxItemBytes": 2**30},
        "workqueue:maxItemBytes",
        "MAX_ITEM_BYTES",
    ),
    "log level unknown to the worker": (
        {"logLevel": "TRACE"},
        "workqueue:logLevel",
        "DEBUG, INFO, WARNING, ERROR",
    ),
    "empty queue the worker would replace with its default": (
        {"queue": ""},
        "workqueue:queue",
        "a queue name",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_THE_WORKER))
def test_a_value_the_worker_image_refuses_is_refused_naming_its_key(case):
    overrides, key, explanation = REFUSED_BY_THE_WORKER[case]

    error, registered = run_program_expecting_error("dev", overrides)

    assert isinstance(error, SettingsError), f"{case}: {error!r}"
    assert str(error).startswith(key), f"{case}: the error does not lead with {key}"
    assert explanation in str(error), f"{case}: no {explanation!r} in {error}"
    assert registered == [], f"{case}: registered {[r.name for r in registered]}"


def test_a_cpu_request_equal_to_its_limit_in_other_units_is_accepted():
    run = run_program(
        "dev",
        {"workCpuRequest": "1000m", "workCpuLimit": "1", "registry": "reg:5000/a/b"},
    )

    (work,) = [r for r in run.of_type("kubernetes:batch/v1:Job") if "work" in r.name]
    resources = work.inputs["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "1000m", resources


def test_an_existing_broker_needs_its_networks():
    error, registered = run_program_expecting_error(
        "dev", secrets={"brokerUrl": "amqp://u:p@mq.example:5672/%2F"}
    )

    assert "workqueue:brokerCidrs" in str(error)
    assert registered == []


def test_prod_without_its_secrets_lists_the_commands_to_run():
    error, registered = run_program_expecting_error("prod", secrets={})

    assert isinstance(error, SettingsError)
    assert "pulumi config set --secret workqueue:registryPassword" in str(error)
    assert registered == []


def _documented_default(spec: dict) -> str:
    if spec.get("secret"):
        return "(secret, unset)"
    if "default" not in spec:
        return "(none)"
    default = spec["default"]
    if isinstance(default, bool):
        default = "true" if default else "false"
    elif isinstance(default, list):
        default = json.dumps(default)
    elif default == "":
        default = '""'
    return f"`{default}`"


def test_the_deploying_guide_lists_every_key_with_its_default():
    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `workqueue:(\w+)` \| \w+ \| (.+?) \|", text, re.M))

    schema = project_config_schema()
    assert set(rows) == set(schema), f"undocumented: {set(schema) - set(rows)}"
    for key, spec in schema.items():
        assert rows[key] == _documented_default(spec), f"{key}: {rows[key]}"


BAD_SECRETS = {
    "short broker password": ("brokerPassword", "pw#1", "12 to 128 letters"),
    "cookie with symbols": (
        "erlangCookie",
        "cookie-with-dashes-00000",
        "letters or digits",
    ),
    "broker URL of another scheme": ("brokerUrl", "http://u:pw@mq:5672/", "amqps://"),
    "registry token with a space": (
        "registryPassword",
        "two words",
        "without whitespace",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SECRETS))
def test_a_bad_secret_is_refused_without_showing_it(case):
    key, value, accepts = BAD_SECRETS[case]

    error, registered = run_program_expecting_error(
        "prod", {"brokerCidrs": ["10.0.0.0/8"]}, secrets={key: value}
    )

    assert isinstance(error, SettingsError), f"{case}: {error!r}"
    assert f"workqueue:{key}" in str(error) and accepts in str(error), str(error)
    assert value not in str(error), f"{case}: the error shows the secret"
    assert registered == []


YAML_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def _matches(value: object, spec: dict) -> bool:
    expected = YAML_TYPES[spec["type"]]
    if expected is int and isinstance(value, bool):
        return False
    if not isinstance(value, expected):
        return False
    return expected is not list or all(_matches(item, spec["items"]) for item in value)


@pytest.mark.parametrize("stack", committed_stacks())
def test_stack_files_use_declared_keys_of_the_declared_types(stack):
    schema = project_config_schema()
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())

    for key, value in stack_file["config"].items():
        name = key.removeprefix("workqueue:")
        assert key.startswith("workqueue:") and name in schema, f"{key} is not declared"
        assert _matches(value, schema[name]), f"{key}: {value!r} is no {schema[name]}"
        assert not schema[name].get("secret"), (
            f"{key} is a secret committed in plain text"
        )


def test_declared_defaults_have_the_declared_types():
    for name, spec in project_config_schema().items():
        if "default" in spec:
            assert _matches(spec["default"], spec), f"{name}'s default"
