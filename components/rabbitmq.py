"""The broker: a namespace, credentials in Secrets, and either a one-node RabbitMQ
StatefulSet behind two Services or a Secret pointing at an existing broker."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import pods
from components.settings import Settings, memory_bytes

#: RabbitMQ's AMQP 0-9-1 port; rendered into rabbitmq.conf and used by the Services.
AMQP_PORT = 5672
#: The key of the Secret that holds the broker URL the pods read as AMQP_URL.
URL_KEY = "url"
#: The label that marks a pod as a client the broker's NetworkPolicy admits.
CLIENT_LABELS = {"workqueue/broker-client": "true"}
#: The broker's pods.
BROKER_LABELS = pods.labels("rabbitmq", "broker")
#: The fraction of the container's memory limit RabbitMQ may use before it blocks
#: publishers; RabbitMQ's own default share, applied to the limit rather than to the
#: node's memory, which the container cannot have.
MEMORY_WATERMARK = 0.4
#: Where the broker reads its configuration (a projected, read-only volume).
CONFIG_DIR = "/etc/rabbitmq"
#: RabbitMQ's home: the data directory and the Erlang cookie's place.
DATA_DIR = "/var/lib/rabbitmq"
#: The file in conf.d that sets the default user, rendered into a Secret.
DEFAULT_USER_CONF = "10-default-user.conf"
#: The Erlang cookie's key in its Secret and the file the init container copies.
COOKIE_FILE = ".erlang.cookie"
#: The namespace and labels of the cluster DNS pods every client must reach.
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
#: The Pod Security admission level the created namespace enforces.
POD_SECURITY_LEVEL = "restricted"


@dataclass(frozen=True)
class RabbitMQArgs:
    """What the broker component needs from the stack's settings."""

    namespace: str
    """The namespace every object of the project lives in."""
    create_namespace: bool
    """Create the namespace (with Pod Security labels) or use an existing one."""
    cluster_domain: str
    """The cluster DNS domain, for the Service's fully qualified name."""
    external_url: pulumi.Output[str] | None
    """An existing broker's URL (secret); when set no broker is deployed."""
    external_cidrs: tuple[str, ...]
    """Networks the clients may reach the existing broker in."""
    image: str
    """The broker image, pinned by tag and digest."""
    username: str
    """The broker user the clients log in as."""
    password: pulumi.Output[str] | None
    """The broker password (secret); generated when None."""
    erlang_cookie: pulumi.Output[str] | None
    """The Erlang cookie (secret); generated when None."""
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

    @classmethod
    def from_settings(cls, settings: Settings) -> RabbitMQArgs:
        return cls(
            namespace=settings.namespace,
            create_namespace=not settings.existing_namespace,
            cluster_domain=settings.cluster_domain,
            external_url=settings.broker_url,
            external_cidrs=settings.broker_cidrs,
            image=settings.broker_image,
            username=settings.broker_username,
            password=settings.broker_password,
            erlang_cookie=settings.erlang_cookie,
            cpu_request=settings.broker_cpu_request,
            cpu_limit=settings.broker_cpu_limit,
            memory=settings.broker_memory,
            persistence=settings.persistence,
            storage_size=settings.storage_size,
            storage_class=settings.storage_class,
            claim_retention_on_delete=settings.claim_retention_on_delete,
        )


def rabbitmq_conf(memory_limit: str) -> str:
    """The broker's rabbitmq.conf: port, logs to the console, memory alarm."""
    watermark = int(memory_bytes(memory_limit) * MEMORY_WATERMARK)
    return (
        "# Rendered by the workqueue Pulumi program (components/rabbitmq.py).\n"
        f"listeners.tcp.default = {AMQP_PORT}\n"
        "log.console = true\n"
        "log.console.level = info\n"
        "log.file = false\n"
        f"vm_memory_high_watermark.absolute = {watermark}\n"
    )


