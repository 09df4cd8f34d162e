"""What the program knows of the worker image's interface (docs/interface.md): its
command line, the environment both Jobs set and the exit codes of worker/."""

from __future__ import annotations

from types import ModuleType

import pulumi
import pulumi_kubernetes as k8s

from components import pods
from components.settings import Settings
from components.worker_source import load_worker_module

#: The image's entry point, spelled out in the Jobs so the rendered spec says what
#: runs without looking into the image.
COMMAND = ["python", "-m", "workqueue"]


def load_exit_codes() -> ModuleType:
    """worker/workqueue/exitcodes.py, the one place the exit codes are defined."""
    return load_worker_module("exitcodes")


def client_environment(
    settings: Settings, url_secret_name: pulumi.Input[str], url_key: str
) -> list[k8s.core.v1.EnvVarArgs]:
    """The variables both the seed and the work container get.

    AMQP_URL comes only from the broker's Secret; seed and work must agree on the
    queue and its delivery limit, so both read them from `Settings.client_variables`.
    """
    url = k8s.core.v1.EnvVarArgs(
        name="AMQP_URL",
        value_from=k8s.core.v1.EnvVarSourceArgs(
            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                name=url_secret_name, key=url_key
            )
        ),
    )
    return [url, *_env(settings.client_variables())]


def work_environment(settings: Settings) -> list[k8s.core.v1.EnvVarArgs]:
    """The variables only the work container gets."""
    return _env(settings.work_variables())


def _env(variables: dict[str, str]) -> list[k8s.core.v1.EnvVarArgs]:
    return [
        k8s.core.v1.EnvVarArgs(name=name, value=value)
        for name, value in variables.items()
    ]


def pod_failure_policy() -> k8s.batch.v1.PodFailurePolicyArgs:
    """Bad settings or input fail the Job at once; a SIGTERM, an eviction, a
    preemption or a lost node do not count against its backoff limit."""
    codes = load_exit_codes()
    return k8s.batch.v1.PodFailurePolicyArgs(
        rules=[
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="FailJob",
                on_exit_codes=k8s.batch.v1.PodFailurePolicyOnExitCodesRequirementArgs(
                    operator="In", values=[codes.BAD_CONFIG]
                ),
            ),
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="Ignore",
                on_exit_codes=k8s.batch.v1.PodFailurePolicyOnExitCodesRequirementArgs(
                    operator="In", values=[codes.TERMINATED]
                ),
            ),
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="Ignore",
                on_pod_conditions=[
                    k8s.batch.v1.PodFailurePolicyOnPodConditionsPatternArgs(
                        type="DisruptionTarget", status="True"
                    )
                ],
            ),
        ]
    )


def job_container(
    name: str,
    client: pods.ClientPodArgs,
    args: pulumi.Input[list[str]],
    env: list[k8s.core.v1.EnvVarArgs],
    resources: k8s.core.v1.ResourceRequirementsArgs,
    mounts: list[k8s.core.v1.VolumeMountArgs] = (),
) -> k8s.core.v1.ContainerArgs:
    """A Job's container: the worker image by digest, one of its commands, the
    restricted security context and a writable /tmp beside `mounts`."""
    return k8s.core.v1.ContainerArgs(
        name=name,
        image=client.image_ref,
        image_pull_policy="Always",
        command=COMMAND,
        args=args,
        env=env,
        resources=resources,
        security_context=pods.container_security(),
        volume_mounts=[*mounts, pods.tmp_mount()],
    )
