"""The seeding Job: the items in an immutable ConfigMap and a Job that runs the
image's `seed` command on them, after the broker is ready and the image pushed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import image_interface, pods
from components.settings import WAIT_MARGIN_SECONDS, Settings, seed_file_text

#: Where the seed container finds the items file.
ITEMS_DIR = "/etc/workqueue"
ITEMS_FILE = "items.txt"
#: The pod annotation that carries a digest of the items, so a changed item list
#: shows as a changed pod template (and so a new Job) even before names are known.
ITEMS_DIGEST_ANNOTATION = "workqueue/items-sha256"
#: A failed pod is retried this often (exit 3 or 4); exit 2 fails the Job at once.
SEED_BACKOFF_LIMIT = 2
#: Seeding publishes thousands of items per second: ten minutes is plenty.
SEED_DEADLINE_SECONDS = 600
SEED_LABELS = pods.labels("workqueue-seed", "seed")


def items_digest(items: tuple[str, ...]) -> str:
    """The sha256 of the seed file, which changes exactly when the items do."""
    return hashlib.sha256(seed_file_text(items).encode("utf-8")).hexdigest()


def seed_batch(items: tuple[str, ...], image_ref: str) -> str:
    """The seeding run's id (`seed --batch`): new when the items or the image
    change, so the seeder publishes again, and the same on a rerun of one
    deployment, so a retried pod does not publish a batch twice."""
    text = f"{items_digest(items)} {image_ref}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SeedJobArgs:
    """What the seed Job needs: the items, and the pod it shares with the work Job."""

    client: pods.ClientPodArgs
    items: tuple[str, ...]
    """The work items, one per line of the seed file."""
    after: list[pulumi.Resource]
    """What must be ready before seeding: the broker and the image."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        client: pods.ClientPodArgs,
        after: list[pulumi.Resource],
    ) -> SeedJobArgs:
        return cls(client=client, items=settings.items, after=after)


class SeedJob(pulumi.ComponentResource):
    """Publishes the items to the queue once per change of items or image."""

    job_name: pulumi.Output[str]
    """The seed Job's name (Pulumi names it, so a replacement gets a new one)."""
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: SeedJobArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("workqueue:index:SeedJob", name, None, opts)
        items = k8s.core.v1.ConfigMap(
            f"{name}-items",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.client.namespace, labels=SEED_LABELS
            ),
            data={ITEMS_FILE: seed_file_text(args.items)},
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        account = pods.service_account(
            f"{name}-seed", args.client.namespace, SEED_LABELS, parent=self
        )
        items_volume = k8s.core.v1.VolumeArgs(
            name="items",
            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=items.metadata.name, default_mode=0o444
            ),
        )
        self.job = k8s.batch.v1.Job(
            f"{name}-seed",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.client.namespace,
                labels=SEED_LABELS,
                annotations=pods.job_annotations(wait=True),
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=SEED_BACKOFF_LIMIT,
                active_deadline_seconds=SEED_DEADLINE_SECONDS,
                completions=1,
                parallelism=1,
                pod_failure_policy=image_interface.pod_failure_policy(),
                template=pods.job_pod_template(
                    {**SEED_LABELS, **args.client.labels},
                    {ITEMS_DIGEST_ANNOTATION: items_digest(args.items)},
                    account,
                    _container(args),
                    [items_volume],
                    args.client.pull_secret_names,
                ),
            ),
            opts=pods.job_options(
                self, args.after, SEED_DEADLINE_SECONDS + WAIT_MARGIN_SECONDS
            ),
        )
        self.job_name = self.job.metadata.name
        self.register_outputs({"job_name": self.job_name})


def _container(args: SeedJobArgs) -> k8s.core.v1.ContainerArgs:
    return image_interface.job_container(
        "seed",
        args.client,
        pulumi.Output.from_input(args.client.image_ref).apply(
            lambda image_ref: [
                "seed",
                "--file",
                f"{ITEMS_DIR}/{ITEMS_FILE}",
                "--batch",
                seed_batch(args.items, image_ref),
            ]
        ),
        args.client.environment,
        pods.resources("100m", "500m", "128Mi"),
        [
            k8s.core.v1.VolumeMountArgs(
                name="items", mount_path=ITEMS_DIR, read_only=True
            )
        ],
    )
