"""The work Job: parallel pods running the image's `work` command after seeding,
with completions derived from the items in coarse mode."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import image_interface, pods
from components.seed_job import ITEMS_DIGEST_ANNOTATION, items_digest
from components.settings import Egress, Settings

WORK_LABELS = pods.labels("workqueue-work", "work")


@dataclass(frozen=True)
class WorkJobArgs:
    """What the work Job needs: the mode, its sizes and limits, and the seed Job."""

    mode: str
    """coarse: one item per pod; fine: every pod drains the queue."""
    item_count: int
    """The number of items seeded; coarse mode's completions."""
    items_digest: str
    """The seed file's digest, so changed items rerun the work too."""
    parallelism: int
    backoff_limit: int
    deadline_seconds: int
    wait: bool
    """Whether `pulumi up` waits for the Job to complete."""
    timeout_seconds: int
    """How long `pulumi up` waits when it does."""
    cpu_request: str
    cpu_limit: str
    memory: str
    egress: tuple[Egress, ...]
    """Networks the work pods may reach besides the broker and DNS."""
    client: pods.ClientPodArgs
    work_environment: list[k8s.core.v1.EnvVarArgs]
    """The work variables, beside the client environment."""
    after: list[pulumi.Resource]
    """What must complete first: the seed Job."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        client: pods.ClientPodArgs,
        after: list[pulumi.Resource],
    ) -> WorkJobArgs:
        return cls(
            mode=settings.mode,
            item_count=len(settings.items),
            items_digest=items_digest(settings.items),
            parallelism=settings.parallelism,
            backoff_limit=settings.backoff_limit,
            deadline_seconds=settings.work_deadline_seconds,
            wait=settings.wait_for_work,
            timeout_seconds=settings.work_timeout_seconds,
            cpu_request=settings.work_cpu_request,
            cpu_limit=settings.work_cpu_limit,
            memory=settings.work_memory,
            egress=settings.work_egress,
            client=client,
            work_environment=image_interface.work_environment(settings),
            after=after,
        )

    @property
    def completions(self) -> int | None:
        """Coarse mode completes one pod per item; fine mode when a pod exits 0."""
        return self.item_count if self.mode == "coarse" else None


class WorkJob(pulumi.ComponentResource):
    """Processes the queue, once per change of items or image."""

    job_name: pulumi.Output[str]
    """The work Job's name (Pulumi names it, so a replacement gets a new one)."""
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: WorkJobArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("workqueue:index:WorkJob", name, None, opts)
        account = pods.service_account(
            f"{name}-work", args.client.namespace, WORK_LABELS, parent=self
        )
        if args.egress:
            self._egress_policy(name, args)
        self.job = k8s.batch.v1.Job(
            f"{name}-work",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.client.namespace,
                labels=WORK_LABELS,
                annotations=pods.job_annotations(args.wait),
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                completions=args.completions,
                parallelism=args.parallelism,
                backoff_limit=args.backoff_limit,
                active_deadline_seconds=args.deadline_seconds,
                pod_failure_policy=image_interface.pod_failure_policy(),
                template=pods.job_pod_template(
                    {**WORK_LABELS, **args.client.labels},
                    {
                        ITEMS_DIGEST_ANNOTATION: args.items_digest,
                    },
                    account,
                    _container(args),
                    [],
                    args.client.pull_secret_names,
                ),
            ),
            opts=pods.job_options(self, args.after, args.timeout_seconds),
        )
        self.job_name = self.job.metadata.name
        self.register_outputs({"job_name": self.job_name})

    def _egress_policy(self, name: str, args: WorkJobArgs) -> None:
        rules = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        ip_block=k8s.networking.v1.IPBlockArgs(cidr=rule.cidr)
                    )
                ],
                ports=None
                if rule.port is None
                else [k8s.networking.v1.NetworkPolicyPortArgs(port=rule.port)],
            )
            for rule in args.egress
        ]
        k8s.networking.v1.NetworkPolicy(
            f"{name}-egress",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.client.namespace, labels=WORK_LABELS
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=WORK_LABELS),
                policy_types=["Egress"],
                egress=rules,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _container(args: WorkJobArgs) -> k8s.core.v1.ContainerArgs:
    return image_interface.job_container(
        "work",
        args.client,
        ["work"],
        [*args.client.environment, *args.work_environment],
        pods.resources(args.cpu_request, args.cpu_limit, args.memory),
    )