#: No plugin: the project needs AMQP only, and every plugin is one more port.
ENABLED_PLUGINS = "[].\n"


def default_user_conf(username: str, password: str) -> str:
    """The conf.d file that creates the broker's only user on first boot."""
    return f"default_user = {username}\ndefault_pass = {password}\n"


def amqp_url(username: str, password: str, host: str) -> str:
    """The broker URL the clients use, with credentials and the default vhost."""
    return f"amqp://{quote(username, safe='')}:{quote(password, safe='')}@{host}/%2F"


class RabbitMQ(pulumi.ComponentResource):
    """The project's namespace and its broker, deployed or existing."""

    namespace: pulumi.Output[str]
    """The namespace every object of the project lives in."""
    url_secret_name: pulumi.Output[str]
    """The Secret whose `url` key holds the broker URL with credentials."""
    address: pulumi.Output[str]
    """The broker's host:port, without credentials."""
    client_labels: dict[str, str]
    """Labels a pod needs for the broker's NetworkPolicy to admit it."""

    def __init__(
        self, name: str, args: RabbitMQArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("workqueue:index:RabbitMQ", name, None, opts)
        self.args = args
        self.client_labels = dict(CLIENT_LABELS)
        self.namespace = self._namespace(name)

        if args.external_url is None:
            self._deploy_broker(name)
        else:
            self._use_existing_broker(name, args.external_url)

        self.register_outputs(
            {
                "namespace": self.namespace,
                "url_secret_name": self.url_secret_name,
                "address": self.address,
                "client_labels": self.client_labels,
            }
        )

    def _child(self, **extra) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **extra)

    def _metadata(self, name: str | None, **extra) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self.namespace, **extra)

    def _namespace(self, name: str) -> pulumi.Output[str]:
        if not self.args.create_namespace:
            return pulumi.Output.from_input(self.args.namespace)
        enforce = {
            f"pod-security.kubernetes.io/{mode}": POD_SECURITY_LEVEL
            for mode in ("enforce", "audit", "warn")
        }
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.args.namespace, labels={**pods.PART_OF, **enforce}
            ),
            opts=self._child(),
        )
        return namespace.metadata.name

    def _use_existing_broker(self, name: str, url: pulumi.Output[str]) -> None:
        secret = k8s.core.v1.Secret(
            f"{name}-url",
            metadata=self._metadata(None, labels=pods.PART_OF),
            string_data={URL_KEY: url},
            opts=self._child(),
        )
        self.url_secret_name = secret.metadata.name
        self.address = pulumi.Output.unsecret(
            url.apply(lambda u: urlsplit(u).netloc.rpartition("@")[2])
        )
        egress = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)
                    )
                    for cidr in self.args.external_cidrs
                ]
            )
        ]
        self._client_policy(name, egress)

    def _deploy_broker(self, name: str) -> None:
        args = self.args
        password = args.password or self._generated(f"{name}-password", 32)
        cookie = args.erlang_cookie or self._generated(f"{name}-erlang-cookie", 48)

        client_service = self._services(name)
        host = pulumi.Output.concat(
            client_service.metadata.name,
            ".",
            self.namespace,
            ".svc.",
            args.cluster_domain,
            f":{AMQP_PORT}",
        )
        self.address = host
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            string_data={
                "username": args.username,
                "password": password,
                URL_KEY: pulumi.Output.all(password, host).apply(
                    lambda values: amqp_url(args.username, values[0], values[1])
                ),
                DEFAULT_USER_CONF: password.apply(
                    lambda value: default_user_conf(args.username, value)
                ),
            },
            opts=self._child(),
        )
        self.url_secret_name = credentials.metadata.name
        cookie_secret = k8s.core.v1.Secret(
            f"{name}-erlang-cookie",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            string_data={COOKIE_FILE: cookie},
            opts=self._child(),
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            data={
                "rabbitmq.conf": rabbitmq_conf(args.memory),
                "enabled_plugins": ENABLED_PLUGINS,
            },
            opts=self._child(),
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-broker",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            automount_service_account_token=False,
            opts=self._child(),
        )
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-broker",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            spec=self._stateful_set_spec(account, config, credentials, cookie_secret),
            opts=self._child(),
        )
        self._broker_policy(name)
        dns_and_broker = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        pod_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_labels=BROKER_LABELS
                        )
                    )
                ],
                ports=[_tcp(AMQP_PORT)],
            )
        ]
        self._client_policy(name, dns_and_broker)

    def _generated(self, name: str, length: int) -> pulumi.Output[str]:
        # Letters and digits only, so the value needs no quoting in a URL or a
        # configuration file.
        return random.RandomPassword(
            name, length=length, special=False, opts=self._child()
        ).result

    def _services(self, name: str) -> k8s.core.v1.Service:
        ports = [
            k8s.core.v1.ServicePortArgs(
                name="amqp", port=AMQP_PORT, target_port="amqp", protocol="TCP"
            )
        ]
        self.headless_service = k8s.core.v1.Service(
            f"{name}-headless",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            spec=k8s.core.v1.ServiceSpecArgs(
                cluster_ip="None",
                selector=BROKER_LABELS,
                ports=ports,
                publish_not_ready_addresses=True,
            ),
            opts=self._child(),
        )
        self.client_service = k8s.core.v1.Service(
            f"{name}-amqp",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP", selector=BROKER_LABELS, ports=ports
            ),
            opts=self._child(),
        )
        return self.client_service

    def _stateful_set_spec(
        self,
        account: k8s.core.v1.ServiceAccount,
        config: k8s.core.v1.ConfigMap,
        credentials: k8s.core.v1.Secret,
        cookie_secret: k8s.core.v1.Secret,
    ) -> k8s.apps.v1.StatefulSetSpecArgs:
        args = self.args
        config_volume = k8s.core.v1.VolumeArgs(
            name="config",
            projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                default_mode=0o440,
                sources=[
                    k8s.core.v1.VolumeProjectionArgs(
                        config_map=k8s.core.v1.ConfigMapProjectionArgs(
                            name=config.metadata.name
                        )
                    ),
                    k8s.core.v1.VolumeProjectionArgs(
                        secret=k8s.core.v1.SecretProjectionArgs(
                            name=credentials.metadata.name,
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
        volumes = [
            config_volume,
            k8s.core.v1.VolumeArgs(
                name="erlang-cookie",
                secret=k8s.core.v1.SecretVolumeSourceArgs(
                    secret_name=cookie_secret.metadata.name, default_mode=0o440
                ),
            ),
            pods.tmp_volume(),
            k8s.core.v1.VolumeArgs(
                name="logs", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()
            ),
        ]
        claims = None
        if args.persistence:
            claims = [self._claim_template()]
        else:
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()
                )
            )
        return k8s.apps.v1.StatefulSetSpecArgs(
            replicas=1,
            service_name=self.headless_service.metadata.name,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=BROKER_LABELS),
            pod_management_policy="OrderedReady",
            persistent_volume_claim_retention_policy=(
                k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                    when_deleted=args.claim_retention_on_delete, when_scaled="Retain"
                )
            ),
            volume_claim_templates=claims,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=BROKER_LABELS),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=account.metadata.name,
                    automount_service_account_token=False,
                    # Service links would put RABBITMQ_*_PORT variables, which
                    # RabbitMQ reads as settings, into the broker's environment.
                    enable_service_links=False,
                    security_context=pods.pod_security(),
                    termination_grace_period_seconds=60,
                    init_containers=[_cookie_container(args.image)],
                    containers=[self._broker_container()],
                    volumes=volumes,
                ),
            ),
        )

    def _claim_template(self) -> k8s.core.v1.PersistentVolumeClaimArgs:
        return k8s.core.v1.PersistentVolumeClaimArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(name="data", labels=BROKER_LABELS),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=self.args.storage_class or None,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": self.args.storage_size}
                ),
            ),
        )

    def _broker_container(self) -> k8s.core.v1.ContainerArgs:
        args = self.args

        def probe(command: str, delay: int, period: int) -> k8s.core.v1.ProbeArgs:
            return k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(
                    command=["rabbitmq-diagnostics", "-q", command]
                ),
                initial_delay_seconds=delay,
                period_seconds=period,
                timeout_seconds=15,
                failure_threshold=3,
            )

        return k8s.core.v1.ContainerArgs(
            name="rabbitmq",
            image=args.image,
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
            readiness_probe=probe("check_port_connectivity", 10, 15),
            liveness_probe=probe("ping", 60, 30),
            resources=pods.resources(args.cpu_request, args.cpu_limit, args.memory),
            security_context=pods.container_security(),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(
                    name="config", mount_path=CONFIG_DIR, read_only=True
                ),
                k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
                k8s.core.v1.VolumeMountArgs(
                    name="logs", mount_path="/var/log/rabbitmq"
                ),
                pods.tmp_mount(),
            ],
        )

    def _broker_policy(self, name: str) -> None:
        k8s.networking.v1.NetworkPolicy(
            f"{name}-broker",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=BROKER_LABELS),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels=self.client_labels
                                )
                            )
                        ],
                        ports=[_tcp(AMQP_PORT)],
                    )
                ],
                egress=[_dns_egress()],
            ),
            opts=self._child(),
        )

    def _client_policy(
        self, name: str, egress: list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]
    ) -> None:
        k8s.networking.v1.NetworkPolicy(
            f"{name}-clients",
            metadata=self._metadata(None, labels=pods.PART_OF),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels=self.client_labels
                ),
                policy_types=["Ingress", "Egress"],
                egress=[_dns_egress(), *egress],
            ),
            opts=self._child(),
        )


