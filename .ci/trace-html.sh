#!/usr/bin/env bash
# `sagactl trace --format html` in a real browser: starts the embedded system (fresh data
# directory, free loopback ports, a random admin key configured by digest), places a completed
# and a cancelled order with curl, renders both traces to HTML and SVG with sagactl (which finds
# the broker through the system's data directory: no --brokers), checks both are well-formed
# XML, and opens each page in headless Chromium twice: a screenshot, which must be a non-trivial
# 1400x900 PNG, and the DOM, which must hold the five service lanes, every event of the order and
# the verdict. Installs Chromium (Debian's) if missing. Bounded in time. Exits non-zero on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "trace-html: $*" >&2; exit 1; }

work=$(mktemp -d -t saga-trace-html.XXXXXX)
saga_pid=
cleanup() {
  local status=$?
  if [ -n "$saga_pid" ]; then
    kill -TERM "$saga_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$saga_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$saga_pid" 2>/dev/null || true
    wait "$saga_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/saga.log" ]; then
    echo "--- last lines of the system's log" >&2
    tail -n 30 "$work/saga.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "chromium"
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version 2>/dev/null

step "build sagactl and the embedded system"
cargo build --locked -p saga --bin saga -p sagactl --bin sagactl
sagactl=target/debug/sagactl

step "the embedded system"
# Five consecutive free loopback ports: the API and the other services' ops endpoints.
port=$(python3 - <<'EOF'
import socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
for base in range(21080, 22000, 10):
    if all(free(base + i) for i in range(6)):
        print(base)
        break
EOF
)
[ -n "$port" ] || fail "no free loopback ports"
api="http://127.0.0.1:$port"
key="sk_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
data="$work/data"
ORDER_API_KEYS="admin:${digest}" SAGA_DATA_DIR="$data" LOG_FORMAT=json RUST_LOG=warn \
  target/debug/saga --addr "127.0.0.1:$port" --deadline-secs 60 >"$work/saga.log" 2>&1 &
saga_pid=$!
ready=
for _ in $(seq 1 360); do
  kill -0 "$saga_pid" 2>/dev/null || fail "the system exited during start-up"
  # /readyz is on order-svc's ops listener, the API's port + 5, not on the public port.
  if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$((port + 5))/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.25
done
[ -n "$ready" ] || fail "the order API did not become ready within 90 s"
[ -s "$data/broker.addr" ] || fail "the running system did not publish $data/broker.addr"
echo "order API on $api, broker $(cat "$data/broker.addr") (from $data/broker.addr)"

place() {
  curl -fsS --max-time 10 "$api/orders" -H "authorization: Bearer $key" -H 'content-type: application/json' -d "$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
completed=$(place '{"customer_id":"cust-rich","items":[{"sku":"sku-tee","quantity":2}],"ship_to":{"country":"NL"}}')
cancelled=$(place '{"customer_id":"cust-rich","items":[{"sku":"sku-mug","quantity":1}],"ship_to":{"country":"JP"}}')
echo "placed $completed (to complete) and $cancelled (to cancel: JP is not served)"

# Each trace until its verdict is settled (outcome, compensations and notice all on Kafka).
settled() {
  local id=$1 expect=$2
  for _ in $(seq 1 120); do
    if SAGA_DATA_DIR="$data" "$sagactl" trace "$id" -o json >"$work/$id.json" 2>"$work/$id.err" &&
      python3 - "$work/$id.json" "$expect" <<'EOF'
import json, sys
verdict = json.load(open(sys.argv[1]))["verdict"]
sys.exit(0 if verdict["settled"] and verdict["state"] == sys.argv[2] else 1)
EOF
    then
      return 0
    fi
    sleep 0.25
  done
  cat "$work/$id.err" >&2 || true
  fail "order $id did not settle as $expect within 30 s"
}

# Headless, as root (no sandbox), nothing fetched or updated, a fresh profile each run.
browser=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync)

