"""The stack's configuration as one validated, typed object.

Every check runs in `load_settings`, before the program registers any resource, and
every error names the configuration key and what it accepts. The values the pods get
pass the worker image's own checks too (worker/workqueue/settings.py).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pulumi

from components.worker_source import load_worker_module

#: The worker's own settings rules (worker/workqueue/settings.py): the program runs
#: them on the environment it gives the pods, so a value the image would refuse at
#: start-up is refused before anything is deployed.
WORKER_SETTINGS = load_worker_module("settings")
#: The project's configuration namespace: keys read as `workqueue:<name>`.
NAMESPACE = "workqueue"
#: The repository's root, where `itemsFile` paths start.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Kubernetes rejects a ConfigMap whose data exceeds 1 MiB in total.
CONFIGMAP_LIMIT_BYTES = 1024 * 1024
#: A Kubernetes object name that must be a DNS-1123 label (namespaces, for one).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: An image repository path: lowercase components separated by / . _ or -.
IMAGE_REPOSITORY = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
#: A registry host with an optional port and path, as an image reference starts:
#: no scheme, which Docker would read as part of the repository name.
REGISTRY = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
#: A Kubernetes resource quantity as used for CPU and memory.
QUANTITY = re.compile(r"^(\d+(\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
#: Bytes per unit suffix of a memory quantity.
MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
#: What a password or cookie may hold: it goes into a URL and a configuration file.
PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{12,128}$")
ERLANG_COOKIE = re.compile(r"^[A-Za-z0-9]{20,255}$")
#: The AMQP port each URL scheme implies when the URL names none.
AMQP_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
#: Characters that end a URL's authority: unencoded in a password, they move the
#: rest of it into the path, query or fragment, and the password into the host.
AUTHORITY_ENDS = ("/", "?", "#")
REGISTRY_TOKEN = re.compile(r"^\S+$")
MODES = WORKER_SETTINGS.MODES
LOG_LEVELS = WORKER_SETTINGS.LOG_LEVELS
CLAIM_RETENTION = ("Retain", "Delete")
#: Stands in for the broker's URL when the worker's rules check the environment:
#: the real one is a secret the pods read from a Secret.
PLACEHOLDER_AMQP_URL = "amqp://user:password@broker.invalid:5672/%2F"
#: The configuration key behind each variable the program sets in the pods.
VARIABLE_KEYS = {
    "QUEUE_NAME": "queue",
    "DELIVERY_LIMIT": "deliveryLimit",
    "MAX_ITEM_BYTES": "maxItemBytes",
    "LOG_LEVEL": "logLevel",
    "WORK_MODE": "mode",
    "WORK_SECONDS": "workSeconds",
    "WORK_HANDLER": "workHandler",
    "WORK_COMMAND": "workCommand",
}
#: Extra seconds `pulumi up` waits past the work Job's own deadline by default, so
#: the Job's DeadlineExceeded is what gets reported, not a Pulumi timeout.
WAIT_MARGIN_SECONDS = 300


class SettingsError(pulumi.RunError):
    """A configuration value is missing or not one the program accepts."""


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def _fail(name: str, accepts: str, got: object = None) -> SettingsError:
    shown = "" if got is None else f" (got {got!r})"
    return SettingsError(f"{_key(name)} must be {accepts}{shown}")


@dataclass(frozen=True)
class Egress:
    """A network the work pods may reach, optionally on one TCP port only."""

    cidr: str
    port: int | None


@dataclass(frozen=True)
class Settings:
    """Everything the components need from the stack's configuration."""

    stack: str
    items: tuple[str, ...]
    mode: str
    parallelism: int
    work_seconds: str
    work_handler: str
    work_command: str
    queue: str
    delivery_limit: int
    max_item_bytes: int
    log_level: str

    namespace: str
    existing_namespace: bool
    cluster_domain: str

    broker_url: pulumi.Output[str] | None
    broker_address: str | None
    broker_cidrs: tuple[str, ...]
    broker_image: str
    broker_username: str
    broker_password: pulumi.Output[str] | None
    erlang_cookie: pulumi.Output[str] | None
    broker_cpu_request: str
    broker_cpu_limit: str
    broker_memory: str
    persistence: bool
    storage_size: str
    storage_class: str
    claim_retention_on_delete: str

    registry: str
    image_name: str
    registry_username: str
    registry_password: pulumi.Output[str] | None
    platform: str

    work_cpu_request: str
    work_cpu_limit: str
    work_memory: str
    backoff_limit: int
    work_deadline_seconds: int
    wait_for_work: bool
    work_timeout_seconds: int
    work_egress: tuple[Egress, ...]

    @property
    def deploys_broker(self) -> bool:
        """True when the stack runs its own broker, False for an existing one."""
        return self.broker_url is None

    @property
    def image_repository(self) -> str:
        """Where the worker image is pushed: registry and repository, no tag."""
        return f"{self.registry}/{self.image_name}"

    def client_variables(self) -> dict[str, str]:
        """The variables, besides AMQP_URL, that the seed and work containers get."""
        return {
            "QUEUE_NAME": self.queue,
            "DELIVERY_LIMIT": str(self.delivery_limit),
            "MAX_ITEM_BYTES": str(self.max_item_bytes),
            "LOG_LEVEL": self.log_level,
        }

    def work_variables(self) -> dict[str, str]:
        """The variables only the work container gets."""
        variables = {"WORK_MODE": self.mode, "WORK_SECONDS": self.work_seconds}
        if self.work_handler:
            variables["WORK_HANDLER"] = self.work_handler
        if self.work_command:
            variables["WORK_COMMAND"] = self.work_command
        return variables


