#!/usr/bin/env bash
# Hostile HTTP input: schemathesis generates test cases from the running embedded
# system's /openapi.json and sends them with an admin key. It fails on any server error (5xx)
# and on any response that does not conform to the document: an undocumented status code,
# content type or header, or a body that does not match its schema. At least MIN_CASES cases
# must have run.
#
# Installs a pinned schemathesis from PyPI into a cached virtualenv; builds and starts its own
# system (fresh data directory, free loopback port, a random admin key configured by digest,
# as in production), and stops it. Bounded in time. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

SCHEMATHESIS_VERSION=4.32.5
MIN_CASES=${SCHEMATHESIS_MIN_CASES:-1000}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-150}
SEED=${SCHEMATHESIS_SEED:-8}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "schemathesis: $*" >&2; exit 1; }

work=$(mktemp -d -t saga-schemathesis.XXXXXX)
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

step "schemathesis ${SCHEMATHESIS_VERSION}"
venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/saga/schemathesis-venv}"
if [ "$(cat "$venv/.version" 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
  echo "$SCHEMATHESIS_VERSION" >"$venv/.version"
fi
"$venv/bin/st" --version

step "the embedded system"
cargo build --locked -p saga --bin saga
# Six consecutive free loopback ports: the API, the other services' ops endpoints, and
# order-svc's ops endpoints (the API's port + 5).
port=$(python3 - <<'EOF'
import socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
for base in range(19080, 20000, 10):
    if all(free(base + i) for i in range(6)):
        print(base)
        break
EOF
)
[ -n "$port" ] || fail "no free loopback ports"
base="127.0.0.1:$port"
# A random admin key, configured by its digest as in production.
key="sk_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
ORDER_API_KEYS="admin:${digest}" ORDER_API_RATE_LIMIT_PER_SEC=5000 \
  SAGA_DATA_DIR="$work/data" LOG_FORMAT=json RUST_LOG=warn \
  target/debug/saga --addr "$base" --deadline-secs 30 >"$work/saga.log" 2>&1 &
saga_pid=$!
ready=
for _ in $(seq 1 360); do
  kill -0 "$saga_pid" 2>/dev/null || fail "the system exited during start-up"
  if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$((port + 5))/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.25
done
[ -n "$ready" ] || fail "the order API did not become ready within 90 s"
echo "order API on http://$base"

# One worker: with two, schemathesis' threads call ast.parse concurrently (hypothesis describes
# its filters from their source), and CPython 3.11's AST constructor keeps its recursion depth
# in per-interpreter state, so a race aborts the run with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905): a crash of the tool, not a finding.
step "schemathesis run (checks: ${CHECKS}; at least ${MIN_CASES} cases)"
status=0
timeout 900 "$venv/bin/st" run "http://$base/openapi.json" \
  --header "Authorization: Bearer ${key}" \
  --checks "$CHECKS" \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 30 \
  --suppress-health-check too_slow,filter_too_much \
  --report ndjson --report-ndjson-path "$work/events.ndjson" \
  --no-color >"$work/st.log" 2>&1 || status=$?
grep -Ev '^\s*$' "$work/st.log" | tail -n 40
[ "$status" -eq 0 ] || fail "schemathesis found failures (exit $status)"

# The summary line counts the generated cases; the events say which statuses came back.
cases=$(sed -n 's/^ *\([0-9][0-9,]*\) generated.*/\1/p' "$work/st.log" | tr -d , | head -n 1)
[ -n "$cases" ] || fail "no test case count in the schemathesis output"
echo "test cases generated: $cases"
[ "$cases" -ge "$MIN_CASES" ] || fail "only $cases test cases ran; at least $MIN_CASES are required"
mkdir -p target/schemathesis
cp "$work/events.ndjson" target/schemathesis/events.ndjson
"$venv/bin/python" - "$work/events.ndjson" <<'EOF'
import collections, json, sys
statuses = collections.Counter()
def walk(node):
    if isinstance(node, dict):
        response = node.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            statuses[response["status_code"]] += 1
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
with open(sys.argv[1]) as events:
    for line in events:
        walk(json.loads(line))
if statuses:
    print("responses by status (as recorded in the events):", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
EOF

step "schemathesis checks passed"
