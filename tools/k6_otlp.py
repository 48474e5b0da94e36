#!/usr/bin/env python3
"""What k6's OpenTelemetry output really sends, and the Prometheus names it becomes.

    k6_otlp.py serve PORT OUT.json      # an OTLP/HTTP metrics receiver on 127.0.0.1:PORT
    k6_otlp.py names OUT.json           # the Prometheus names of what was received
    k6_otlp.py check OUT.json DASHBOARD # the dashboard's OpenTelemetry queries name only those

The compose stack's k6 sends its metrics over OTLP to the collector, whose `prometheus`
exporter serves them to Prometheus. No collector runs in CI, and Debian's Prometheus (2.42)
has no OTLP receiver, so CI points k6 at `serve` instead: a receiver that decodes each
`ExportMetricsServiceRequest` (protobuf, decoded here field by field: no dependency) and writes
every metric's name, unit, kind and attribute keys to OUT.json. `names` turns them into the
series names the collector's `prometheus` exporter serves, by its rules (metric suffixes on,
its default): dots become underscores, the unit is appended spelt out (`ms` → `milliseconds`,
`s` → `seconds`, `By` → `bytes`; `1` adds nothing), monotonic sums get `_total`, histograms
become `_bucket`, `_sum` and `_count`. `check` fails when a query of the k6 dashboard that
serves the OpenTelemetry output (every query whose legend does not say "remote write") names
a k6 metric that is not among them, or a label that is none of its attributes.

Standard library only (so it runs before the virtualenv exists, too).
"""

from __future__ import annotations

import http.server
import json
import pathlib
import re
import sys
import threading

# ---- protobuf wire format -------------------------------------------------------------------


def fields(data: bytes):
    """(field number, wire type, value) of each field of one message; length-delimited values
    are bytes, varints ints, fixed-width values raw bytes."""
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            length, i = varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def attribute_keys(points: list[bytes], attributes_field: int) -> set[str]:
    keys = set()
    for point in points:
        for number, _, value in fields(point):
            if number == attributes_field:  # KeyValue { string key = 1; AnyValue value = 2; }
                keys.update(v.decode() for n, _, v in fields(value) if n == 1)
    return keys


# Metric.data: the field number of each kind, and the field number of the attributes in its
# data points (NumberDataPoint 7, HistogramDataPoint 9, ExponentialHistogramDataPoint 1).
KINDS = {5: ("gauge", 7), 7: ("sum", 7), 9: ("histogram", 9), 10: ("exponential_histogram", 1), 11: ("summary", 7)}


def decode_request(body: bytes) -> list[dict]:
    """The metrics of one ExportMetricsServiceRequest (opentelemetry-proto, metrics/v1)."""
    metrics = []
    for n, _, resource_metrics in fields(body):
        if n != 1:
            continue
        for n, _, scope_metrics in fields(resource_metrics):
            if n != 2:
                continue
            for n, _, metric in fields(scope_metrics):
                if n != 2:
                    continue
                entry = {"name": "", "unit": "", "kind": None, "monotonic": False, "attributes": []}
                for number, _, value in fields(metric):
                    if number == 1:
                        entry["name"] = value.decode()
                    elif number == 3:
                        entry["unit"] = value.decode()
                    elif number in KINDS:
                        kind, attributes_field = KINDS[number]
                        entry["kind"] = kind
                        points = [v for f, _, v in fields(value) if f == 1]
                        entry["attributes"] = sorted(attribute_keys(points, attributes_field))
                        if kind == "sum":
                            entry["monotonic"] = any(f == 3 and v == 1 for f, _, v in fields(value))
                metrics.append(entry)
    return metrics


# ---- the collector's prometheus exporter naming ---------------------------------------------

UNITS = {"ms": "milliseconds", "s": "seconds", "us": "microseconds", "ns": "nanoseconds", "min": "minutes",
         "h": "hours", "d": "days", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "%": "percent"}


def prometheus_names(metric: dict) -> list[str]:
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", metric["name"])
    unit = metric.get("unit") or ""
    unit = "" if unit == "1" or unit.startswith("{") else UNITS.get(unit, re.sub(r"[^a-zA-Z0-9]", "_", unit))
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    if metric["kind"] == "sum" and metric["monotonic"]:
        return [name if name.endswith("_total") else f"{name}_total"]
    if metric["kind"] in ("histogram", "exponential_histogram"):
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    if metric["kind"] == "gauge" and (metric.get("unit") == "1"):
        return [f"{name}_ratio"]
    return [name]


