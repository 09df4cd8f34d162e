"""A private RabbitMQ node on loopback, from Debian's rabbitmq-server, for local runs.

`make demo` starts one when no broker answers, and the fault tests start their own
to stop and restart it without touching anyone else's broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: The Debian package that provides `rabbitmq-server` and `rabbitmqctl`.
DEBIAN_PACKAGE = "rabbitmq-server"
#: How long a node may take to boot or stop, in seconds (about 6 s is usual).
BOOT_TIMEOUT_SECONDS = 60


class BrokerNotInstalled(RuntimeError):
    """`rabbitmq-server` is not on this machine."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def broker_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: The broker Debian's rabbitmq-server package runs, with its loopback-only guest user.
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5672
LOCAL_URL = f"amqp://guest:guest@{LOCAL_HOST}:{LOCAL_PORT}/%2F"


def local_or_private_broker() -> tuple[str, PrivateNode | None]:
    """The broker on localhost:5672 if one answers, else a private node started now.

    Returns:
        The broker's URL, and the node to stop afterwards (None for the local one).
    Raises:
        BrokerNotInstalled: no broker answers and none can be started here.
    """
    if broker_answers(LOCAL_HOST, LOCAL_PORT):
        return LOCAL_URL, None
    print(
        f"No broker on {LOCAL_HOST}:{LOCAL_PORT}; starting a private RabbitMQ node ...",
        flush=True,
    )
    node = PrivateNode().start()
    return node.url, node


class PrivateNode:
    """One RabbitMQ node with its own name, ports and data directory under `base_dir`.

    `config` is the text of its rabbitmq.conf and `advanced_config` that of its
    advanced.config (Erlang terms, for settings rabbitmq.conf cannot express); a user
    guest/guest that may log in over loopback is always there. Use it as a context
    manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        config: str = "",
        plugins: str = "[].",
        advanced_config: str = "[].",
    ):
        if shutil.which("rabbitmq-server") is None:
            raise BrokerNotInstalled(
                "rabbitmq-server is not installed: run "
                f"`sudo apt-get install -y {DEBIAN_PACKAGE}`, or set AMQP_URL"
            )
        if os.geteuid() != 0:
            # Debian's wrapper runs the server only for root (which it drops to the
            # rabbitmq user) or for the rabbitmq user itself.
            raise BrokerNotInstalled(
                "starting a private RabbitMQ node takes root with Debian's "
                "rabbitmq-server: run as root, start the system broker "
                "(`sudo systemctl start rabbitmq-server`), or set AMQP_URL"
            )
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="workqueue-rabbit-"))
        self.port = free_port()
        self.name = f"workqueue{self.port}@localhost"
        self._config = config
        self._plugins = plugins
        self._advanced_config = advanced_config
        self.pid_file = self.base_dir / "node.pid"

    @property
    def url(self) -> str:
        """The node's AMQP URL for the guest user, over loopback."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def environment(self) -> dict[str, str]:
        """The environment `rabbitmq-server` and `rabbitmqctl` need for this node."""
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base_dir / "advanced.config"),
        }

    def start(self) -> PrivateNode:
        """Boot the node and wait until it accepts connections.

        Raises:
            subprocess.CalledProcessError: the node did not boot; its log is in
                `base_dir/log`.
        """
        for folder in ("mnesia", "log"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n{self._config}\n"
        )
        (self.base_dir / "enabled_plugins").write_text(self._plugins + "\n")
        (self.base_dir / "advanced.config").write_text(self._advanced_config + "\n")
        if os.geteuid() == 0:
            # Started as root, the server drops to the rabbitmq user.
            shutil.chown(self.base_dir, "rabbitmq", "rabbitmq")
            for path in self.base_dir.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")

        self._dist_env = self.environment()
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self._dist_env,
            check=True,
            capture_output=True,
            timeout=BOOT_TIMEOUT_SECONDS,
        )
        self.ctl("wait", "--timeout", str(BOOT_TIMEOUT_SECONDS), str(self.pid_file))
        log.info("event=node-started node=%s port=%d", self.name, self.port)
        return self

    def ctl(self, *args: str) -> str:
        """Run `rabbitmqctl` against this node; returns what it printed."""
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args],
            env=self._dist_env,
            check=True,
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT_SECONDS + 30,
        )
        return done.stdout

    def stop(self, remove: bool = True) -> None:
        """Stop the node and wait for its process to end; remove its files if asked."""
        try:
            self.ctl("stop", str(self.pid_file))
        except subprocess.CalledProcessError as error:
            log.warning(
                "event=node-stop outcome=failed node=%s error=%r",
                self.name,
                error.stderr,
            )
        if remove and self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PrivateNode:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
