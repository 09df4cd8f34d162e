"""Runs __main__.py under Pulumi's mocks with a committed stack's configuration and
records every registration: type, name, parent, dependencies, options and inputs.

The mocks stand in for the providers the way they answer a real `pulumi up`:
Kubernetes objects without a name get one (auto-naming), a generated password gets
a value, and a pushed image gets a digest.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "__main__.py"
PROJECT = "workqueue"
#: The marker Pulumi's wire format puts on a secret value.
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a marker)
SIG_KEY = "4dabf18193072939515e22adb298388d"
#: The digest the mocked registry answers for the worker image unless a test asks
#: for another one.
DEFAULT_DIGEST = "sha256:" + "0" * 63 + "1"
#: Values a test supplies for secrets a stack file does not commit.
TEST_SECRETS = {"registryPassword": "test-registry-token-5f0c"}


def committed_stacks() -> list[str]:
    """The stacks with a committed Pulumi.<stack>.yaml."""
    return sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))


def project_config_schema() -> dict[str, dict]:
    """The `config:` block of Pulumi.yaml: every key with its type and default."""
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def _wire(value: Any) -> str:
    # The CLI hands config to the program as strings, objects and lists as JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pulumi.yaml's defaults overlaid with Pulumi.<stack>.yaml, as the CLI does,
    then with a test's overrides (a value of None removes the key)."""
    values = {
        key: spec["default"]
        for key, spec in project_config_schema().items()
        if "default" in spec
    }
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    for key, value in (stack_file.get("config") or {}).items():
        values[key.removeprefix(f"{PROJECT}:")] = value
    for key, value in (overrides or {}).items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return values


@dataclass
class Registration:
    """One resource as the program registered it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict
    """Inputs with secrets unwrapped: what the provider would receive."""
    wire_inputs: dict
    """Inputs as sent, secrets still wrapped in Pulumi's secret marker."""
    dependencies: list[str]
    options: dict
    state: dict = field(default_factory=dict)


class RecordingMonitor(mocks.MockMonitor):
    """Pulumi's mock monitor, keeping every registration request it sees."""

    def __init__(self, program_mocks: mocks.Mocks):
        super().__init__(program_mocks)
        self.registrations: list[Registration] = []
        self.outputs: dict[str, dict] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        wire = json_format.MessageToDict(request.object)
        registered = self.resources.get(response.urn)
        self.registrations.append(
            Registration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                custom=request.custom,
                inputs=_unwrap_secrets(wire),
                wire_inputs=wire,
                dependencies=list(request.dependencies),
                options={
                    "delete_before_replace": request.deleteBeforeReplace,
                    "replace_on_changes": list(request.replaceOnChanges),
                    "ignore_changes": list(request.ignoreChanges),
                    "custom_timeouts": json_format.MessageToDict(
                        request.customTimeouts
                    ),
                    "protect": request.protect,
                    "retain_on_delete": request.retainOnDelete,
                },
                state=dict(registered.state) if registered else {},
            )
        )
        return response

    def RegisterResourceOutputs(self, request):
        self.outputs[request.urn] = _unwrap_secrets(
            json_format.MessageToDict(request.outputs)
        )
        return super().RegisterResourceOutputs(request)


