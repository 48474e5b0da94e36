#!/bin/bash
# Gives each service role created by init.sql its password, from the variables compose passes
# to the postgres container (ORDER_SVC_DB_PASSWORD, ...; required, no defaults). The official
# postgres image runs this once, after init.sql, when the data volume is first initialised.
# Each password reaches psql through its environment (\getenv), never a command line or the
# SQL text, so it is neither visible in the process list nor able to break the quoting.
set -euo pipefail

for role in order_svc inventory_svc payment_svc shipping_svc notification_svc; do
  variable="${role^^}_DB_PASSWORD"
  password="${!variable:-}"
  if [ -z "${password}" ]; then
    echo "role-passwords.sh: ${variable} is not set" >&2
    exit 1
  fi
  ROLE_PASSWORD="${password}" psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres -v role="${role}" <<'SQL'
\getenv password ROLE_PASSWORD
ALTER ROLE :"role" PASSWORD :'password';
SQL
done
