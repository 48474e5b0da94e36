#!/usr/bin/env python3
"""Generates the Grafana dashboards in grafana/dashboards/ (the JSON files are committed).

    python3 tools/grafana_dashboards.py          # write them
    python3 tools/grafana_dashboards.py --check  # exit 1 if a committed file is out of date

Three dashboards: the saga overview, a per-service detail (pick the service), and the k6 load
test panels. Metric names are documented in shared/src/metrics.rs and order-svc/src/metrics.rs.
Queries use Grafana's $__rate_interval; the k6 panels work with both ways k6 metrics reach
Prometheus (docs/observability.md): the OpenTelemetry output through the collector, and the
Prometheus remote-write output. The names are the ones k6 1.1.0 sends (CI checks both:
tools/prometheus_loopback.py for remote write, tools/k6_otlp.py for OpenTelemetry).
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "grafana" / "dashboards"
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping into new rows."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        panel_id = self.next_id
        self.next_id += 1
        return panel_id

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_height
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.x, self.y, self.row_height = 0, self.y + 1, 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel = {"id": self._id(), **panel, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def targets(*queries: tuple[str, str]) -> list[dict]:
    return [
        {"refId": chr(ord("A") + i), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True}
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(title: str, unit: str, *queries: tuple[str, str], description: str = "", stack: bool = False) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": targets(*queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                           "showPoints": "never"},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, unit: str, expr: str, description: str = "", thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": targets((expr, "")),
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto",
                    "orientation": "auto"},
    }


def quantiles(metric: str, selector: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    legend_by = " ".join("{{" + label.strip() + "}}" for label in by.split(",") if label.strip())
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))",
         f"p{int(q * 100)} {legend_by}".strip())
        for q in (0.5, 0.95, 0.99)
    ]


def dashboard(uid: str, title: str, description: str, layout: Layout, tags: list[str],
              templating: list[dict] | None = None, links: list[dict] | None = None) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["saga", *tags],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "templating": {"list": templating or []},
        "annotations": {"list": []},
        "links": links or [],
        "panels": layout.panels,
    }


# The alerts' expressions (prometheus/rules/saga-alerts.yml), without their thresholds.
OPS_ROUTES = "/livez|/healthz|/readyz|/metrics"
POST_ORDERS_P99 = ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket'
                   '{{service="order-svc",route="/orders",method="POST"}}[{window}])))')
SERVER_ERROR_RATIO = (f'sum by (service) (rate(http_requests_total{{{{status=~"5..",route!~"{OPS_ROUTES}"}}}}[{{window}}])) '
                      f'/ sum by (service) (rate(http_requests_total{{{{route!~"{OPS_ROUTES}"}}}}[{{window}}]))')
DEAD_LETTER_RATIO = ("sum by (service) (increase(saga_dead_letters_total[{window}])) "
                     "/ sum by (service) (increase(saga_messages_handled_total[{window}]))")


LINKS = [{"type": "dashboards", "tags": ["saga"], "asDropdown": True, "title": "Saga dashboards",
          "includeVars": False, "keepTime": True}]


def overview() -> dict:
    layout = Layout()
    layout.row("Orders")
    layout.add(stat("Orders placed / s", "reqps", f"sum(rate(saga_orders_placed_total[{RATE}]))"), 6, 4)
    layout.add(stat("Completed (last 5m)", "percentunit",
                    'sum(rate(saga_outcomes_total{outcome="completed"}[5m])) / sum(rate(saga_outcomes_total[5m]))',
                    description="Share of sagas ending in OrderCompleted."), 6, 4)
    layout.add(stat("Saga p99 (last 5m)", "s",
                    "histogram_quantile(0.99, sum by (le) (rate(saga_duration_seconds_bucket[5m])))",
                    description="Objective: 2 s (alert SagaDurationP99OverObjective).",
                    thresholds=[(None, "green"), (2, "red")]), 6, 4)
    layout.add(stat("Dead letters (last 1h)", "short", "sum(increase(saga_dead_letters_total[1h]))",
                    description="Alert SagaDeadLetters: any dead letter in the last 15 minutes.",
                    thresholds=[(None, "green"), (1, "red")]), 6, 4)
    layout.add(timeseries("Orders placed, completed and cancelled / s", "reqps",
                          (f"sum(rate(saga_orders_placed_total[{RATE}]))", "placed"),
                          (f"sum by (outcome) (rate(saga_outcomes_total[{RATE}]))", "{{outcome}}")), 12, 8)
    layout.add(timeseries("Cancellations by reason / s", "reqps",
                          (f'sum by (reason) (rate(saga_outcomes_total{{outcome="cancelled"}}[{RATE}]))', "{{reason}}"),
                          stack=True), 12, 8)
    layout.add(timeseries("End-to-end saga duration (placed → terminal)", "s",
                          *quantiles("saga_duration_seconds", "")), 12, 8)
    layout.add(timeseries("Saga duration by outcome (p95)", "s",
                          (f"histogram_quantile(0.95, sum by (le, outcome) (rate(saga_duration_seconds_bucket[{RATE}])))",
                           "{{outcome}}")), 12, 8)
    layout.row("Objectives (each panel's red line is its alert's threshold)")
    layout.add(timeseries("POST /orders p99 (objective 200 ms)", "s",
                          (POST_ORDERS_P99.format(window=RATE), "p99"), ("vector(0.2)", "objective"),
                          description="Alert ApiLatencyP99High: over 200 ms for 5 minutes (5-minute window)."),
               6, 8)
    layout.add(timeseries("API 5xx ratio (objective 0.1 %)", "percentunit",
                          (SERVER_ERROR_RATIO.format(window=RATE), "{{service}}"), ("vector(0.001)", "objective"),
                          description="Alert HttpServerErrors: over 0.1 % of a service's requests for 5 minutes "
                                      "(5-minute window). Scrapes and probes of the ops endpoints are left out."),
               6, 8)
    layout.add(timeseries("Dead letters / messages consumed (objective 0.1 %)", "percentunit",
                          (DEAD_LETTER_RATIO.format(window="15m"), "{{service}}"), ("vector(0.001)", "objective"),
                          description="Alert SagaDeadLetterRatioHigh: over 0.1 % for 5 minutes (15-minute window); "
                                      "SagaDeadLetters fires on any dead letter."),
               6, 8)
    layout.add(timeseries("Saga p99, placed → terminal (objective 2 s)", "s",
                          ("histogram_quantile(0.99, sum by (le) (rate(saga_duration_seconds_bucket[5m])))", "p99"),
                          ("vector(2)", "objective"),
                          description="Alert SagaDurationP99OverObjective: over 2 s for 10 minutes (5-minute window)."),
               6, 8)
    layout.row("Compensations and failures")
    layout.add(timeseries("Compensations by kind / s", "reqps",
                          (f"sum by (kind) (rate(saga_compensations_total[{RATE}]))", "{{kind}}"), stack=True), 8, 8)
    layout.add(timeseries("Dead letters (5m increase)", "short",
                          ("sum by (service, topic) (increase(saga_dead_letters_total[5m]))", "{{service}} ← {{topic}}")),
               8, 8)
    layout.add(timeseries("Handler retries / s", "reqps",
                          (f"sum by (service) (rate(saga_message_retries_total[{RATE}]))", "{{service}}")), 8, 8)
    layout.row("Flow")
    layout.add(timeseries("Consumer lag (messages)", "short",
                          ("sum by (group, topic) (saga_consumer_lag_messages)", "{{group}} ← {{topic}}"),
                          description="Alert SagaConsumerLagHigh: a group over 1000 messages behind a topic for "
                                      "5 minutes."), 8, 8)
    layout.add(timeseries("Outbox backlog (rows)", "short",
                          ("sum by (service) (saga_outbox_backlog_messages)", "{{service}}")), 8, 8)
    layout.add(timeseries("Open and overdue orders", "short",
                          ("sum(saga_orders_open)", "open"), ("sum(saga_orders_overdue)", "overdue (past deadline)"),
                          ("max(saga_orders_open_max)", "bound (ORDER_API_MAX_OPEN_SAGAS)"),
                          description="Alert SagaStuckPastDeadline: overdue orders for 2 minutes. At the bound, "
                                      "new orders are refused (503)."),
               8, 8)
    layout.add(timeseries("Messages handled / s by service", "reqps",
                          (f'sum by (service) (rate(saga_messages_handled_total{{outcome!="ignored"}}[{RATE}]))',
                           "{{service}}"),
                          description="Messages each service acted on (processed, skipped as duplicates or "
                                      "dead-lettered); messages of types it does not act on (outcome=\"ignored\") "
                                      "are left out."), 12, 8)
    layout.add(timeseries("Outbox publish latency p95 (commit → broker ack)", "s",
                          (f"histogram_quantile(0.95, sum by (le, service) (rate(saga_outbox_publish_latency_seconds_bucket[{RATE}])))",
                           "{{service}}")), 12, 8)
    layout.add(timeseries("Services up (scrape succeeds)", "short",
                          ('up{job=~"order-svc|inventory-svc|payment-svc|shipping-svc|notification-svc"}', "{{job}}"),
                          description="Alert ServiceDown: a service's scrape failing for a minute."), 12, 6)
    layout.add(timeseries("Orders refused at capacity / s", "reqps",
                          (f"sum(rate(saga_orders_refused_at_capacity_total[{RATE}]))", "refused (503)"),
                          description="Admission control: POST /orders answered 503 + Retry-After because the "
                                      "open sagas reached ORDER_API_MAX_OPEN_SAGAS. Alert OrdersRefusedAtCapacity: "
                                      "refusals for 5 minutes."), 12, 6)
    return dashboard("saga-overview", "Saga overview",
                     "Orders through the saga: rates, outcomes by reason, end-to-end duration, compensations, "
                     "dead letters, lag and outbox backlog.", layout, ["overview"], links=LINKS)


def service_detail() -> dict:
    s = '{service="$service"}'
    layout = Layout()
    layout.row("HTTP")
    layout.add(timeseries("Requests / s by route and status", "reqps",
                          (f'sum by (route, method, status) (rate(http_requests_total{s}[{RATE}]))',
                           "{{method}} {{route}} {{status}}")), 8, 8)
    layout.add(timeseries("5xx ratio", "percentunit",
                          (f'sum(rate(http_requests_total{{service="$service",status=~"5.."}}[{RATE}])) '
                           f'/ sum(rate(http_requests_total{s}[{RATE}]))', "5xx")), 8, 8)
    layout.add(timeseries("Latency p95 by route", "s",
                          (f"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{s}[{RATE}])))",
                           "{{route}}")), 8, 8)
    layout.add(timeseries("Failed authentications / s by reason (order-svc)", "reqps",
                          (f"sum by (reason) (rate(saga_http_auth_failures_total[{RATE}]))", "{{reason}}"),
                          description="Alert ApiAuthFailures: over one a second for 5 minutes. order-svc only "
                                      "(the other services have no API)."), 24, 6)
    layout.row("Messages")
    layout.add(timeseries("Handled / s by type and outcome", "reqps",
                          (f"sum by (type, outcome) (rate(saga_messages_handled_total{s}[{RATE}]))",
                           "{{type}} {{outcome}}")), 12, 8)
    layout.add(timeseries("Handler latency", "s", *quantiles("saga_handler_duration_seconds", s)), 12, 8)
    layout.add(timeseries("Handler latency p95 by type", "s",
                          (f"histogram_quantile(0.95, sum by (le, type) (rate(saga_handler_duration_seconds_bucket{s}[{RATE}])))",
                           "{{type}}")), 8, 8)
    layout.add(timeseries("Retries / s by type", "reqps",
                          (f"sum by (type) (rate(saga_message_retries_total{s}[{RATE}]))", "{{type}}")), 8, 8)
    layout.add(timeseries("Dead letters (5m increase) by origin topic", "short",
                          (f"sum by (topic, type) (increase(saga_dead_letters_total{s}[5m]))", "{{topic}} {{type}}")), 8, 8)
    layout.row("Webhook (notification-svc)")
    layout.add(timeseries("Webhook circuit breaker (0 closed, 1 half-open, 2 open)", "short",
                          (f"max by (instance) (saga_webhook_circuit_state{s})", "{{instance}}"),
                          description="Open: the webhook failed repeatedly; no request is sent and the consumer "
                                      "pauses (nothing is dead-lettered) until a half-open probe succeeds. "
                                      "notification-svc only. Alert NotificationWebhookCircuitOpen: not closed "
                                      "for 5 minutes."), 12, 7)
    layout.add(timeseries("Circuit breaker transitions (5m increase) by new state", "short",
                          (f"sum by (to) (increase(saga_webhook_circuit_transitions_total{s}[5m]))", "{{to}}")),
               12, 7)
    layout.row("Kafka")
    layout.add(timeseries("Consumer lag by topic and partition", "short",
                          (f"sum by (topic, partition) (saga_consumer_lag_messages{s})", "{{topic}}/{{partition}}")), 8, 8)
    layout.add(timeseries("Consumer errors and skipped offsets / s", "reqps",
                          (f"sum by (kind) (rate(saga_consumer_errors_total{s}[{RATE}]))", "error {{kind}}"),
                          (f"sum by (topic) (rate(saga_consumer_skipped_offsets_total{s}[{RATE}]))", "skipped {{topic}}")),
               8, 8)
    layout.add(timeseries("Compensations / s by kind", "reqps",
                          (f"sum by (kind) (rate(saga_compensations_total{s}[{RATE}]))", "{{kind}}")), 8, 8)
    layout.row("Outbox")
    layout.add(timeseries("Backlog (rows)", "short", (f"sum(saga_outbox_backlog_messages{s})", "backlog")), 8, 8)
    layout.add(timeseries("Published / s by topic", "reqps",
                          (f"sum by (topic) (rate(saga_outbox_published_total{s}[{RATE}]))", "{{topic}}"),
                          (f"sum(rate(saga_outbox_errors_total{s}[{RATE}]))", "failed rounds")), 8, 8)
    layout.add(timeseries("Publish latency (commit → broker ack)", "s",
                          *quantiles("saga_outbox_publish_latency_seconds", s)), 8, 8)
    layout.row("Database pool")
    layout.add(timeseries("Pool connections", "short",
                          (f'sum by (state) (saga_db_pool_connections{s})', "{{state}}"),
                          (f"sum(saga_db_pool_max_connections{s})", "max"),
                          description="Connections in use (lent to a transaction or a query) and idle, sampled "
                                      "every second, against the pool's maximum (DATABASE_MAX_CONNECTIONS)."),
               8, 8)
    layout.add(timeseries("Acquire wait", "s", *quantiles("saga_db_pool_acquire_seconds", s),
                          description="Time a transaction waited for a connection from the pool (Db::begin, "
                                      "Db::begin_read)."), 8, 8)
    layout.add(timeseries("Acquire timeouts / s", "reqps",
                          (f"sum(rate(saga_db_pool_acquire_timeouts_total{s}[{RATE}]))", "timeouts"),
                          description="Acquires that gave up after the pool's acquire timeout: every connection "
                                      "stayed busy (or the database was unreachable) that long."), 8, 8)
    layout.row("Process")
    job = '{job="$service"}'
    layout.add(timeseries("CPU", "percentunit", (f"rate(process_cpu_seconds_total{job}[{RATE}])", "{{instance}}"),
                          description="In the embedded mode the process is shared: its metrics are on order-svc."),
               6, 7)
    layout.add(timeseries("Resident memory", "bytes", (f"process_resident_memory_bytes{job}", "{{instance}}")), 6, 7)
    layout.add(timeseries("Open file descriptors", "short", (f"process_open_fds{job}", "{{instance}}")), 6, 7)
    layout.add(timeseries("Threads", "short", (f"process_threads{job}", "{{instance}}")), 6, 7)
    variable = {
        "name": "service",
        "label": "Service",
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": "label_values(saga_messages_handled_total, service)", "refId": "service"},
        "definition": "label_values(saga_messages_handled_total, service)",
        "refresh": 2,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {"text": "order-svc", "value": "order-svc"},
        "options": [],
    }
    return dashboard("saga-service", "Saga service detail",
                     "One service: HTTP, messages handled, handler latency, retries, dead letters, lag, outbox, "
                     "compensations, database pool, process.", layout, ["service"], templating=[variable], links=LINKS)


def k6() -> dict:
    layout = Layout()
    layout.row("k6")
    layout.add(timeseries("Virtual users", "short", ("sum(k6_vus)", "VUs"), ("sum(k6_vus_max)", "max")), 8, 8)
    layout.add(timeseries("Requests / s by status", "reqps",
                          (f"sum by (status) (rate(k6_http_reqs_total[{RATE}]))", "{{status}}")), 8, 8)
    layout.add(timeseries("Iterations / s", "reqps", (f"sum(rate(k6_iterations_total[{RATE}]))", "iterations")), 8, 8)
    layout.add(timeseries(
        "Failed requests", "percentunit",
        ("avg(k6_http_req_failed_rate)", "failed (remote write)"),
        (f"(sum(rate(k6_http_req_failed_occurred_total[{RATE}])) or vector(0)) / sum(rate(k6_http_req_failed_total[{RATE}]))",
         "failed (OpenTelemetry)"),
        description="Threshold: under 1 %. One query per way k6 reaches Prometheus (docs/observability.md). "
                    "k6's OpenTelemetry output sends a rate as two counters, <name>.total (every value) and "
                    "<name>.occurred (the true ones, from the first on)."), 8, 8)
    layout.add(timeseries(
        "Request duration p95", "s",
        ("max(k6_http_req_duration_p95)", "p95 (remote write)"),
        (f"histogram_quantile(0.95, sum by (le) (rate(k6_http_req_duration_milliseconds_bucket[{RATE}]))) / 1000",
         "p95 (OpenTelemetry)"),
        description="Threshold: POST /orders p95 under 500 ms. Remote write sends seconds; the "
                    "OpenTelemetry output sends a histogram in milliseconds."), 8, 8)
    layout.add(timeseries(
        "Checks passed", "percentunit",
        ("avg(k6_checks_rate)", "passed (remote write)"),
        (f"(sum(rate(k6_checks_occurred_total[{RATE}])) or vector(0)) / sum(rate(k6_checks_total[{RATE}]))",
         "passed (OpenTelemetry)")), 8, 8)
    layout.add(timeseries(
        "Order time to terminal p95 (k6's view)", "s",
        ("max(k6_order_time_to_terminal_p95)", "p95 (remote write)"),
        (f"histogram_quantile(0.95, sum by (le) (rate(k6_order_time_to_terminal_milliseconds_bucket[{RATE}]))) / 1000",
         "p95 (OpenTelemetry)"),
        description="From POST /orders to the first GET that shows completed or cancelled."), 12, 8)
    layout.add(timeseries(
        "Orders by final status (k6's view) / s", "reqps",
        (f"sum by (status) (rate(k6_orders_terminal_total[{RATE}]))", "{{status}}")), 12, 8)
    layout.row("The saga under load")
    layout.add(timeseries("Orders placed and ended / s", "reqps",
                          (f"sum(rate(saga_orders_placed_total[{RATE}]))", "placed"),
                          (f"sum by (outcome) (rate(saga_outcomes_total[{RATE}]))", "{{outcome}}")), 12, 8)
    layout.add(timeseries("End-to-end saga duration", "s", *quantiles("saga_duration_seconds", "")), 12, 8)
    layout.add(timeseries("Consumer lag (messages)", "short",
                          ("sum by (group) (saga_consumer_lag_messages)", "{{group}}")), 12, 8)
    layout.add(timeseries("API latency p95 by route", "s",
                          (f'histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{{service="order-svc"}}[{RATE}])))',
                           "{{route}}")), 12, 8)
    return dashboard("saga-k6", "Saga load test (k6)",
                     "k6's side of a load test (loadtests/) next to the saga's own metrics.", layout, ["k6"], links=LINKS)


DASHBOARDS = {"saga-overview.json": overview, "saga-service.json": service_detail, "saga-k6.json": k6}


def render(build) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run tools/grafana_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    if check:
        print(f"grafana/dashboards: {len(DASHBOARDS)} dashboards up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