def received(path: str) -> list[dict]:
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def names(path: str) -> dict[str, dict]:
    """Prometheus name -> the received metric it comes from.

    k6 sends a rate metric (checks, http_req_failed, the scenarios' own) as two monotonic
    counters: `<name>.total`, every value added, and `<name>.occurred`, the true ones, which k6
    sends from the first true value on (a run without a failed request has no
    `http_req_failed.occurred`). So `<name>.occurred` is known wherever `<name>.total` was sent.
    """
    metrics = received(path)
    sent = {metric["name"] for metric in metrics}
    for metric in list(metrics):
        base = metric["name"].removesuffix(".total")
        if metric["name"].endswith(".total") and f"{base}.occurred" not in sent:
            metrics.append({**metric, "name": f"{base}.occurred", "attributes": metric["attributes"]})
    return {name: metric for metric in metrics for name in prometheus_names(metric)}


# Labels every series has without k6 sending them: the histogram's bucket bound, and what the
# collector makes of the resource (service.name -> job, service.instance.id -> instance).
IMPLICIT_LABELS = {"le", "job", "instance"}


def otel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query that serves the OpenTelemetry output: every query
    of a panel with k6 metrics whose legend does not say it is for remote write."""
    queries = []
    stack = list(dashboard.get("panels") or [])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            if "remote write" not in (target.get("legendFormat") or "") and "k6_" in (target.get("expr") or ""):
                queries.append((panel.get("title", ""), target.get("expr") or ""))
    return queries


def problems(have: dict[str, dict], queries: list[tuple[str, str]]) -> list[str]:
    """What the queries ask of k6's metrics that k6 does not send: a name, or a label (in a
    selector or a `by`/`without` clause) that is none of the metric's attributes."""
    found = []
    for title, expr in queries:
        used = re.findall(r"\b(k6_[A-Za-z0-9_]+)", expr)
        for name in dict.fromkeys(used):
            if name not in have:
                found.append(f"panel {title!r}: {name} is not sent (sent: {', '.join(sorted(have))})")
        labels = set()
        for name, selector in re.findall(r"\b(k6_[A-Za-z0-9_]+)\{([^}]*)\}", expr):
            labels.update((name, label) for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
        grouped = [g.strip() for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for g in clause.split(",")]
        labels.update((name, label) for name in used for label in grouped if label)
        for name, label in sorted(labels):
            if name in have and label not in IMPLICIT_LABELS and label not in have[name]["attributes"]:
                found.append(f"panel {title!r}: {name} has no label {label!r} "
                             f"(its attributes: {', '.join(have[name]['attributes']) or 'none'})")
    return found


# ---- commands -------------------------------------------------------------------------------


def serve(port: int, out: str) -> None:
    seen: dict[str, dict] = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                metrics = decode_request(body)
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                self.send_error(400, str(err))
                return
            with lock:
                for metric in metrics:
                    seen.setdefault(metric["name"], metric)
                pathlib.Path(out).write_text(json.dumps(sorted(seen.values(), key=lambda m: m["name"]), indent=1))
            # An empty ExportMetricsServiceResponse.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    pathlib.Path(out).write_text("[]")
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def check(path: str, dashboard_path: str) -> int:
    have = names(path)
    if not have:
        print(f"{path}: k6 sent no metric", file=sys.stderr)
        return 1
    queries = otel_queries(json.loads(pathlib.Path(dashboard_path).read_text(encoding="utf-8")))
    found = problems(have, queries)
    for problem in found:
        print(f"{dashboard_path}: {problem}", file=sys.stderr)
    if found or not queries:
        return 1
    print(f"k6 OpenTelemetry output: {len(received(path))} metrics sent, {len(have)} Prometheus series names; "
          f"the dashboard's {len(queries)} OpenTelemetry queries name only those, with their labels")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "serve":
        serve(int(argv[2]), argv[3])
        return 0
    if len(argv) == 3 and argv[1] == "names":
        for name, metric in sorted(names(argv[2]).items()):
            print(f"{name}  <- {metric['name']} ({metric['kind']}, unit {metric['unit'] or '-'}; "
                  f"attributes {', '.join(metric['attributes']) or '-'})")
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
