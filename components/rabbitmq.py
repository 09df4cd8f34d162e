"""The broker: a namespace, credentials in Secrets, and either a one-node RabbitMQ
StatefulSet behind two Services or a Secret pointing at an existing broker."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import pods
from components.rabbitmq_config import (
    AMQP_PORT,
    COOKIE_FILE,
    DEFAULT_USER_CONF,
    ENABLED_PLUGINS,
    URL_KEY,
    amqp_url,
    default_user_conf,
    rabbitmq_conf,
)
from components.rabbitmq_pod import BROKER_LABELS, BrokerPod, BrokerPodSpec
from components.settings import Settings

#: The label that marks a pod as a client the broker's NetworkPolicy admits.
CLIENT_LABELS = {"workqueue/broker-client": "true"}
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
    external_address: str | None
    """The existing broker's host:port, without credentials."""
    external_cidrs: tuple[str, ...]
    """Networks the clients may reach the existing broker in."""
    username: str
    """The broker user the clients log in as."""
    password: pulumi.Output[str] | None
    """The broker password (secret); generated when None."""
    erlang_cookie: pulumi.Output[str] | None
    """The Erlang cookie (secret); generated when None."""
    pod: BrokerPodSpec
    """The broker's image, resources and storage."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RabbitMQArgs:
        return cls(
            namespace=settings.namespace,
            create_namespace=not settings.existing_namespace,
            cluster_domain=settings.cluster_domain,
            external_url=settings.broker_url,
            external_address=settings.broker_address,
            external_cidrs=settings.broker_cidrs,
            username=settings.broker_username,
            password=settings.broker_password,
            erlang_cookie=settings.erlang_cookie,
            pod=BrokerPodSpec(
                image=settings.broker_image,
                cpu_request=settings.broker_cpu_request,
                cpu_limit=settings.broker_cpu_limit,
                memory=settings.broker_memory,
                persistence=settings.persistence,
                storage_size=settings.storage_size,
                storage_class=settings.storage_class,
                claim_retention_on_delete=settings.claim_retention_on_delete,
            ),
        )


class RabbitMQ(pulumi.ComponentResource):
    """The project's namespace and its broker, deployed or existing."""

    namespace: pulumi.Output[str]
    """The namespace every object of the project lives in."""
    url_secret_name: pulumi.Output[str]
    """The Secret that holds the broker URL with credentials."""
    url_secret_key: str
    """The key of the broker URL in that Secret."""
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
        self.url_secret_key = URL_KEY
        self.namespace = self._namespace(name)

        if args.external_url is None:
            self._deploy_broker(name)
        else:
            self._use_existing_broker(name, args.external_url)

        self.register_outputs(
            {
                "namespace": self.namespace,
                "url_secret_name": self.url_secret_name,
                "url_secret_key": self.url_secret_key,
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
        self.address = pulumi.Output.from_input(self.args.external_address)
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
        client_service = self._services(name)
        self.address = pulumi.Output.concat(
            client_service.metadata.name,
            ".",
            self.namespace,
            ".svc.",
            self.args.cluster_domain,
            f":{AMQP_PORT}",
        )
        credentials, cookie_secret = self._secrets(name, self.address)
        self.url_secret_name = credentials.metadata.name
        self.stateful_set = self._stateful_set(name, credentials, cookie_secret)
        self._broker_policy(name)
        to_broker = k8s.networking.v1.NetworkPolicyEgressRuleArgs(
            to=[
                k8s.networking.v1.NetworkPolicyPeerArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(
                        match_labels=BROKER_LABELS
                    )
                )
            ],
            ports=[_tcp(AMQP_PORT)],
        )
        self._client_policy(name, [to_broker])

    def _secrets(
        self, name: str, host: pulumi.Output[str]
    ) -> tuple[k8s.core.v1.Secret, k8s.core.v1.Secret]:
        """The credentials (user, password, URL, conf.d file) and the cookie."""
        username = self.args.username
        password = self.args.password or self._generated(f"{name}-password", 32)
        cookie = self.args.erlang_cookie or self._generated(f"{name}-erlang-cookie", 48)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            string_data={
                "username": username,
                "password": password,
                URL_KEY: pulumi.Output.all(password, host).apply(
                    lambda values: amqp_url(username, values[0], values[1])
                ),
                DEFAULT_USER_CONF: password.apply(
                    lambda value: default_user_conf(username, value)
                ),
            },
            opts=self._child(),
        )
        cookie_secret = k8s.core.v1.Secret(
            f"{name}-erlang-cookie",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            string_data={COOKIE_FILE: cookie},
            opts=self._child(),
        )
        return credentials, cookie_secret

    def _stateful_set(
        self,
        name: str,
        credentials: k8s.core.v1.Secret,
        cookie_secret: k8s.core.v1.Secret,
    ) -> k8s.apps.v1.StatefulSet:
        args = self.args
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            data={
                "rabbitmq.conf": rabbitmq_conf(args.pod.memory),
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
        pod = BrokerPod(
            spec=args.pod,
            service_name=self.headless_service.metadata.name,
            account_name=account.metadata.name,
            config_map_name=config.metadata.name,
            credentials_name=credentials.metadata.name,
            cookie_secret_name=cookie_secret.metadata.name,
        )
        return k8s.apps.v1.StatefulSet(
            f"{name}-broker",
            metadata=self._metadata(None, labels=BROKER_LABELS),
            spec=pod.stateful_set_spec(),
            opts=self._child(),
        )

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
