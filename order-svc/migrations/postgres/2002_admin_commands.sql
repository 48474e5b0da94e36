-- The admin audit trail's read model. Each admin command is an event stream in `events`
-- (`admin-command-{id}`: issued, then applied or rejected); this projection of them is
-- rebuildable and serves `GET /admin/commands`.

CREATE TABLE admin_commands (
    command_id  UUID        PRIMARY KEY,
    status      TEXT        NOT NULL,
    view        JSONB       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX admin_commands_status ON admin_commands (status, command_id DESC);
