"""Policy checks on docker/compose.yml beyond what `docker compose config` validates.

Usage: check-compose.py RESOLVED_YAML RESOLVED_SASL_YAML REPO_ROOT BIN [BIN...]

RESOLVED_YAML is `docker compose -f docker/compose.yml --env-file docker/profiles/laptop.env
--profile '*' config` output (anchors merged, paths absolute, every profile's services
present); RESOLVED_SASL_YAML the same with docker/profiles/sasl.yml layered on. BIN... are the
binary targets of the Cargo workspace. Prints every violation and exits 1 if there is any; there is no
allow-list here: an exception is written into compose.yml itself (x-healthcheck-exempt with a
reason) where a reader sees it.
"""

import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

SAGA_SERVICES = ["order-svc", "inventory-svc", "payment-svc", "shipping-svc", "notification-svc"]
DOCKERFILE = "docker/Dockerfile"
COMPOSE_FILES = ["docker/compose.yml", "docker/profiles/sasl.yml"]
# The digest of the published demo API key: only the laptop profile may name it.
DEMO_KEY_DIGEST = "73db19958eaeaa43fdce8438e1a8664ba539bcb15529ef1ff7d1d44d2e6e77b3"
# Variables that hold secrets, by name.
SECRET_VARIABLE = re.compile(r"(PASSWORD|SECRET|TOKEN|_API_KEYS?)$")
# Prometheus flags that open write or control endpoints to anyone who reaches it.
PROMETHEUS_OPEN_FLAGS = ["--web.enable-lifecycle", "--web.enable-remote-write-receiver", "--web.enable-otlp-receiver", "--web.enable-admin-api"]


def main() -> int:
    resolved, resolved_sasl, root = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    workspace_bins = set(sys.argv[4:])
    config = yaml.safe_load(resolved.read_text())
    services: dict = config["services"]
    errors: list[str] = []

    def fail(service: str, message: str) -> None:
        errors.append(f"{service}: {message}")

    one_shot = {name for name, s in services.items() if s.get("restart", "no") == "no"}
    exempt = {name for name, s in services.items() if str(s.get("x-healthcheck-exempt", "")).strip()}
    healthy = {
        name
        for name, s in services.items()
        if s.get("healthcheck") and not s["healthcheck"].get("disable") and s["healthcheck"].get("test", ["NONE"])[0] != "NONE"
    }

    for name, s in sorted(services.items()):
        built = "build" in s

        # Images are pinned: a tag that is not `latest`, or a digest. Built images too.
        image = s.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            fail(name, f"image {image!r} is not pinned to a version tag")

        # Every long-running service proves its health, or says in the file why it cannot.
        if name not in one_shot:
            if s.get("restart") not in ("unless-stopped", "always", "on-failure"):
                fail(name, f"long-running service has restart {s.get('restart')!r}")
            if name not in healthy and name not in exempt:
                fail(name, "no healthcheck (add one, or x-healthcheck-exempt: <why>)")
            if name in healthy and name in exempt:
                fail(name, "has a healthcheck and x-healthcheck-exempt; drop the exemption")

        # depends_on waits for the strongest condition the dependency offers.
        for dep, spec in (s.get("depends_on") or {}).items():
            if dep not in services:
                fail(name, f"depends on unknown service {dep!r}")
                continue
            want = (
                "service_completed_successfully"
                if dep in one_shot
                else "service_healthy" if dep in healthy else "service_started"
            )
            got = spec.get("condition")
            if got != want:
                fail(name, f"depends_on {dep}: condition {got!r}, expected {want!r}")
            if spec.get("required") is False:
                fail(name, f"depends_on {dep}: required: false")

        # Bind mounts: the source exists (else Docker silently creates an empty directory)
        # and is mounted read-only; state lives in named volumes.
        for v in s.get("volumes") or []:
            if v.get("type") == "bind":
                if not Path(v["source"]).exists():
                    fail(name, f"bind mount source {v['source']} does not exist")
                if not v.get("read_only"):
                    fail(name, f"bind mount {v['source']} -> {v['target']} is not read-only")

        # A file the command names inside a bind mount (k6's script) exists on the host.
        binds = [v for v in s.get("volumes") or [] if v.get("type") == "bind"]
        for arg in s.get("command") or []:
            for v in binds:
                prefix = v["target"].rstrip("/") + "/"
                if isinstance(arg, str) and arg.startswith(prefix):
                    host = Path(v["source"]) / arg[len(prefix):]
                    if Path(v["source"]).exists() and not host.is_file():
                        fail(name, f"command names {arg}, but {host} does not exist")

        # Published ports stay on the loopback interface.
        for p in s.get("ports") or []:
            if p.get("host_ip") != "127.0.0.1":
                fail(name, f"port {p.get('published')}->{p.get('target')} is published on {p.get('host_ip') or 'all interfaces'}, not 127.0.0.1")

        if built:
            build = s["build"]
            if Path(build.get("context", "")).resolve() != root.resolve() or build.get("dockerfile") != DOCKERFILE:
                fail(name, f"builds from {build}, expected the repository root and {DOCKERFILE}")

    errors += check_saga_services(services, root, workspace_bins)
    errors += check_topics(services, root)
    errors += check_secret_defaults(root)
    errors += check_exposure(services)
    errors += check_sasl_profile(yaml.safe_load(resolved_sasl.read_text())["services"])

    if "k6" in services and services["k6"].get("profiles") != ["load"]:
        errors.append("k6: must run only under profiles: [load]")

    for e in errors:
        print(f"compose policy: {e}", file=sys.stderr)
    print(f"compose policy: {len(services)} services checked, {len(errors)} violation(s)")
    return 1 if errors else 0


