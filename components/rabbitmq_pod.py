"""The broker's StatefulSet spec: one restricted pod running `rabbitmq-server` on a
read-only root, its configuration projected from a ConfigMap and a Secret, its
Erlang cookie copied in by an init container, its data on an emptyDir or a claim."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import pods
from components.rabbitmq_config import (
    AMQP_PORT,
    CONFIG_DIR,
    COOKIE_FILE,
    DATA_DIR,
    DEFAULT_USER_CONF,
    LOG_DIR,
    broker_environment,
)

#: The broker's pods.
BROKER_LABELS = pods.labels("rabbitmq", "broker")
#: Where the init container finds the cookie Secret.
COOKIE_MOUNT = "/run/erlang-cookie"
#: Time for RabbitMQ to close its connections and write its data on SIGTERM.
TERMINATION_GRACE_SECONDS = 60


@dataclass(frozen=True)
class BrokerPodSpec:
    """What the stack's settings say of the broker's pod."""

    image: str
    """The broker image, pinned by tag and digest."""
    cpu_request: str
    cpu_limit: str
    memory: str
    """Memory request and limit; RabbitMQ's memory alarm is derived from it."""
    persistence: bool
    """Keep the data on a volume claim; an emptyDir otherwise."""
    storage_size: str
    storage_class: str
    claim_retention_on_delete: str
    """What happens to the claim when the StatefulSet is deleted: Retain or Delete."""


@dataclass(frozen=True)
class BrokerPod:
    """What the broker's pod is made of: its spec and the objects it refers to."""

    spec: BrokerPodSpec
    service_name: pulumi.Input[str]
    """The headless Service that governs the StatefulSet."""
    account_name: pulumi.Input[str]
    config_map_name: pulumi.Input[str]
    """The ConfigMap with rabbitmq.conf and enabled_plugins."""
    credentials_name: pulumi.Input[str]
    """The Secret with the default user's conf.d file."""
    cookie_secret_name: pulumi.Input[str]

    def stateful_set_spec(self) -> k8s.apps.v1.StatefulSetSpecArgs:
        volumes = [self._config_volume(), self._cookie_volume(), pods.tmp_volume()]
        volumes.append(_empty_dir("logs"))
        claims = None
        if self.spec.persistence:
            claims = [self._claim_template()]
        else:
            volumes.append(_empty_dir("data"))
        return k8s.apps.v1.StatefulSetSpecArgs(
            replicas=1,
            service_name=self.service_name,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=BROKER_LABELS),
            pod_management_policy="OrderedReady",
            persistent_volume_claim_retention_policy=(
                k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                    when_deleted=self.spec.claim_retention_on_delete,
                    when_scaled="Retain",
                )
            ),
            volume_claim_templates=claims,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=BROKER_LABELS),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=self.account_name,
                    automount_service_account_token=False,
                    # Service links would put RABBITMQ_*_PORT variables, which
                    # RabbitMQ reads as settings, into the broker's environment.
                    enable_service_links=False,
                    security_context=pods.pod_security(),
                    termination_grace_period_seconds=TERMINATION_GRACE_SECONDS,
                    init_containers=[self._cookie_container()],
                    containers=[self._broker_container()],
                    volumes=volumes,
                ),
            ),
        )

    def _config_volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(
            name="config",
            projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                default_mode=0o440,
                sources=[
                    k8s.core.v1.VolumeProjectionArgs(
                        config_map=k8s.core.v1.ConfigMapProjectionArgs(
                            name=self.config_map_name
                        )
                    ),
                    k8s.core.v1.VolumeProjectionArgs(
                        secret=k8s.core.v1.SecretProjectionArgs(
                            name=self.credentials_name,
                            items=[
                                k8s.core.v1.KeyToPathArgs(
                                    key=DEFAULT_USER_CONF,
                                    path=f"conf.d/{DEFAULT_USER_CONF}",
                                )
                            ],
                        )
                    ),
                ],
            ),
        )

    def _cookie_volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(
            name="erlang-cookie",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=self.cookie_secret_name, default_mode=0o440
            ),
        )

    def _claim_template(self) -> k8s.core.v1.PersistentVolumeClaimArgs:
        return k8s.core.v1.PersistentVolumeClaimArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(name="data", labels=BROKER_LABELS),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=self.spec.storage_class or None,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": self.spec.storage_size}
                ),
            ),
        )

    def _broker_container(self) -> k8s.core.v1.ContainerArgs:
        return k8s.core.v1.ContainerArgs(
            name="rabbitmq",
            image=self.spec.image,
            image_pull_policy="Always",
            # The server itself, not the image's entry point script, which would
            # try to rewrite files on the read-only root filesystem.
            command=["rabbitmq-server"],
            env=[
                k8s.core.v1.EnvVarArgs(name=key, value=value)
                for key, value in broker_environment(CONFIG_DIR, DATA_DIR).items()
            ],
            ports=[
                k8s.core.v1.ContainerPortArgs(
                    name="amqp", container_port=AMQP_PORT, protocol="TCP"
                )
            ],
            readiness_probe=_diagnostics_probe("check_port_connectivity", 10, 15),
            liveness_probe=_diagnostics_probe("ping", 60, 30),
            resources=pods.resources(
                self.spec.cpu_request, self.spec.cpu_limit, self.spec.memory
            ),
            security_context=pods.container_security(),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(
                    name="config", mount_path=CONFIG_DIR, read_only=True
                ),
                k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
                k8s.core.v1.VolumeMountArgs(name="logs", mount_path=LOG_DIR),
                pods.tmp_mount(),
            ],
        )

    def _cookie_container(self) -> k8s.core.v1.ContainerArgs:
        # Erlang refuses a cookie file that its group may read, and a Secret volume
        # under fsGroup is group-readable: copy it into the data directory,
        # readable by its owner only.
        cookie = f"{DATA_DIR}/{COOKIE_FILE}"
        return k8s.core.v1.ContainerArgs(
            name="erlang-cookie",
            image=self.spec.image,
            image_pull_policy="Always",
            command=[
                "sh",
                "-c",
                f"rm -f {cookie} && cp {COOKIE_MOUNT}/{COOKIE_FILE} {cookie} "
                f"&& chmod 0400 {cookie}",
            ],
            resources=pods.resources("10m", "100m", "32Mi"),
            security_context=pods.container_security(),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(
                    name="erlang-cookie", mount_path=COOKIE_MOUNT, read_only=True
                ),
                k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
                pods.tmp_mount(),
            ],
        )


def _diagnostics_probe(check: str, delay: int, period: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        exec_=k8s.core.v1.ExecActionArgs(command=["rabbitmq-diagnostics", "-q", check]),
        initial_delay_seconds=delay,
        period_seconds=period,
        timeout_seconds=15,
        failure_threshold=3,
    )


def _empty_dir(name: str) -> k8s.core.v1.VolumeArgs:
    return k8s.core.v1.VolumeArgs(
        name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()
    )