class _Reader:
    """Reads raw values, with the key's name in every error."""

    def __init__(self, config: pulumi.Config):
        self.config = config

    def text(self, name: str) -> str:
        return (self.config.get(name) or "").strip()

    def integer(self, name: str, minimum: int) -> int:
        raw = self.text(name)
        accepts = f"an integer of at least {minimum}"
        try:
            value = int(raw)
        except ValueError:
            raise _fail(name, accepts, raw) from None
        if value < minimum:
            raise _fail(name, accepts, value)
        return value

    def boolean(self, name: str) -> bool:
        raw = self.text(name).lower()
        if raw not in ("true", "false"):
            raise _fail(name, "true or false", raw)
        return raw == "true"

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw not in choices:
            raise _fail(name, "one of " + ", ".join(choices), raw)
        return raw

    def strings(self, name: str) -> tuple[str, ...] | None:
        raw = self.config.get(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise _fail(name, "a list of strings", raw) from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(name, "a list of strings", value)
        return tuple(value)

    def quantity(self, name: str) -> str:
        raw = self.text(name)
        match = QUANTITY.match(raw)
        if not match or float(match.group(1)) <= 0:
            accepts = "a positive Kubernetes quantity such as 250m or 512Mi"
            raise _fail(name, accepts, raw)
        return raw

    def secret(
        self, name: str, pattern: re.Pattern[str], accepts: str
    ) -> pulumi.Output[str] | None:
        """A secret value, checked now but never shown in an error."""
        raw = self.config.get(name)
        if raw is None:
            return None
        if not pattern.match(raw):
            raise SettingsError(f"{_key(name)} must be {accepts} (value not shown)")
        return self.config.get_secret(name)


def cpu_cores(quantity: str) -> Decimal:
    """The number of CPU cores a quantity such as `250m` or `2` stands for.

    Raises:
        ValueError: the text is not a quantity.
    """
    match = QUANTITY.match(quantity)
    if not match:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    unit = match.group(3) or ""
    scale = Decimal("0.001") if unit == "m" else Decimal(MEMORY_UNITS[unit])
    return Decimal(match.group(1)) * scale


def memory_bytes(quantity: str) -> int:
    """The number of bytes a memory quantity such as `512Mi` stands for.

    Raises:
        ValueError: the quantity is not a plain memory quantity.
    """
    match = QUANTITY.match(quantity)
    if not match or match.group(3) == "m":
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * MEMORY_UNITS[match.group(3) or ""])


