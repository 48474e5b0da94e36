#!/bin/bash
# Container health probe for the saga image, without curl: an HTTP/1.1 GET over bash's
# /dev/tcp to this container's own ops endpoint. Exits 0 on a 200, 1 otherwise (printing the
# status line and body, which Docker keeps in `docker inspect` for the failing check).
#
#   healthcheck [PATH]     PATH defaults to $HEALTHCHECK_PATH, else /readyz
#
# The port is $HEALTHCHECK_PORT, else the port of $OPS_ADDR (order-svc's ops listener), else
# of $HTTP_ADDR (the other services serve their ops endpoints there), else the port of
# $SAGA_ADDR plus 5 (the embedded all-in-one serves order-svc's ops endpoints there, off the
# public API port), else 8085. The probe always dials 127.0.0.1, so a service must listen on
# 0.0.0.0 (or 127.0.0.1) inside the container.
set -euo pipefail

path="${1:-${HEALTHCHECK_PATH:-/readyz}}"
if [ -n "${HEALTHCHECK_PORT:-}" ]; then
  port="${HEALTHCHECK_PORT}"
elif [ -n "${OPS_ADDR:-}" ]; then
  port="${OPS_ADDR##*:}"
elif [ -n "${HTTP_ADDR:-}" ]; then
  port="${HTTP_ADDR##*:}"
else
  saga_addr="${SAGA_ADDR:-127.0.0.1:8080}"
  port=$((${saga_addr##*:} + 5))
fi

if ! { exec 3<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null; then
  echo "unhealthy: nothing listens on 127.0.0.1:${port}" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUser-Agent: saga-healthcheck\r\nConnection: close\r\n\r\n' \
  "${path}" "${port}" >&3

status=""
IFS= read -r -t 5 status <&3 || true
status="${status%$'\r'}"
case "${status}" in
  "HTTP/1."?" 200"*)
    exec 3>&-
    exit 0
    ;;
esac

echo "unhealthy: GET ${path} on port ${port} answered '${status:-nothing}'" >&2
line=""
while IFS= read -r -t 2 line <&3 || [[ -n "${line}" ]]; do
  printf '%s\n' "${line%$'\r'}" >&2
  line=""
done
exec 3>&-
exit 1
