"""What every pod of this project shares: labels, the restricted security context,
a writable /tmp and checkov skip annotations. One place for each of these facts."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

#: The numeric user and group every container runs as; worker/Dockerfile's USER
#: line names the same ids (a test keeps them equal). Above 10000 so it matches no
#: user of the node.
NON_ROOT_ID = 10001
#: Where every container may write scratch files; the root filesystem is read-only.
TMP_PATH = "/tmp"  # noqa: S108 (an emptyDir of its own in the pod)
#: Labels on everything this program deploys.
PART_OF = {
    "app.kubernetes.io/part-of": "workqueue",
    "app.kubernetes.io/managed-by": "pulumi",
}
#: What the Jobs' pods need that a checkov check would refuse, and why.
JOB_SKIPS = {
    "CKV_K8S_35": "the image's interface takes AMQP_URL from the environment, "
    "filled from a Secret",
}


@dataclass(frozen=True)
class ClientPodArgs:
    """What the seed and work pods share: where they run, the image they run and how
    they reach the broker."""

    namespace: pulumi.Input[str]
    image_ref: pulumi.Input[str]
    """The worker image, pinned by digest."""
    pull_secret_names: pulumi.Input[list[str]]
    environment: list[k8s.core.v1.EnvVarArgs]
    """The client environment (AMQP_URL from the broker's Secret)."""
    labels: dict[str, str]
    """Labels the broker's NetworkPolicy admits."""


def labels(name: str, component: str) -> dict[str, str]:
    """The labels of one kind of pod (and the objects around it)."""
    return {
        **PART_OF,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
    }


def pod_security() -> k8s.core.v1.PodSecurityContextArgs:
    """The restricted Pod Security Standard at the pod level."""
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=NON_ROOT_ID,
        run_as_group=NON_ROOT_ID,
        fs_group=NON_ROOT_ID,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security() -> k8s.core.v1.SecurityContextArgs:
    """The restricted Pod Security Standard for a container, with a read-only root."""
    return k8s.core.v1.SecurityContextArgs(
        allow_privilege_escalation=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=NON_ROOT_ID,
        run_as_group=NON_ROOT_ID,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def resources(
    cpu_request: str, cpu_limit: str, memory: str
) -> k8s.core.v1.ResourceRequirementsArgs:
    """Requests and limits; memory is both, so the pod is never overcommitted on it."""
    return k8s.core.v1.ResourceRequirementsArgs(
        requests={"cpu": cpu_request, "memory": memory},
        limits={"cpu": cpu_limit, "memory": memory},
    )


def tmp_volume() -> k8s.core.v1.VolumeArgs:
    """A small memory-backed emptyDir for /tmp."""
    return k8s.core.v1.VolumeArgs(
        name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="64Mi")
    )


def tmp_mount() -> k8s.core.v1.VolumeMountArgs:
    return k8s.core.v1.VolumeMountArgs(name="tmp", mount_path=TMP_PATH)


def checkov_skips(skips: dict[str, str]) -> dict[str, str]:
    """Annotations that tell checkov a check does not apply, each with its reason.

    the README lists every skip; a test keeps the two in step.
    """
    return {
        f"checkov.io/skip{number}": f"{check}={reason}"
        for number, (check, reason) in enumerate(sorted(skips.items()), start=1)
    }


def job_pod_template(
    labels: dict[str, str],
    annotations: dict[str, str],
    account: k8s.core.v1.ServiceAccount,
    container: k8s.core.v1.ContainerArgs,
    volumes: list[k8s.core.v1.VolumeArgs],
    pull_secret_names: pulumi.Input[list[str]],
) -> k8s.core.v1.PodTemplateSpecArgs:
    """The pod of a Job: its own ServiceAccount without a token, restricted, no
    restarts in place (a pod failure policy needs restartPolicy Never)."""
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=annotations),
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=account.metadata.name,
            automount_service_account_token=False,
            enable_service_links=False,
            security_context=pod_security(),
            restart_policy="Never",
            image_pull_secrets=pulumi.Output.from_input(pull_secret_names).apply(
                lambda names: [
                    k8s.core.v1.LocalObjectReferenceArgs(name=name) for name in names
                ]
            ),
            containers=[container],
            volumes=[*volumes, tmp_volume()],
        ),
    )


def job_options(
    parent: pulumi.Resource, after: list[pulumi.Resource], wait_seconds: int
) -> pulumi.ResourceOptions:
    """A Job's options: a child of its component, created once `after` is, and
    awaited by `pulumi up` for at most `wait_seconds`, on create and on update."""
    timeout = f"{wait_seconds}s"
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=after,
        custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
    )


def service_account(
    name: str, namespace: pulumi.Input[str], labels: dict[str, str], parent
) -> k8s.core.v1.ServiceAccount:
    """A ServiceAccount of its own for one kind of pod, with no token mounted."""
    return k8s.core.v1.ServiceAccount(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace, labels=labels),
        automount_service_account_token=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def job_annotations(wait: bool) -> dict[str, str]:
    """The annotations of a Job: how `pulumi up` awaits it, and checkov's skips.

    replaceUnready: a Job that failed is replaced by the next `pulumi up` instead of
    being awaited again. skipAwait: `pulumi up` creates the Job and moves on.
    """
    annotations = {"pulumi.com/replaceUnready": "true", **checkov_skips(JOB_SKIPS)}
    if not wait:
        annotations["pulumi.com/skipAwait"] = "true"
    return annotations