def check_saga_services(services: dict, root: Path, workspace_bins: set[str]) -> list[str]:
    errors: list[str] = []
    dockerfile = (root / DOCKERFILE).read_text()
    m = re.search(r"for bin in ([a-z0-9 -]+); do", dockerfile)
    image_bins = set(m.group(1).split()) if m else set()
    if not image_bins:
        errors.append(f"{DOCKERFILE}: cannot find the `for bin in ...` list of binaries")
    elif image_bins != workspace_bins:
        errors.append(
            f"{DOCKERFILE} copies {sorted(image_bins)} but the workspace builds {sorted(workspace_bins)}"
        )

    init_sql = (root / "docker/postgres/init.sql").read_text()
    databases = set(re.findall(r"^CREATE DATABASE (\w+)", init_sql, re.M))
    roles = set(re.findall(r"^CREATE ROLE (\w+)", init_sql, re.M))
    used_databases: dict[str, str] = {}

    for name in SAGA_SERVICES:
        s = services.get(name)
        if s is None:
            errors.append(f"{name}: missing from compose.yml")
            continue
        if "build" not in s:
            errors.append(f"{name}: does not use the image built from {DOCKERFILE}")
        command = s.get("command") or []
        if command[:1] != [name] or name not in image_bins:
            errors.append(f"{name}: command {command} does not run the {name} binary of the image")
        if s.get("healthcheck", {}).get("test", [])[:2] != ["CMD", "healthcheck"]:
            errors.append(f"{name}: healthcheck does not use the image's `healthcheck` probe")
        env = s.get("environment") or {}
        addr = env.get("HTTP_ADDR", "")
        host, _, port = addr.rpartition(":")
        if host != "0.0.0.0" or not port.isdigit():
            errors.append(f"{name}: HTTP_ADDR={addr!r}, expected 0.0.0.0:<port> (reachable from other containers)")
        published = {str(p.get("target")) for p in s.get("ports") or []}
        if port and port not in published:
            errors.append(f"{name}: HTTP_ADDR port {port} is not the published container port {sorted(published)}")
        url = urlsplit(env.get("DATABASE_URL", ""))
        if url.password is not None:
            errors.append(f"{name}: DATABASE_URL carries a password; set DATABASE_PASSWORD from a required variable")
        if not env.get("DATABASE_PASSWORD"):
            errors.append(f"{name}: no DATABASE_PASSWORD")
        database = url.path.lstrip("/")
        if url.scheme != "postgres" or url.hostname != "postgres":
            errors.append(f"{name}: DATABASE_URL does not point at the postgres service")
        if database not in databases:
            errors.append(f"{name}: database {database!r} is not created by docker/postgres/init.sql")
        if url.username not in roles:
            errors.append(f"{name}: role {url.username!r} is not created by docker/postgres/init.sql")
        if database in used_databases:
            errors.append(f"{name}: shares database {database!r} with {used_databases[database]}")
        used_databases[database] = name
        if env.get("KAFKA_BROKERS") != "kafka:9092":
            errors.append(f"{name}: KAFKA_BROKERS={env.get('KAFKA_BROKERS')!r}, expected kafka:9092")
    return errors


def check_secret_defaults(root: Path) -> list[str]:
    """No secret has a default in a compose file: `${NAME:?why}`, or `${NAME:-}` (empty: unset),
    and the published demo key's digest appears in the laptop profile only."""
    errors = []
    for relative in COMPOSE_FILES:
        text = (root / relative).read_text()
        for m in re.finditer(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}", text):
            name, op, value = m.group(1), m.group(2), m.group(3)
            if not SECRET_VARIABLE.search(name):
                continue
            if op in (":?", "?") or (op in (":-", "-") and value == ""):
                continue
            errors.append(f"{relative}: secret {m.group(0)} must be ${{{name}:?...}} or ${{{name}:-}}, never a default")
        if DEMO_KEY_DIGEST in text:
            errors.append(f"{relative}: names the published demo key's digest (only docker/profiles/laptop.env may)")
        if re.search(r"ORDER_API_ALLOW_DEMO_KEY:\s*\$\{ORDER_API_ALLOW_DEMO_KEY:-true\}|ORDER_API_ALLOW_DEMO_KEY:\s*\"?true", text):
            errors.append(f"{relative}: ORDER_API_ALLOW_DEMO_KEY defaults to true")
    return errors


