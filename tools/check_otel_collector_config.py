#!/usr/bin/env python3
"""Strict checker for otel-collector-config.yml (there is no collector binary in CI).

Checks what the collector would reject at start-up, and what it would accept but that is
still a mistake here:
  - the YAML parses, with no duplicate keys, and only known top-level sections;
  - every component id is `type` or `type/name`, of a type this checker knows, with only the
    settings that type takes (and the ones it requires);
  - every pipeline is `traces`, `metrics` or `logs` (optionally `/name`), has receivers and
    exporters, and references only defined components that support its signal;
  - memory_limiter is the first processor of a pipeline and batch the last;
  - every defined receiver, processor, exporter, connector and extension is used;
  - no two components listen on the same port.

Usage: check_otel_collector_config.py [otel-collector-config.yml]. Exit 1 with one line per
problem. Needs PyYAML (tools/requirements-observability.txt).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

SIGNALS = ("traces", "metrics", "logs")
ALL = set(SIGNALS)

# type -> (signals it supports, allowed settings, required settings). A settings value of
# None means "any mapping below" (nested settings are checked by the checker of that type).
RECEIVERS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "otlp": (ALL, {"protocols"}, {"protocols"}),
    "prometheus": ({"metrics"}, {"config", "trim_metric_suffixes"}, {"config"}),
    "hostmetrics": ({"metrics"}, {"collection_interval", "scrapers", "root_path"}, {"scrapers"}),
    "zipkin": ({"traces"}, {"endpoint"}, set()),
    "kafka": (ALL, {"brokers", "topic", "encoding", "group_id", "protocol_version"}, set()),
}
PROCESSORS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "batch": (ALL, {"send_batch_size", "send_batch_max_size", "timeout", "metadata_keys",
                    "metadata_cardinality_limit"}, set()),
    "memory_limiter": (ALL, {"check_interval", "limit_mib", "spike_limit_mib", "limit_percentage",
                             "spike_limit_percentage"}, {"check_interval"}),
    "resource": (ALL, {"attributes"}, {"attributes"}),
    "attributes": (ALL, {"actions", "include", "exclude"}, {"actions"}),
    "filter": (ALL, {"error_mode", "traces", "metrics", "logs"}, set()),
    "transform": (ALL, {"error_mode", "trace_statements", "metric_statements", "log_statements"}, set()),
    "probabilistic_sampler": ({"traces", "logs"}, {"sampling_percentage", "hash_seed", "mode"},
                              {"sampling_percentage"}),
    "tail_sampling": ({"traces"}, {"decision_wait", "num_traces", "expected_new_traces_per_sec",
                                    "policies"}, {"policies"}),
}
EXPORTERS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "otlp": (ALL, {"endpoint", "tls", "headers", "compression", "timeout", "sending_queue",
                   "retry_on_failure", "balancer_name"}, {"endpoint"}),
    "otlphttp": (ALL, {"endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint", "tls",
                       "headers", "compression", "timeout", "sending_queue", "retry_on_failure"},
                 set()),
    "prometheus": ({"metrics"}, {"endpoint", "namespace", "const_labels", "send_timestamps",
                                 "metric_expiration", "resource_to_telemetry_conversion",
                                 "enable_open_metrics", "add_metric_suffixes", "tls"},
                   {"endpoint"}),
    "prometheusremotewrite": ({"metrics"}, {"endpoint", "tls", "headers", "namespace",
                                            "resource_to_telemetry_conversion", "external_labels",
                                            "timeout"}, {"endpoint"}),
    "debug": (ALL, {"verbosity", "sampling_initial", "sampling_thereafter"}, set()),
    "file": (ALL, {"path", "format", "rotation"}, {"path"}),
}
EXTENSIONS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "health_check": (set(), {"endpoint", "path", "check_collector_pipeline"}, set()),
    "pprof": (set(), {"endpoint"}, set()),
    "zpages": (set(), {"endpoint"}, set()),
}
CONNECTORS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "forward": (ALL, set(), set()),
    "spanmetrics": (ALL, {"histogram", "dimensions", "namespace", "metrics_flush_interval"}, set()),
    "count": (ALL, {"spans", "spanevents", "metrics", "datapoints", "logs"}, set()),
}
KINDS = {
    "receivers": RECEIVERS,
    "processors": PROCESSORS,
    "exporters": EXPORTERS,
    "extensions": EXTENSIONS,
    "connectors": CONNECTORS,
}
TOP_LEVEL = set(KINDS) | {"service"}
SERVICE_KEYS = {"extensions", "pipelines", "telemetry"}
PIPELINE_KEYS = {"receivers", "processors", "exporters"}
TELEMETRY_KEYS = {"logs", "metrics", "traces", "resource"}
OTLP_PROTOCOLS = {"grpc", "http"}
OTLP_PROTOCOL_KEYS = {"endpoint", "max_recv_msg_size_mib", "tls", "cors", "include_metadata",
                      "max_concurrent_streams", "keepalive", "auth", "traces_url_path",
                      "metrics_url_path", "logs_url_path"}
TLS_KEYS = {"insecure", "insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name_override"}
COMPONENT_ID = re.compile(r"^([a-z][a-z0-9_]*)(?:/([A-Za-z0-9_.\-]+))?$")
PIPELINE_ID = re.compile(r"^(traces|metrics|logs)(?:/([A-Za-z0-9_.\-]+))?$")
ENDPOINT = re.compile(r"^(?:[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\])?:(\d{1,5})$")
DURATION = re.compile(r"^\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)$")


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)


def check(config: Any) -> list[str]:
    """Every problem in a parsed collector configuration (empty when it is fine)."""
    errors: list[str] = []
    if not isinstance(config, dict):
        return ["the configuration is not a mapping"]
    for key in config:
        if key not in TOP_LEVEL:
            errors.append(f"unknown top-level section {key!r}")
    for required in ("receivers", "exporters", "service"):
        if not config.get(required):
            errors.append(f"missing or empty section {required!r}")

    defined: dict[str, dict[str, str]] = {}  # kind -> id -> type
    listening: dict[int, str] = {}
    for kind, known in KINDS.items():
        section = config.get(kind) or {}
        defined[kind] = {}
        if not isinstance(section, dict):
            errors.append(f"{kind} is not a mapping")
            continue
        for component_id, settings in section.items():
            where = f"{kind}.{component_id}"
            match = COMPONENT_ID.match(str(component_id))
            if not match:
                errors.append(f"{where}: not a component id (type or type/name)")
                continue
            ctype = match.group(1)
            if ctype not in known:
                errors.append(f"{where}: unknown {kind[:-1]} type {ctype!r}")
                continue
            defined[kind][component_id] = ctype
            settings = settings if settings is not None else {}
            if not isinstance(settings, dict):
                errors.append(f"{where}: settings are not a mapping")
                continue
            _, allowed, required = known[ctype]
            errors += [f"{where}: unknown setting {k!r}" for k in settings if k not in allowed]
            errors += [f"{where}: missing setting {k!r}" for k in sorted(required) if k not in settings]
            errors += check_settings(where, kind, ctype, settings, listening)

    service = config.get("service") or {}
    if not isinstance(service, dict):
        return errors + ["service is not a mapping"]
    errors += [f"service: unknown setting {k!r}" for k in service if k not in SERVICE_KEYS]
    telemetry = service.get("telemetry") or {}
    if isinstance(telemetry, dict):
        errors += [f"service.telemetry: unknown setting {k!r}" for k in telemetry if k not in TELEMETRY_KEYS]

    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for extension in service.get("extensions") or []:
        if extension not in defined["extensions"]:
            errors.append(f"service.extensions: {extension!r} is not defined")
        used["extensions"].add(extension)

    pipelines = service.get("pipelines") or {}
    if not pipelines:
        errors.append("service.pipelines: no pipeline")
    connector_as_exporter: set[str] = set()
    connector_as_receiver: set[str] = set()
    for pipeline_id, pipeline in pipelines.items():
        where = f"service.pipelines.{pipeline_id}"
        match = PIPELINE_ID.match(str(pipeline_id))
        if not match:
            errors.append(f"{where}: a pipeline id is traces, metrics or logs (optionally /name)")
            continue
        signal = match.group(1)
        if not isinstance(pipeline, dict):
            errors.append(f"{where}: not a mapping")
            continue
        errors += [f"{where}: unknown setting {k!r}" for k in pipeline if k not in PIPELINE_KEYS]
        for role in ("receivers", "exporters"):
            if not pipeline.get(role):
                errors.append(f"{where}: no {role}")
        for role in ("receivers", "processors", "exporters"):
            ids = pipeline.get(role) or []
            if len(ids) != len(set(ids)):
                errors.append(f"{where}.{role}: a component is listed twice")
            for component_id in ids:
                kind = role
                if role != "processors" and component_id in defined["connectors"]:
                    kind = "connectors"
                    (connector_as_receiver if role == "receivers" else connector_as_exporter).add(component_id)
                if component_id not in defined[kind]:
                    errors.append(f"{where}.{role}: {component_id!r} is not defined")
                    continue
                used[kind].add(component_id)
                signals = KINDS[kind][defined[kind][component_id]][0]
                if signal not in signals:
                    errors.append(f"{where}.{role}: {component_id!r} does not support {signal}")
        processors = pipeline.get("processors") or []
        types = [defined["processors"].get(p) for p in processors]
        if "memory_limiter" in types and types[0] != "memory_limiter":
            errors.append(f"{where}.processors: memory_limiter must come first")
        if "batch" in types and types[-1] != "batch":
            errors.append(f"{where}.processors: batch must come last")

    for kind in KINDS:
        for component_id in defined[kind]:
            if component_id not in used[kind]:
                errors.append(f"{kind}.{component_id}: defined but not used")
    for connector in defined["connectors"]:
        if (connector in connector_as_exporter) != (connector in connector_as_receiver):
            errors.append(f"connectors.{connector}: must be an exporter of one pipeline and a receiver of another")
    return errors


def check_settings(where: str, kind: str, ctype: str, settings: dict, listening: dict[int, str]) -> list[str]:
    """Settings that must have a given shape, for the types this configuration uses."""
    errors: list[str] = []

    def endpoint(path: str, value: Any, listens: bool) -> None:
        host_port = value.removeprefix("http://").removeprefix("https://") if isinstance(value, str) else ""
        match = ENDPOINT.match(host_port)
        if not match or (listens and host_port != value):
            errors.append(f"{path}: endpoint {value!r} is not host:port")
            return
        if listens:
            port = int(match.group(1))
            if port in listening:
                errors.append(f"{path}: port {port} is also used by {listening[port]}")
            listening[port] = path

    def duration(path: str, value: Any) -> None:
        if not isinstance(value, str) or not DURATION.match(value):
            errors.append(f"{path}: {value!r} is not a duration (e.g. 1s, 500ms)")

    def tls(path: str, value: Any) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path}: not a mapping")
            return
        errors.extend(f"{path}: unknown setting {k!r}" for k in value if k not in TLS_KEYS)
        if "insecure" in value and not isinstance(value["insecure"], bool):
            errors.append(f"{path}.insecure: not a boolean")

    if kind == "receivers" and ctype == "otlp":
        protocols = settings.get("protocols") or {}
        if not isinstance(protocols, dict) or not protocols:
            return errors + [f"{where}.protocols: at least one of grpc, http"]
        for name, protocol in protocols.items():
            path = f"{where}.protocols.{name}"
            if name not in OTLP_PROTOCOLS:
                errors.append(f"{path}: unknown protocol (grpc or http)")
                continue
            protocol = protocol or {}
            errors += [f"{path}: unknown setting {k!r}" for k in protocol if k not in OTLP_PROTOCOL_KEYS]
            default = "0.0.0.0:4317" if name == "grpc" else "0.0.0.0:4318"
            endpoint(f"{path}.endpoint", protocol.get("endpoint", default), listens=True)
    elif kind == "processors" and ctype == "batch":
        for key in ("send_batch_size", "send_batch_max_size"):
            if key in settings and (not isinstance(settings[key], int) or settings[key] < 0):
                errors.append(f"{where}.{key}: not a non-negative integer")
        if "timeout" in settings:
            duration(f"{where}.timeout", settings["timeout"])
        size, most = settings.get("send_batch_size"), settings.get("send_batch_max_size")
        if isinstance(size, int) and isinstance(most, int) and most and most < size:
            errors.append(f"{where}: send_batch_max_size must be at least send_batch_size")
    elif kind == "processors" and ctype == "memory_limiter":
        duration(f"{where}.check_interval", settings.get("check_interval"))
        if "limit_mib" not in settings and "limit_percentage" not in settings:
            errors.append(f"{where}: set limit_mib or limit_percentage")
        limit, spike = settings.get("limit_mib"), settings.get("spike_limit_mib")
        if isinstance(limit, int) and isinstance(spike, int) and spike >= limit:
            errors.append(f"{where}: spike_limit_mib must be below limit_mib")
    elif kind == "exporters" and ctype in ("otlp", "otlphttp", "prometheusremotewrite"):
        if "endpoint" in settings and ctype == "otlp":
            endpoint(f"{where}.endpoint", settings["endpoint"], listens=False)
        if "tls" in settings:
            tls(f"{where}.tls", settings["tls"])
    elif kind == "exporters" and ctype == "prometheus":
        endpoint(f"{where}.endpoint", settings.get("endpoint"), listens=True)
        if "metric_expiration" in settings:
            duration(f"{where}.metric_expiration", settings["metric_expiration"])
        conversion = settings.get("resource_to_telemetry_conversion")
        if conversion is not None and (not isinstance(conversion, dict) or set(conversion) - {"enabled"}):
            errors.append(f"{where}.resource_to_telemetry_conversion: only `enabled` is allowed")
    elif kind == "extensions" and "endpoint" in settings:
        endpoint(f"{where}.endpoint", settings["endpoint"], listens=True)
    return errors


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "otel-collector-config.yml"
    try:
        with open(path, encoding="utf-8") as f:
            config = load(f.read())
    except (OSError, yaml.YAMLError) as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 1
    errors = check(config)
    for error in errors:
        print(f"{path}: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: ok ({len(config['service']['pipelines'])} pipelines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