def load_settings(config: pulumi.Config | None = None) -> Settings:
    """Read and check the stack's configuration.

    Raises:
        SettingsError: a value is missing or invalid; the message names the key and
            what it accepts, or lists the `pulumi config set --secret` commands
            still to run.
    """
    read = _Reader(config or pulumi.Config(NAMESPACE))
    stack = pulumi.get_stack()

    max_item_bytes = read.integer("maxItemBytes", 1)
    items = _items(read, max_item_bytes)

    registry = read.text("registry").rstrip("/")
    if not REGISTRY.match(registry):
        accepts = (
            "the registry the worker image is pushed to, as HOST[:PORT][/PATH] "
            "without a scheme, e.g. localhost:5001 or registry.example.com/team"
        )
        raise _fail("registry", accepts, registry)
    image_name = read.text("imageName")
    if not IMAGE_REPOSITORY.match(image_name):
        raise _fail("imageName", "a lowercase image repository name", image_name)

    broker_url, broker_address = _broker_url(read)
    broker_cidrs = _cidrs(read, "brokerCidrs")
    if broker_url is not None and not broker_cidrs:
        raise _fail("brokerCidrs", "the networks of the broker at workqueue:brokerUrl")

    broker_cpu_request, broker_cpu_limit = _cpu(read, "brokerCpu")
    work_cpu_request, work_cpu_limit = _cpu(read, "workCpu")

    work_deadline_seconds = read.integer("workDeadlineSeconds", 1)
    work_timeout_seconds = read.integer("workTimeoutSeconds", 0)
    if work_timeout_seconds == 0:
        work_timeout_seconds = work_deadline_seconds + WAIT_MARGIN_SECONDS

    settings = Settings(
        stack=stack,
        items=items,
        mode=read.choice("mode", MODES),
        parallelism=read.integer("parallelism", 1),
        work_seconds=_required(read, "workSeconds", "a number of seconds"),
        work_handler=read.text("workHandler"),
        work_command=read.text("workCommand"),
        queue=_required(read, "queue", "a queue name"),
        delivery_limit=read.integer("deliveryLimit", 1),
        max_item_bytes=max_item_bytes,
        log_level=read.choice("logLevel", LOG_LEVELS),
        namespace=_namespace(read, stack),
        existing_namespace=read.boolean("existingNamespace"),
        cluster_domain=_cluster_domain(read),
        broker_url=broker_url,
        broker_address=broker_address,
        broker_cidrs=broker_cidrs,
        broker_image=_pinned_image(read, "brokerImage"),
        broker_username=_broker_username(read),
        broker_password=read.secret(
            "brokerPassword", PASSWORD, "12 to 128 letters, digits or . _ ~ -"
        ),
        erlang_cookie=read.secret(
            "erlangCookie", ERLANG_COOKIE, "20 to 255 letters or digits"
        ),
        broker_cpu_request=broker_cpu_request,
        broker_cpu_limit=broker_cpu_limit,
        broker_memory=_memory(read, "brokerMemory"),
        persistence=read.boolean("persistence"),
        storage_size=_memory(read, "storageSize"),
        storage_class=read.text("storageClass"),
        claim_retention_on_delete=read.choice(
            "claimRetentionOnDelete", CLAIM_RETENTION
        ),
        registry=registry,
        image_name=image_name,
        registry_username=read.text("registryUsername"),
        registry_password=read.secret(
            "registryPassword", REGISTRY_TOKEN, "a token without whitespace"
        ),
        platform=read.text("platform"),
        work_cpu_request=work_cpu_request,
        work_cpu_limit=work_cpu_limit,
        work_memory=_memory(read, "workMemory"),
        backoff_limit=read.integer("backoffLimit", 0),
        work_deadline_seconds=work_deadline_seconds,
        wait_for_work=read.boolean("waitForWork"),
        work_timeout_seconds=work_timeout_seconds,
        work_egress=_egress(read),
    )
    _check_with_worker(settings)
    _check_secrets(settings)
    return settings


def _items(read: _Reader, max_item_bytes: int) -> tuple[str, ...]:
    listed = read.strings("items")
    items_file = read.text("itemsFile")
    if listed is not None and items_file:
        raise _fail("itemsFile", "empty when workqueue:items is set")
    if items_file:
        items, key = _read_items_file(items_file, max_item_bytes), "itemsFile"
    else:
        items, key = listed, "items"
        _check_listed_items(listed or (), max_item_bytes)
    if not items and key == "itemsFile":
        raise _fail(key, "a file with at least one non-blank line", items_file)
    if not items:
        raise _fail("items", "a non-empty list of strings (or set workqueue:itemsFile)")
    total = len(seed_file_text(items).encode("utf-8"))
    if total > CONFIGMAP_LIMIT_BYTES:
        accepts = f"at most {CONFIGMAP_LIMIT_BYTES} bytes in all, the ConfigMap limit"
        raise _fail(key, accepts, f"{total} bytes")
    return items