mkdir -p target/trace-html
for pair in "completed:$completed" "cancelled:$cancelled"; do
  name=${pair%%:*}
  id=${pair#*:}
  step "the $name order's trace ($id)"
  settled "$id" "$name"
  SAGA_DATA_DIR="$data" "$sagactl" trace "$id" --format html >"$work/$name.html"
  SAGA_DATA_DIR="$data" "$sagactl" trace "$id" --format svg >"$work/$name.svg"
  # Both are well-formed XML (the page is polyglot XHTML), so any XML tool can read them too.
  python3 - "$work/$name.html" "$work/$name.svg" <<'EOF'
import sys
import xml.etree.ElementTree as ET
page, svg = (ET.parse(path).getroot() for path in sys.argv[1:])
if page.tag != "html" or svg.tag != "{http://www.w3.org/2000/svg}svg":
    sys.exit(f"unexpected roots: {page.tag}, {svg.tag}")
EOF
  echo "page: $(wc -c <"$work/$name.html") bytes, drawing alone: $(wc -c <"$work/$name.svg") bytes (both well-formed XML)"
  timeout 120 "${browser[@]}" --user-data-dir="$(mktemp -d -p "$work" chrome.XXXXXX)" \
    --screenshot="$work/$name.png" --window-size=1400,900 "file://$work/$name.html" >"$work/$name.chrome.log" 2>&1 ||
    { cat "$work/$name.chrome.log" >&2; fail "chromium could not screenshot $name.html"; }
  timeout 120 "${browser[@]}" --user-data-dir="$(mktemp -d -p "$work" chrome.XXXXXX)" \
    --dump-dom "file://$work/$name.html" >"$work/$name.dom.html" 2>"$work/$name.dom.log" ||
    { cat "$work/$name.dom.log" >&2; fail "chromium could not load $name.html"; }
  python3 - "$work/$name.png" "$work/$name.dom.html" "$work/$id.json" "$name" <<'EOF'
import json, struct, sys, zlib
png_path, dom_path, report_path, name = sys.argv[1:]
png = open(png_path, "rb").read()
if png[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"{png_path}: not a PNG")
width, height = struct.unpack(">II", png[16:24])
if (width, height) != (1400, 900):
    sys.exit(f"{png_path}: {width}x{height}, expected 1400x900")
if len(png) < 20_000:
    sys.exit(f"{png_path}: only {len(png)} bytes: a blank page?")
# The image data, filtered: a blank page is nearly all zeros after filtering.
data, at = b"", 8
while at < len(png):
    length, kind = struct.unpack(">I4s", png[at:at + 8])
    if kind == b"IDAT":
        data += png[at + 8:at + 8 + length]
    at += 12 + length
raw = zlib.decompress(data)
busy = sum(1 for b in raw if b) / len(raw)
if busy < 0.01:
    sys.exit(f"{png_path}: {busy:.2%} of the image data is not blank")
print(f"screenshot: {width}x{height}, {len(png)} bytes, {busy:.1%} non-blank filtered data")

dom = open(dom_path).read()
report = json.load(open(report_path))
missing = []
for lane in ["order-svc", "inventory-svc", "payment-svc", "shipping-svc", "notification-svc"]:
    if f'<g class="lane" data-service="{lane}">' not in dom:
        missing.append(f"lane {lane}")
for i, e in enumerate(report["events"]):
    position = f'{e["topic"]}/{e["partition"]}/{e["offset"]}'
    element = f'id="ev-{i}" data-type="{e["event_type"]}" data-service="{e["service"]}" data-position="{position}"'
    if element not in dom:
        missing.append(f'event {e["event_type"]} at {position}')
if f'class="verdict {report["verdict"]["state"]}"' not in dom:
    missing.append("the verdict")
arrows = dom.count('class="arrow causation"')
if missing:
    sys.exit(f"{dom_path}: missing from the DOM: {', '.join(missing)}")
print(f"DOM: 5 lanes, {len(report['events'])} events, {arrows} causation arrows, verdict {report['verdict']['state']}: "
      + report["verdict"]["summary"])
EOF
  cp "$work/$name.html" "$work/$name.svg" "$work/$name.png" target/trace-html/
done

step "stop the system"
kill -TERM "$saga_pid"
wait "$saga_pid" || fail "the system did not stop cleanly"
saga_pid=
[ ! -e "$data/broker.addr" ] || fail "the stopped system left $data/broker.addr behind"
echo "stopped; $data/broker.addr removed"

step "trace drawings checked in chromium (target/trace-html/)"
