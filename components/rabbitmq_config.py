"""What the broker is told: its configuration files, its environment, and the URL
its clients use. The broker-config test boots a real node from these."""

from __future__ import annotations

from urllib.parse import quote

from components.settings import memory_bytes

#: RabbitMQ's AMQP 0-9-1 port; rendered into rabbitmq.conf and used by the Services.
AMQP_PORT = 5672
#: The key of the Secret that holds the broker URL the pods read as AMQP_URL.
URL_KEY = "url"
#: The fraction of the container's memory limit RabbitMQ may use before it blocks
#: publishers; RabbitMQ's own default share, applied to the limit rather than to the
#: node's memory, which the container cannot have.
MEMORY_WATERMARK = 0.4
#: Where the broker reads its configuration (a projected, read-only volume).
CONFIG_DIR = "/etc/rabbitmq"
#: RabbitMQ's home: the data directory and the Erlang cookie's place.
DATA_DIR = "/var/lib/rabbitmq"
#: Where the broker would write log files (it logs to the console; an emptyDir).
LOG_DIR = "/var/log/rabbitmq"
#: The file in conf.d that sets the default user, rendered into a Secret.
DEFAULT_USER_CONF = "10-default-user.conf"
#: The Erlang cookie's key in its Secret and the file the init container copies.
COOKIE_FILE = ".erlang.cookie"
#: No plugin: the project needs AMQP only, and every plugin is one more port.
ENABLED_PLUGINS = "[].\n"


def rabbitmq_conf(memory_limit: str) -> str:
    """The broker's rabbitmq.conf: port, logs to the console, memory alarm."""
    watermark = int(memory_bytes(memory_limit) * MEMORY_WATERMARK)
    return (
        "# Rendered by the workqueue Pulumi program (components/rabbitmq_config.py).\n"
        f"listeners.tcp.default = {AMQP_PORT}\n"
        "log.console = true\n"
        "log.console.level = info\n"
        "log.file = false\n"
        f"vm_memory_high_watermark.absolute = {watermark}\n"
    )


def default_user_conf(username: str, password: str) -> str:
    """The conf.d file that creates the broker's only user on first boot."""
    return f"default_user = {username}\ndefault_pass = {password}\n"


def amqp_url(username: str, password: str, host: str) -> str:
    """The broker URL the clients use, with credentials and the default vhost."""
    return f"amqp://{quote(username, safe='')}:{quote(password, safe='')}@{host}/%2F"


def broker_environment(config_dir: str, data_dir: str) -> dict[str, str]:
    """Where RabbitMQ finds its files; the broker-config test points it at copies."""
    return {
        "HOME": data_dir,
        "RABBITMQ_CONFIG_FILE": f"{config_dir}/rabbitmq.conf",
        "RABBITMQ_CONFIG_FILES": f"{config_dir}/conf.d",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{config_dir}/enabled_plugins",
        "RABBITMQ_MNESIA_BASE": f"{data_dir}/mnesia",
    }
