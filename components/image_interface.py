"""What the program knows of the worker image's interface (docs/interface.md): its
command line, the environment both Jobs set and the exit codes of worker/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pulumi
import pulumi_kubernetes as k8s

from components.settings import Settings

#: The image's entry point, spelled out in the Jobs so the rendered spec says what
#: runs without looking into the image.
COMMAND = ["python", "-m", "workqueue"]
#: The worker package's exit codes, the one place they are defined.
EXITCODES_PATH = (
    Path(__file__).resolve().parent.parent / "worker/workqueue/exitcodes.py"
)


def load_exit_codes() -> ModuleType:
    """worker/workqueue/exitcodes.py, loaded by path: the program does not need the
    worker's own dependencies to read four integers."""
    spec = importlib.util.spec_from_file_location("workqueue_exitcodes", EXITCODES_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client_environment(
    settings: Settings, url_secret_name: pulumi.Input[str], url_key: str
) -> list[k8s.core.v1.EnvVarArgs]:
    """The variables both the seed and the work container get.

    AMQP_URL comes only from the broker's Secret; seed and work must agree on the
    queue and its delivery limit, so both read them from here.
    """
    return [
        k8s.core.v1.EnvVarArgs(
            name="AMQP_URL",
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                    name=url_secret_name, key=url_key
                )
            ),
        ),
        _env("QUEUE_NAME", settings.queue),
        _env("DELIVERY_LIMIT", str(settings.delivery_limit)),
        _env("MAX_ITEM_BYTES", str(settings.max_item_bytes)),
        _env("LOG_LEVEL", settings.log_level),
    ]


def work_environment(settings: Settings) -> list[k8s.core.v1.EnvVarArgs]:
    """The variables only the work container gets."""
    env = [
        _env("WORK_MODE", settings.mode),
        _env("WORK_SECONDS", settings.work_seconds),
    ]
    if settings.work_handler:
        env.append(_env("WORK_HANDLER", settings.work_handler))
    if settings.work_command:
        env.append(_env("WORK_COMMAND", settings.work_command))
    return env


def _env(name: str, value: str) -> k8s.core.v1.EnvVarArgs:
    return k8s.core.v1.EnvVarArgs(name=name, value=value)


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
