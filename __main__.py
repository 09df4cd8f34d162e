"""The workqueue stack: read the settings, build the components, export."""

import pulumi

from components.image_interface import client_environment
from components.pods import ClientPodArgs
from components.rabbitmq import RabbitMQ, RabbitMQArgs
from components.seed_job import SeedJob, SeedJobArgs
from components.settings import load_settings
from components.work_job import WorkJob, WorkJobArgs
from components.worker_image import WorkerImage, WorkerImageArgs

settings = load_settings()

broker = RabbitMQ("rabbitmq", RabbitMQArgs.from_settings(settings))
image = WorkerImage(
    "worker", WorkerImageArgs.from_settings(settings, namespace=broker.namespace)
)
client = ClientPodArgs(
    namespace=broker.namespace,
    image_ref=image.image_ref,
    pull_secret_names=image.pull_secret_names,
    environment=client_environment(
        settings, broker.url_secret_name, broker.url_secret_key
    ),
    labels=broker.client_labels,
)
seed = SeedJob(
    "seed", SeedJobArgs.from_settings(settings, client, after=[broker, image])
)
work = WorkJob("work", WorkJobArgs.from_settings(settings, client, after=[seed.job]))

pulumi.export("namespace", broker.namespace)
pulumi.export("brokerAddress", broker.address)
pulumi.export("queue", settings.queue)
pulumi.export("image", image.image_ref)
pulumi.export("seedJob", seed.job_name)
pulumi.export("workJob", work.job_name)
pulumi.export(
    "followWork",
    pulumi.Output.format(
        "kubectl logs --namespace {0} --follow --prefix --max-log-requests {1} "
        "--selector batch.kubernetes.io/job-name={2}",
        broker.namespace,
        settings.parallelism,
        work.job_name,
    ),
)