def _read_items_file(items_file: str, max_item_bytes: int) -> tuple[str, ...]:
    """The items of the file as the seeder reads them: split at line feeds only, one
    trailing carriage return dropped, lines of ASCII whitespace skipped."""
    path = (PROJECT_ROOT / items_file).resolve()
    if not path.is_relative_to(PROJECT_ROOT) or not path.is_file():
        raise _fail("itemsFile", "a file inside the repository", items_file)
    items = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        item = line.removesuffix(b"\r")
        if not item.strip():
            continue
        where = f"{items_file} line {number}"
        if item.endswith(b"\r"):
            # The seed file in the ConfigMap ends each item with a line feed, and
            # the seeder drops one carriage return before it: this one would be lost.
            raise _fail(
                "itemsFile", "items that do not end with a carriage return", where
            )
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError:
            # The items go into a ConfigMap's data, which holds UTF-8 text only.
            raise _fail("itemsFile", "a UTF-8 text file", where) from None
        _check_size("itemsFile", item, max_item_bytes, where)
        items.append(text)
    return tuple(items)


def _check_listed_items(items: tuple[str, ...], max_item_bytes: int) -> None:
    accepts = "non-blank single-line UTF-8 strings"
    for number, item in enumerate(items, start=1):
        try:
            data = item.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail("items", accepts, f"item {number}") from None
        # The seeder splits its file at line feeds, drops a trailing carriage return
        # and skips lines of ASCII whitespace: such an item would not arrive as given.
        if not data.strip() or b"\n" in data or data.endswith(b"\r"):
            raise _fail("items", accepts, f"item {number}")
        _check_size("items", data, max_item_bytes, f"item {number}")


def _check_size(key: str, item: bytes, max_item_bytes: int, where: str) -> None:
    if len(item) > max_item_bytes:
        accepts = f"items of at most {max_item_bytes} bytes (workqueue:maxItemBytes)"
        raise _fail(key, accepts, f"{where} has {len(item)} bytes")


def seed_file_text(items: tuple[str, ...]) -> str:
    """The seed file the seed Job reads: one item per line."""
    return "".join(f"{item}\n" for item in items)


def _required(read: _Reader, name: str, accepts: str) -> str:
    # The worker takes an empty variable for its default, which would leave the
    # stack's configuration and the pods disagreeing.
    value = read.text(name)
    if not value:
        raise _fail(name, accepts, value)
    return value


def _check_with_worker(settings: Settings) -> None:
    """Run the worker's own checks on the environment the seed and work pods get.

    Raises:
        SettingsError: the worker refuses a variable; the message names the key it
            comes from and carries the worker's explanation of what it accepts.
    """
    seed_env = {"AMQP_URL": PLACEHOLDER_AMQP_URL, **settings.client_variables()}
    work_env = {**seed_env, **settings.work_variables()}
    try:
        WORKER_SETTINGS.seed_settings(seed_env)
        WORKER_SETTINGS.log_level(seed_env)
        WORKER_SETTINGS.work_settings(work_env)
    except WORKER_SETTINGS.SettingsError as error:
        raise _worker_refused(str(error)) from None


def _worker_refused(explanation: str) -> SettingsError:
    named = re.findall(r"\b[A-Z][A-Z_]+\b", explanation)
    keys = [_key(VARIABLE_KEYS[name]) for name in named if name in VARIABLE_KEYS]
    if not keys:
        # Only a variable the program does not take from the configuration.
        return SettingsError(f"the worker image refuses its environment: {explanation}")
    legend = ", ".join(
        f"{name} is {_key(VARIABLE_KEYS[name])}"
        for name in dict.fromkeys(named)
        if name in VARIABLE_KEYS
    )
    return SettingsError(
        f"{keys[0]} is refused by the worker image: {explanation} ({legend})"
    )