def _unwrap_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIGNATURE:
            return _unwrap_secrets(value.get("value"))
        return {key: _unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        # The wire format has only doubles; the provider sends integers.
        return int(value)
    return value


def plain_strings(value: Any) -> Iterator[str]:
    """Every string in a wire value that is not inside a secret."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIGNATURE:
            return
        for key, item in value.items():
            yield key
            yield from plain_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from plain_strings(item)
    elif isinstance(value, str):
        yield value


def _digest(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ProgramMocks(mocks.Mocks):
    """Answers as the providers would for the resources this program uses."""

    def __init__(self, image_digest: str | None):
        self.image_digest = image_digest
        #: Every value the mocked providers generated as a secret.
        self.generated_secrets: list[str] = []

    def new_resource(self, args: mocks.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ.startswith("kubernetes:"):
            metadata = dict(state.get("metadata") or {})
            # Auto-naming: the logical name and a suffix, as the provider does.
            metadata.setdefault("name", f"{args.name}-{_digest(args.name)[:8]}")
            state["metadata"] = metadata
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = f"generated{_digest(args.name)[:24]}"
            self.generated_secrets.append(state["result"])
        elif args.typ == "docker:index/image:Image" and self.image_digest:
            repository = state["imageName"].rsplit(":", 1)[0]
            state["repoDigest"] = f"{repository}@{self.image_digest}"
        return f"{args.name}-id", state

    def call(self, args: mocks.MockCallArgs):
        return {}, None


@dataclass
class ProgramRun:
    """What one run of the program registered and exported."""

    stack: str
    config: dict[str, Any]
    registrations: list[Registration]
    component_outputs: dict[str, dict]
    stack_outputs: dict[str, Any]
    secret_values: list[str]
    """Every secret the run knew: from config and generated by the mocks."""

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        """The single registration of a type (and logical name, if given)."""
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, found {found}"
        return found[0]

    def children_of(self, parent: Registration) -> list[Registration]:
        return [r for r in self.registrations if r.parent == parent.urn]

    def kubernetes_objects(self) -> list[tuple[Registration, dict]]:
        """Every Kubernetes object, as the provider would send it to the API."""
        return [
            (r, _as_manifest(r))
            for r in self.registrations
            if r.type.startswith("kubernetes:") and r.custom
        ]


def _as_manifest(registration: Registration) -> dict:
    manifest = {k: v for k, v in registration.inputs.items() if v is not None}
    manifest["metadata"] = registration.state["metadata"]
    return manifest


def _execute(
    stack: str,
    overrides: dict[str, Any] | None,
    secrets: dict[str, str] | None,
    image_digest: str | None,
) -> tuple[ProgramMocks, RecordingMonitor, dict[str, Any], BaseException | None]:
    values = stack_config(stack, overrides)
    secrets = dict(TEST_SECRETS if secrets is None else secrets)
    config = {f"{PROJECT}:{key}": _wire(value) for key, value in values.items()}
    config.update({f"{PROJECT}:{key}": value for key, value in secrets.items()})
    secret_keys = [f"{PROJECT}:{key}" for key in secrets]

    program_mocks = ProgramMocks(image_digest)
    program_mocks.generated_secrets.extend(secrets.values())
    monitor = RecordingMonitor(program_mocks)
    settings.ROOT.set(None)
    mocks.set_mocks(
        program_mocks,
        project=PROJECT,
        stack=stack,
        preview=image_digest is None,
        monitor=monitor,
    )
    pulumi.runtime.set_all_config(config, secret_keys)
    try:
        _sync_await(
            run_pulumi_func(lambda: runpy.run_path(str(MAIN), run_name="__main__"))
        )
    except Exception as error:  # noqa: BLE001 (handed to the caller to judge)
        return program_mocks, monitor, values, error
    return program_mocks, monitor, values, None


def run_program(
    stack: str,
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    image_digest: str | None = DEFAULT_DIGEST,
) -> ProgramRun:
    """Run __main__.py for a committed stack under the mocks.

    Parameters:
        stack: the name in Pulumi.<stack>.yaml.
        overrides: configuration keys (without the project prefix) to change; None
            as a value removes the key.
        secrets: secret configuration keys and values; by default the test values
            of the secrets the committed stacks leave out.
        image_digest: the digest the mocked registry gives the pushed worker image;
            None runs a preview in which the image is not built yet, so its digest
            is unknown (as in `pulumi preview` before the first `pulumi up`).

    Raises:
        Whatever the program raises, e.g. SettingsError for bad configuration.
    """
    program_mocks, monitor, values, error = _execute(
        stack, overrides, secrets, image_digest
    )
    if error is not None:
        raise error
    root = settings.get_root_resource()
    stack_outputs = {
        name: _sync_await(pulumi.Output.from_input(value).future())
        for name, value in root.outputs.items()
    }
    return ProgramRun(
        stack=stack,
        config=values,
        registrations=monitor.registrations,
        component_outputs=monitor.outputs,
        stack_outputs=stack_outputs,
        secret_values=list(program_mocks.generated_secrets),
    )


def run_program_expecting_error(
    stack: str,
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> tuple[BaseException, list[Registration]]:
    """Run the program where it should refuse its configuration.

    Returns:
        The error it raised and every resource registered before it (the stack
        itself excepted).

    Raises:
        AssertionError: the program ran to its end.
    """
    _, monitor, _, error = _execute(stack, overrides, secrets, DEFAULT_DIGEST)
    assert error is not None, f"the {stack} stack ran with {overrides} and {secrets}"
    registered = [r for r in monitor.registrations if r.type != "pulumi:pulumi:Stack"]
    return error, registered
