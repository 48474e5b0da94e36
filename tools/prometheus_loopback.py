#!/usr/bin/env python3
"""Helpers for .ci/observability.sh's real Prometheus run against the embedded system.

    prometheus_loopback.py config BASE_PORT RULES_DIR OUT   # loopback copy of prometheus.yml
    prometheus_loopback.py assert PROMETHEUS_URL             # PromQL over saga metrics has data

`config` keeps prometheus.yml's five service jobs, pointed at the embedded system's ops ports
(as `saga --addr BASE_PORT` lays them out: the next four for inventory, payment, shipping,
notification, and BASE_PORT + 5 for order-svc, whose API on BASE_PORT serves no metrics), loads the repository's alert rules, and drops the collector's job
(no collector runs in CI; k6 writes to this Prometheus through remote write instead).

`assert` waits (bounded) until each query below returns what it should, prints every answer,
and exits 1 naming the queries that never did. Standard library and PyYAML only.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVICES = ["order-svc", "inventory-svc", "payment-svc", "shipping-svc", "notification-svc"]
# Each service's ops port above BASE_PORT in the embedded mode.
OPS_OFFSET = {"order-svc": 5, "inventory-svc": 1, "payment-svc": 2, "shipping-svc": 3, "notification-svc": 4}
DEADLINE_S = 60


def loopback_config(base_port: int, rules_dir: str, out: str) -> None:
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    missing = [s for s in SERVICES if s not in jobs]
    if missing:
        raise SystemExit(f"prometheus.yml has no job for {missing}")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(pathlib.Path(rules_dir).resolve() / "*.yml")]
    config["scrape_configs"] = []
    for service in SERVICES:
        job = jobs[service]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{base_port + OPS_OFFSET[service]}"]}]
        config["scrape_configs"].append(job)
    pathlib.Path(out).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{promql}: {body}")
    return body["data"]["result"]


def labels_of(result: list[dict], label: str) -> set[str]:
    return {r["metric"].get(label, "") for r in result}


def positive(result: list[dict]) -> bool:
    return bool(result) and all(float(r["value"][1]) > 0 for r in result)


# (PromQL, what the answer must satisfy, what that means)
CHECKS = [
    ("sum(saga_orders_placed_total)", positive, "orders were placed"),
    ("sum by (outcome) (saga_outcomes_total)",
     lambda r: {"completed", "cancelled"} <= labels_of(r, "outcome"), "sagas completed and cancelled"),
    ('sum by (reason) (saga_outcomes_total{outcome="cancelled"})',
     lambda r: {"out_of_stock", "payment_declined", "destination_not_served"} <= labels_of(r, "reason"),
     "cancellations by reason"),
    ("histogram_quantile(0.99, sum by (le) (rate(saga_duration_seconds_bucket[1m])))",
     lambda r: bool(r) and 0 < float(r[0]["value"][1]) < 60, "p99 end-to-end saga duration"),
    ("sum by (service) (rate(saga_messages_handled_total[1m]))",
     lambda r: set(SERVICES) <= labels_of(r, "service"), "every service handles messages"),
    ("sum by (kind) (saga_compensations_total)",
     lambda r: {"inventory_released", "payment_refunded"} <= labels_of(r, "kind"), "compensations by kind"),
    ("count by (service) (saga_consumer_lag_messages)",
     lambda r: set(SERVICES) <= labels_of(r, "service"), "consumer lag per service (librdkafka statistics)"),
    ("sum by (service) (saga_outbox_backlog_messages)",
     lambda r: set(SERVICES) <= labels_of(r, "service"), "outbox backlog per service"),
    ('sum by (route, status) (rate(http_requests_total{service="order-svc",route=~"/orders.*"}[1m]))',
     lambda r: {"202", "200"} <= labels_of(r, "status"), "API request rate by route and status"),
    ("sum by (job) (up)", lambda r: set(SERVICES) <= labels_of(r, "job") and positive(r), "every service is up"),
    ('process_resident_memory_bytes{job="order-svc"}', positive, "process metrics"),
    ("count by (service) (saga_db_pool_connections)",
     lambda r: set(SERVICES) <= labels_of(r, "service"), "database pool connections per service"),
    ("sum by (service) (saga_db_pool_max_connections)",
     lambda r: set(SERVICES) <= labels_of(r, "service") and positive(r), "database pool size per service"),
    ("sum by (service) (saga_db_pool_acquire_seconds_count)",
     lambda r: set(SERVICES) <= labels_of(r, "service") and positive(r), "database pool acquire waits per service"),
    ("sum by (service) (saga_db_pool_acquire_timeouts_total)",
     lambda r: set(SERVICES) <= labels_of(r, "service"), "database pool acquire timeouts per service"),
    ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{service="order-svc",route="/orders",method="POST"}[1m])))',
     lambda r: bool(r) and 0 < float(r[0]["value"][1]) < 60, "POST /orders p99 (the ApiLatencyP99High alert's series)"),
    ("max(saga_orders_overdue)", lambda r: bool(r), "the stuck-saga gauge"),
    ("sum(k6_http_reqs_total)", positive, "k6's requests (remote write)"),
    # The remote-write queries of the k6 dashboard (grafana/dashboards/saga-k6.json).
    ("max(k6_http_req_duration_p95)", positive, "k6's request duration p95"),
    ("avg(k6_http_req_failed_rate)", lambda r: bool(r), "k6's failed-request rate"),
    ("avg(k6_checks_rate)", positive, "k6's checks"),
    ("max(k6_order_time_to_terminal_p95)", positive, "k6's order time to terminal p95"),
    ("sum by (status) (k6_orders_terminal_total)",
     lambda r: {"completed", "cancelled"} <= labels_of(r, "status"), "k6's orders by final status"),
    ("max(k6_vus)", lambda r: bool(r), "k6's virtual users"),
    ('ALERTS{alertname="ServiceDown"}', lambda r: not r, "no service is down"),
]


def assert_queries(base: str) -> int:
    deadline = time.monotonic() + DEADLINE_S
    pending = list(CHECKS)
    answers: dict[str, list[dict]] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for promql, ok, meaning in pending:
            try:
                result = query(base, promql)
            except (OSError, RuntimeError) as err:
                result = []
                answers[promql] = [{"error": str(err)}]
            else:
                answers[promql] = result
            if not ok(result):
                still.append((promql, ok, meaning))
        pending = still
        if pending:
            time.sleep(1)
    for promql, _, meaning in CHECKS:
        status = "FAIL" if any(p[0] == promql for p in pending) else "ok  "
        shown = [
            ({k: v for k, v in r.get("metric", {}).items() if k != "__name__"}, r.get("value", [None, None])[1])
            if "error" not in r else r for r in answers.get(promql, [])
        ]
        print(f"{status} {meaning}: {promql}\n       = {shown}")
    rules = json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5))["data"]["groups"]
    alerting = [r for g in rules for r in g["rules"] if r["type"] == "alerting"]
    unhealthy = [r["name"] for r in alerting if r.get("health") != "ok"]
    print(f"alert rules loaded: {len(alerting)} ({', '.join(r['name'] for r in alerting)}); unhealthy: {unhealthy or 'none'}")
    # Every alert of the repository's rule files, loaded and evaluating without error.
    expected = sorted(rule["alert"] for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
                      for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups") or []
                      for rule in group.get("rules") or [] if "alert" in rule)
    loaded = sorted(r["name"] for r in alerting)
    if loaded != expected:
        print(f"alert rules: loaded {loaded}, the rule files have {expected}", file=sys.stderr)
    if pending or loaded != expected or unhealthy:
        print(f"failed: {[p[2] for p in pending]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[1] == "config":
        loopback_config(int(argv[2]), argv[3], argv[4])
        return 0
    if len(argv) == 3 and argv[1] == "assert":
        return assert_queries(argv[2].rstrip("/"))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
