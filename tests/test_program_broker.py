"""The broker configuration the program renders starts a real RabbitMQ node here,
laid out as the StatefulSet mounts it, and the credentials in its Secret log in.

The node is a private one on loopback ports of its own; the shared broker on 5672
is never touched. The only change to the rendered files is a conf.d file that
moves the AMQP listener to a free loopback port, loaded after the rendered ones.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from components.rabbitmq_config import CONFIG_DIR, DATA_DIR, MEMORY_WATERMARK
from components.settings import memory_bytes
from tests.pulumi_harness import ProgramRun, committed_stacks, run_program

#: How long a private node may take to write its pid file (about 3 s here).
BOOT_SECONDS = 60

pytestmark = pytest.mark.skipif(
    shutil.which("rabbitmq-server") is None, reason="needs rabbitmq-server"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrivateNode:
    """A RabbitMQ node started from the rendered files."""

    name: str
    amqp_port: int
    cookie: str
    run: ProgramRun
    container: dict

    def ctl(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [_script(tool), "-n", self.name, "--erlang-cookie", self.cookie]
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def url_from_secret(self) -> str:
        """The Secret's broker URL, its host swapped for this node's port."""
        credentials = self.run.one("kubernetes:core/v1:Secret", "rabbitmq-credentials")
        url = urlsplit(credentials.inputs["stringData"]["url"])
        netloc = f"{url.netloc.rpartition('@')[0]}@127.0.0.1:{self.amqp_port}"
        return urlunsplit(url._replace(netloc=netloc))


def _lay_out_config(run: ProgramRun, pod: dict, config_dir: Path) -> None:
    """Write the projected config volume's files as the kubelet would."""
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    by_name = {
        r.state["metadata"]["name"]: r
        for r in run.registrations
        if r.type.startswith("kubernetes:core/v1:") and "metadata" in r.state
    }
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = by_name[source["configMap"]["name"]].inputs["data"]
            files = {key: data[key] for key in data}
        else:
            secret = by_name[source["secret"]["name"]].inputs["stringData"]
            files = {
                item["path"]: secret[item["key"]] for item in source["secret"]["items"]
            }
        for path, text in files.items():
            (config_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (config_dir / path).write_text(text)


def _give_to_rabbitmq(base: Path) -> None:
    # Started as root, the server drops to the rabbitmq user: let it write.
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=True)


def _script(tool: str) -> str:
    # Debian's wrappers in /usr/sbin switch to the rabbitmq user with `su`, which
    # resets HOME (and so the cookie), and refuse any other user: use the scripts.
    script = Path("/usr/lib/rabbitmq/bin") / tool
    return str(script) if script.exists() else tool


def _as_rabbitmq_user(command: list[str]) -> list[str]:
    """The server's command, environment kept, as an unprivileged user."""
    program = [_script(command[0]), *command[1:]]
    if os.geteuid() == 0:
        return ["runuser", "--preserve-environment", "-u", "rabbitmq", "--", *program]
    return program


@pytest.fixture(scope="module", params=committed_stacks())
def node(request) -> Iterator[PrivateNode]:
    run = run_program(request.param)
    pod = run.one("kubernetes:apps/v1:StatefulSet").inputs["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # Not under pytest's tmp_path: its parent is private to root, and the server
    # runs as the rabbitmq user.
    base = Path(tempfile.mkdtemp(prefix="workqueue-broker-"))
    base.chmod(0o755)
    try:
        yield from _start_node(run, pod, container, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start_node(
    run: ProgramRun, pod: dict, container: dict, base: Path
) -> Iterator[PrivateNode]:
    amqp_port = _free_port()
    cookie = _lay_out_files(run, pod, base, amqp_port)
    name = f"wqtest{uuid.uuid4().hex[:8]}@localhost"
    node = PrivateNode(name, amqp_port, cookie, run, container)
    pid_file, console = base / "node.pid", base / "console.log"

    with console.open("wb") as output:
        server = subprocess.Popen(
            _as_rabbitmq_user(container["command"]),
            env=_node_environment(container, node.name, base),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while not pid_file.exists() and server.poll() is None:
            assert time.monotonic() < deadline, "the node wrote no pid file"
            time.sleep(0.2)
        assert server.poll() is None, f"the node stopped: {console.read_text()}"
        waited = node.ctl("rabbitmqctl", "wait", str(pid_file), "--timeout", "60")
        assert waited.returncode == 0, f"the node did not boot: {console.read_text()}"
        yield node
    finally:
        # With the pid file, `stop` returns once the node's OS process has ended.
        if node.ctl("rabbitmqctl", "stop", str(pid_file)).returncode != 0:
            server.terminate()
        server.wait(timeout=60)


def _lay_out_files(run: ProgramRun, pod: dict, base: Path, amqp_port: int) -> str:
    """The config and data directories as the pod sees them; returns the cookie."""
    config_dir, data_dir = base / "etc", base / "data"
    config_dir.mkdir()
    data_dir.mkdir()
    _lay_out_config(run, pod, config_dir)
    (config_dir / "conf.d/99-test-listener.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
    )
    # What the init container does: the cookie from its Secret, owner-only.
    cookie_secret = run.one("kubernetes:core/v1:Secret", "rabbitmq-erlang-cookie")
    cookie = cookie_secret.inputs["stringData"][".erlang.cookie"]
    (data_dir / ".erlang.cookie").write_text(cookie)
    (data_dir / ".erlang.cookie").chmod(stat.S_IRUSR)
    _give_to_rabbitmq(base)
    return cookie


def _node_environment(container: dict, name: str, base: Path) -> dict[str, str]:
    """The container's environment with its paths moved under `base`, plus what
    makes the node private: its name, ports and log directory, loopback only."""
    rendered = {
        e["name"]: e["value"]
        .replace(CONFIG_DIR, str(base / "etc"))
        .replace(DATA_DIR, str(base / "data"))
        for e in container["env"]
    }
    return {
        "PATH": os.environ["PATH"],
        **rendered,
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_DIST_PORT": str(_free_port()),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "node.pid"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "no-rabbitmq-env.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "no-advanced.config"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            "-kernel inet_dist_use_interface {127,0,0,1}"
        ),
    }


def test_the_secret_credentials_log_in(node):
    connection = pika.BlockingConnection(pika.URLParameters(node.url_from_secret()))
    try:
        assert connection.channel().is_open
    finally:
        connection.close()


def test_the_only_user_is_the_configured_one(node):
    users = node.ctl("rabbitmqctl", "-q", "list_users").stdout

    names = {line.split()[0] for line in users.splitlines()[1:] if line.strip()}
    assert names == {node.run.config["brokerUsername"]}, users


def test_the_guest_user_is_refused(node):
    url = f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/%2F"

    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url))


def test_the_memory_alarm_is_the_rendered_one(node):
    limit = node.container["resources"]["limits"]["memory"]

    answer = node.ctl("rabbitmqctl", "eval", "vm_memory_monitor:get_memory_limit().")

    assert answer.returncode == 0, answer.stderr
    assert int(answer.stdout.strip()) == int(memory_bytes(limit) * MEMORY_WATERMARK)


def test_no_plugin_is_enabled(node):
    answer = node.ctl("rabbitmq-plugins", "-q", "list", "--enabled", "--minimal")

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "", f"plugins enabled: {answer.stdout}"


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_the_probes_pass_on_a_running_node(node, probe):
    command = node.container[probe]["exec"]["command"]

    answer = node.ctl(command[0], *command[1:])

    assert answer.returncode == 0, f"{probe} {command} failed: {answer.stderr}"
