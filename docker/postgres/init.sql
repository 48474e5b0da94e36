-- One database per service, each owned by its own login role (docs/architecture.md: a
-- database per service). The official postgres image runs this once, when the data volume is
-- first initialised; `docker compose -f docker/compose.yml down -v` starts over.
--
-- A service can connect only to its own database: CONNECT is revoked from PUBLIC, so one
-- service's credentials cannot read another service's events. Each service runs its own
-- migrations at start-up in the `public` schema its role owns (PostgreSQL 15+ gives the
-- database owner that schema).
--
-- The roles get their passwords from role-passwords.sh, which runs next, from the
-- *_SVC_DB_PASSWORD variables compose requires (no password is written in this repository).

CREATE ROLE order_svc        LOGIN;
CREATE ROLE inventory_svc    LOGIN;
CREATE ROLE payment_svc      LOGIN;
CREATE ROLE shipping_svc     LOGIN;
CREATE ROLE notification_svc LOGIN;

CREATE DATABASE order_svc        OWNER order_svc;
CREATE DATABASE inventory_svc    OWNER inventory_svc;
CREATE DATABASE payment_svc      OWNER payment_svc;
CREATE DATABASE shipping_svc     OWNER shipping_svc;
CREATE DATABASE notification_svc OWNER notification_svc;

REVOKE CONNECT, TEMPORARY ON DATABASE order_svc        FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE inventory_svc    FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE payment_svc      FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE shipping_svc     FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE notification_svc FROM PUBLIC;
