-- The event backbone: append-only event store, snapshots, transactional outbox, inbox.
-- Same shape as the PostgreSQL schema; uuids are 16-byte blobs, times RFC 3339 text, JSON text.

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    event_id        BLOB    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE TABLE snapshots (
    stream_id       TEXT    PRIMARY KEY,
    version         INTEGER NOT NULL,
    snapshot_schema INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    taken_at        TEXT    NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT    NOT NULL,
    msg_key         TEXT    NOT NULL,
    headers         TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    created_at      TEXT    NOT NULL,
    published_at    TEXT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE outbox_lease (
    name            TEXT    PRIMARY KEY,
    holder          BLOB    NOT NULL,
    expires_at_ms   INTEGER NOT NULL
);

CREATE TABLE inbox (
    consumer        TEXT    NOT NULL,
    message_id      BLOB    NOT NULL,
    processed_at    TEXT    NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
