"""The worker image: built from worker/, pushed to the stack's registry and referred
to by the digest the push produced, with an image pull Secret when the registry
needs credentials."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s

from components import pods
from components.settings import Settings

#: The build context and Dockerfile, relative to the project directory (where
#: Pulumi runs the program), so the state does not depend on the checkout's path.
BUILD_CONTEXT = "worker"
DOCKERFILE = "worker/Dockerfile"


@dataclass(frozen=True)
class WorkerImageArgs:
    """Where to build the worker image and where to push it."""

    repository: str
    """Registry and repository, e.g. localhost:5001/workqueue-worker."""
    tag: str
    """The tag pushed alongside the digest (the stack's name)."""
    platform: str
    """The platform to build for, e.g. linux/amd64."""
    namespace: pulumi.Input[str]
    """Where the image pull Secret goes, when there is one."""
    registry_username: str
    """The registry user; empty for a registry without credentials."""
    registry_password: pulumi.Output[str] | None
    """The registry password or token (secret)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, namespace: pulumi.Input[str]
    ) -> WorkerImageArgs:
        return cls(
            repository=settings.image_repository,
            tag=settings.stack,
            platform=settings.platform,
            namespace=namespace,
            registry_username=settings.registry_username,
            registry_password=settings.registry_password,
        )

    @property
    def registry_server(self) -> str:
        """The registry's host (and port), without the repository path."""
        return self.repository.split("/", 1)[0]


def docker_config_json(server: str, username: str, password: str) -> str:
    """The .dockerconfigjson an image pull Secret holds for one registry."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "auth": auth}
    return json.dumps({"auths": {server: entry}}, sort_keys=True)


class WorkerImage(pulumi.ComponentResource):
    """The image both Jobs run, pinned by digest."""

    image_ref: pulumi.Output[str]
    """repository@sha256:…, unique per build and push; both Jobs run exactly this."""
    pull_secret_names: pulumi.Output[list[str]]
    """The image pull Secrets the Jobs' pods use (empty without credentials)."""

    def __init__(
        self,
        name: str,
        args: WorkerImageArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("workqueue:index:WorkerImage", name, None, opts)
        credentials = None
        if args.registry_username:
            credentials = docker.RegistryArgs(
                server=args.registry_server,
                username=args.registry_username,
                password=args.registry_password,
            )
        image = docker.Image(
            f"{name}-image",
            image_name=f"{args.repository}:{args.tag}",
            build=docker.DockerBuildArgs(
                context=BUILD_CONTEXT,
                dockerfile=DOCKERFILE,
                platform=args.platform,
            ),
            registry=credentials,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_ref = image.repo_digest

        self.pull_secret_names = pulumi.Output.from_input([])
        if args.registry_username:
            self.pull_secret_names = self._pull_secret(name, args).metadata.name.apply(
                lambda secret_name: [secret_name]
            )

        self.register_outputs(
            {"image_ref": self.image_ref, "pull_secret_names": self.pull_secret_names}
        )

    def _pull_secret(self, name: str, args: WorkerImageArgs) -> k8s.core.v1.Secret:
        config_json = pulumi.Output.secret(args.registry_password).apply(
            lambda password: docker_config_json(
                args.registry_server, args.registry_username, password
            )
        )
        return k8s.core.v1.Secret(
            f"{name}-pull",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.namespace, labels=pods.PART_OF
            ),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": config_json},
            opts=pulumi.ResourceOptions(parent=self),
        )
