-- order-svc's read model and idempotency keys (see the PostgreSQL migration).

CREATE TABLE order_view (
    order_id     BLOB    PRIMARY KEY,
    customer_id  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    terminal     BOOLEAN NOT NULL,
    deadline_at  TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
);
CREATE INDEX order_view_customer ON order_view (customer_id, order_id DESC);
CREATE INDEX order_view_status ON order_view (status, order_id DESC);
CREATE INDEX order_view_open_deadline ON order_view (deadline_at) WHERE NOT terminal;

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    order_id        BLOB NOT NULL,
    created_at      TEXT NOT NULL
);