def broker_address(url: str) -> str:
    """The `host:port` of a broker URL, with the scheme's port when it names none.

    Raises:
        ValueError: the URL is not an amqp:// or amqps:// URL with a host, a numeric
            port if any, no fragment, and its credentials inside its authority. The
            message never shows the URL, which may hold a password.
    """
    if any(character.isspace() for character in url):
        raise ValueError("it holds whitespace")
    scheme, separator, rest = url.partition("://")
    if scheme.lower() not in AMQP_DEFAULT_PORTS or not separator:
        raise ValueError("its scheme is not amqp:// or amqps://")
    userinfo, at, _ = rest.rpartition("@")
    if at and any(end in userinfo for end in AUTHORITY_ENDS):
        raise ValueError("its user or password holds / ? or #: percent-encode them")
    if "#" in rest:
        raise ValueError("it has a fragment (#)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("its host or port is malformed") from None
    if not parts.hostname:
        raise ValueError("it names no host")
    if port == 0:
        raise ValueError("its port is 0")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port or AMQP_DEFAULT_PORTS[parts.scheme]}"


def _broker_url(read: _Reader) -> tuple[pulumi.Output[str] | None, str | None]:
    """The existing broker's URL (secret) and its address, or None for both."""
    raw = read.config.get("brokerUrl")
    if raw is None:
        return None, None
    try:
        address = broker_address(raw)
    except ValueError as error:
        raise SettingsError(
            f"{_key('brokerUrl')} must be an amqp:// or amqps:// URL such as "
            f"amqp://USER:PASSWORD@HOST:PORT/VHOST (value not shown): {error}"
        ) from None
    return read.config.get_secret("brokerUrl"), address


def _namespace(read: _Reader, stack: str) -> str:
    namespace = read.text("namespace") or f"workqueue-{stack}"
    if not DNS_LABEL.match(namespace):
        accepts = "a Kubernetes namespace name (lowercase letters, digits and -)"
        raise _fail("namespace", accepts, namespace)
    return namespace


def _cluster_domain(read: _Reader) -> str:
    domain = read.text("clusterDomain")
    if not all(DNS_LABEL.match(label) for label in domain.split(".")):
        raise _fail("clusterDomain", "a DNS domain such as cluster.local", domain)
    return domain


def _pinned_image(read: _Reader, name: str) -> str:
    image = read.text(name)
    if not re.match(r"^[^@\s]+:[\w][\w.-]*@sha256:[0-9a-f]{64}$", image):
        raise _fail(name, "an image reference with a tag and a sha256 digest", image)
    return image


def _broker_username(read: _Reader) -> str:
    username = read.text("brokerUsername")
    if username == "guest" or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", username):
        accepts = "a user name of letters, digits, _ . - other than guest"
        raise _fail("brokerUsername", accepts, username)
    return username


def _cpu(read: _Reader, prefix: str) -> tuple[str, str]:
    """`<prefix>Request` and `<prefix>Limit`; Kubernetes refuses a request above
    its limit."""
    request = read.quantity(f"{prefix}Request")
    limit = read.quantity(f"{prefix}Limit")
    if cpu_cores(request) > cpu_cores(limit):
        accepts = f"at most {_key(prefix + 'Limit')} ({limit})"
        raise _fail(f"{prefix}Request", accepts, request)
    return request, limit


def _memory(read: _Reader, name: str) -> str:
    quantity = read.quantity(name)
    if quantity.endswith("m"):
        raise _fail(name, "a memory quantity such as 512Mi or 8Gi", quantity)
    return quantity


def _cidrs(read: _Reader, name: str) -> tuple[str, ...]:
    cidrs = read.strings(name) or ()
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise _fail(name, "a list of networks such as 10.0.0.0/8", cidr) from None
    return cidrs


def _egress(read: _Reader) -> tuple[Egress, ...]:
    accepts = "a list of CIDR or CIDR:PORT strings such as 10.0.0.0/8:443"
    rules = []
    for text in read.strings("workEgress") or ():
        address, _, rest = text.partition("/")
        prefix, _, port = rest.partition(":")
        try:
            network = ipaddress.ip_network(f"{address}/{prefix}", strict=True)
            port_number = int(port) if port else None
        except ValueError:
            raise _fail("workEgress", accepts, text) from None
        if port_number is not None and not 1 <= port_number <= 65535:
            raise _fail("workEgress", accepts, text)
        rules.append(Egress(cidr=str(network), port=port_number))
    return tuple(rules)


def _check_secrets(settings: Settings) -> None:
    missing = []
    if settings.registry_username and settings.registry_password is None:
        missing.append("registryPassword")
    if missing:
        commands = "\n".join(
            f"  pulumi config set --secret {_key(name)} <value>" for name in missing
        )
        raise SettingsError(
            f"stack {settings.stack} is missing secret settings; run:\n{commands}"
        )