def broker_environment(config_dir: str, data_dir: str) -> dict[str, str]:
    """Where RabbitMQ finds its files; the broker-config test points it at copies."""
    return {
        "HOME": data_dir,
        "RABBITMQ_CONFIG_FILE": f"{config_dir}/rabbitmq.conf",
        "RABBITMQ_CONFIG_FILES": f"{config_dir}/conf.d",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{config_dir}/enabled_plugins",
        "RABBITMQ_MNESIA_BASE": f"{data_dir}/mnesia",
    }


def _cookie_container(image: str) -> k8s.core.v1.ContainerArgs:
    # Erlang refuses a cookie file that its group may read, and a Secret volume
    # under fsGroup is group-readable: copy it into the data directory, owner-only.
    cookie = f"{DATA_DIR}/{COOKIE_FILE}"
    return k8s.core.v1.ContainerArgs(
        name="erlang-cookie",
        image=image,
        image_pull_policy="Always",
        command=[
            "sh",
            "-c",
            f"rm -f {cookie} && cp /run/erlang-cookie/{COOKIE_FILE} {cookie} "
            f"&& chmod 0400 {cookie}",
        ],
        resources=pods.resources("10m", "100m", "32Mi"),
        security_context=pods.container_security(),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(
                name="erlang-cookie", mount_path="/run/erlang-cookie", read_only=True
            ),
            k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
            pods.tmp_mount(),
        ],
    )


def _tcp(port: int) -> k8s.networking.v1.NetworkPolicyPortArgs:
    return k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol="TCP")


def _dns_egress() -> k8s.networking.v1.NetworkPolicyEgressRuleArgs:
    return k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[
            k8s.networking.v1.NetworkPolicyPeerArgs(
                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={"kubernetes.io/metadata.name": DNS_NAMESPACE}
                ),
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=DNS_POD_LABELS),
            )
        ],
        ports=[
            k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol="UDP"),
            k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol="TCP"),
        ],
    )