def check_exposure(services: dict) -> list[str]:
    """Prometheus's write and control APIs stay closed, Grafana has no default admin password
    and no anonymous viewers unless asked for, and Kafka's host listener authenticates."""
    errors = []
    prometheus = services.get("prometheus") or {}
    for flag in PROMETHEUS_OPEN_FLAGS:
        if any(str(arg).startswith(flag) for arg in prometheus.get("command") or []):
            errors.append(f"prometheus: {flag} opens an endpoint nothing in the stack needs")
    grafana = (services.get("grafana") or {}).get("environment") or {}
    if grafana.get("GF_SECURITY_ADMIN_PASSWORD") in (None, "", "admin"):
        errors.append("grafana: GF_SECURITY_ADMIN_PASSWORD is unset or admin")
    if str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true":
        errors.append("grafana: anonymous viewers are on by default")
    kafka = (services.get("kafka") or {}).get("environment") or {}
    protocols = dict(p.split(":", 1) for p in str(kafka.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",") if ":" in p)
    published = {str(p.get("target")) for p in (services.get("kafka") or {}).get("ports") or []}
    for listener in str(kafka.get("KAFKA_LISTENERS", "")).split(","):
        name, _, address = listener.partition("://")
        if address.rpartition(":")[2] in published and not protocols.get(name, "PLAINTEXT").startswith("SASL_"):
            errors.append(f"kafka: listener {name} is published on the host with {protocols.get(name, 'PLAINTEXT')}, not SASL")
    return errors


def check_sasl_profile(services: dict) -> list[str]:
    """With docker/profiles/sasl.yml every saga service authenticates with SCRAM on a SASL listener."""
    errors = []
    kafka = (services.get("kafka") or {}).get("environment") or {}
    protocols = dict(p.split(":", 1) for p in str(kafka.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",") if ":" in p)
    advertised = {
        address: name
        for name, _, address in (l.partition("://") for l in str(kafka.get("KAFKA_ADVERTISED_LISTENERS", "")).split(","))
    }
    for name in SAGA_SERVICES:
        env = (services.get(name) or {}).get("environment") or {}
        listener = advertised.get(env.get("KAFKA_BROKERS", ""))
        if listener is None or protocols.get(listener) != "SASL_PLAINTEXT":
            errors.append(f"sasl profile: {name} KAFKA_BROKERS={env.get('KAFKA_BROKERS')!r} is not a SASL listener")
        if env.get("KAFKA_PROP_SECURITY_PROTOCOL") != "SASL_PLAINTEXT" or not str(env.get("KAFKA_PROP_SASL_MECHANISM", "")).startswith("SCRAM-"):
            errors.append(f"sasl profile: {name} does not use SCRAM through KAFKA_PROP_*")
        if not env.get("KAFKA_PROP_SASL_USERNAME") or not env.get("KAFKA_PROP_SASL_PASSWORD"):
            errors.append(f"sasl profile: {name} has no SASL username or password")
    return errors


def check_topics(services: dict, root: Path) -> list[str]:
    """kafka-init creates exactly the topics the saga uses: the channels shared/src/topology.rs
    declares (CHANNELS) and the dead-letter topic of each service shared/src/topics.rs names."""
    source = (root / "shared/src/topics.rs").read_text()
    topology = (root / "shared/src/topology.rs").read_text()
    channels = re.search(r"pub const CHANNELS: \[Channel; \d+\] = \[(.*?)\n\];", topology, re.S)
    event_topics = set(re.findall(r'^\s*name: "([a-z0-9._-]+)",', channels.group(1), re.M)) if channels else set()
    service_names = set(re.findall(r'pub const [A-Z_]+: &str = "([a-z0-9-]+)";', source))
    if len(event_topics) < 5 or len(service_names) < 5 or '{service}.dlq"' not in source:
        return ["shared/src/topology.rs, shared/src/topics.rs: cannot read the topic names (did their format change?)"]
    expected = event_topics | {f"{s}.dlq" for s in service_names}
    env = (services.get("kafka-init") or {}).get("environment") or {}
    created = (
        set(str(env.get("EVENT_TOPICS", "")).split())
        | set(str(env.get("COMMAND_TOPICS", "")).split())
        | set(str(env.get("DLQ_TOPICS", "")).split())
    )
    errors = []
    if created != expected:
        errors.append(
            f"kafka-init: creates {sorted(created)}; shared/src/topics.rs uses {sorted(expected)}"
            f" (missing {sorted(expected - created)}, extra {sorted(created - expected)})"
        )
    return errors


if __name__ == "__main__":
    sys.exit(main())
