-- The admin audit trail's read model (see the PostgreSQL migration).

CREATE TABLE admin_commands (
    command_id  BLOB PRIMARY KEY,
    status      TEXT NOT NULL,
    view        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX admin_commands_status ON admin_commands (status, command_id DESC);
