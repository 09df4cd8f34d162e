"""The tutorial's tools (Debian's amqp-tools) and the facts about this machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import pika

#: The Debian package with `amqp-publish` and `amqp-consume`.
AMQP_TOOLS_PACKAGE = "amqp-tools"
#: Longest an apt-get step may take, in seconds.
APT_TIMEOUT_SECONDS = 300


def amqp_tools_missing() -> str | None:
    """Install amqp-tools with apt-get when missing and this is root.

    Returns:
        None when `amqp-publish` and `amqp-consume` are there, else why not.
    """
    if _have_amqp_tools():
        return None
    if os.geteuid() != 0:
        return (
            f"amqp-publish and amqp-consume are missing: run "
            f"`sudo apt-get install -y {AMQP_TOOLS_PACKAGE}` and run the bench again"
        )
    print(f"Installing {AMQP_TOOLS_PACKAGE} with apt-get ...", flush=True)
    install = ["apt-get", "install", "-y", "-q", AMQP_TOOLS_PACKAGE]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([install], [["apt-get", "update", "-q"], install]):
        for argv in step:
            subprocess.run(
                argv,
                env=environment,
                stdout=subprocess.DEVNULL,
                timeout=APT_TIMEOUT_SECONDS,
                check=False,
            )
        if _have_amqp_tools():
            return None
    return f"`apt-get install -y {AMQP_TOOLS_PACKAGE}` did not provide the tools"


def _have_amqp_tools() -> bool:
    return all(shutil.which(tool) for tool in ("amqp-publish", "amqp-consume"))


def debian_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def machine(url: str) -> dict[str, object]:
    """What the figures were measured on: CPU, cores, Python, pika, the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        server = connection._impl.server_properties
    finally:
        connection.close()
    version = server.get("version", b"")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pika": pika.__version__,
        "rabbitmq": version.decode() if isinstance(version, bytes) else version,
        "amqp_tools": debian_version(AMQP_TOOLS_PACKAGE),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
