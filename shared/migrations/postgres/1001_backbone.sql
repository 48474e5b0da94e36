-- The event backbone: append-only event store, snapshots, transactional outbox, inbox.

CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version > 0),
    event_id        UUID        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version > 0),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    -- Optimistic concurrency: two writers cannot both append version N to one stream.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE TABLE snapshots (
    stream_id       TEXT        PRIMARY KEY,
    version         BIGINT      NOT NULL,
    snapshot_schema INTEGER     NOT NULL,
    state           JSONB       NOT NULL,
    taken_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           TEXT        NOT NULL,
    msg_key         TEXT        NOT NULL,
    headers         JSONB       NOT NULL,
    payload         BYTEA       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    published_at    TIMESTAMPTZ
);
-- The relay's work queue: unpublished rows in commit order.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- One relay at a time publishes (per database), so a key's rows leave in order.
CREATE TABLE outbox_lease (
    name            TEXT        PRIMARY KEY,
    holder          UUID        NOT NULL,
    expires_at_ms   BIGINT      NOT NULL
);

CREATE TABLE inbox (
    consumer        TEXT        NOT NULL,
    message_id      UUID        NOT NULL,
    processed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
