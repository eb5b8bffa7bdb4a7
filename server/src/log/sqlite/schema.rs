//! The SQLite log's tables, and the migrations that bring any older
//! database up to them at start-up (`PRAGMA user_version` counts the ones
//! that ran). A new kind of entry or index lands here as one more
//! migration: only ever append.

use rusqlite::Connection;
use tracing::info;

use super::{LogError, RoomRow};
use crate::search::index;

/// Schema changes, applied in order at start-up, each in one transaction
/// of one or more batches; `PRAGMA user_version` records how many have
/// run. Only ever append.
pub(super) const MIGRATIONS: &[&[&str]] = &[
    &["
    CREATE TABLE messages (
        id        INTEGER PRIMARY KEY,
        username  TEXT    NOT NULL,
        message   TEXT    NOT NULL,
        timestamp INTEGER NOT NULL,
        nonce     TEXT    NOT NULL DEFAULT '',
        origin    INTEGER
    );
    -- The highest id ever given, kept even if retention deletes every row,
    -- so ids are never reused.
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('last_id', 0);
"],
    &["
    -- Rooms: every message belongs to one, and ids are per room. What was
    -- there before rooms moves into general, ids unchanged.
    CREATE TABLE rooms (
        id      INTEGER PRIMARY KEY,
        name    TEXT    NOT NULL UNIQUE,
        topic   TEXT    NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        -- The highest id ever given in the room, kept even if retention
        -- deletes every row, so ids are never reused.
        last_id INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO rooms (id, name, topic, created, last_id)
        SELECT 1, 'general', '', 0, value FROM meta WHERE key = 'last_id';
    CREATE TABLE room_messages (
        room      INTEGER NOT NULL REFERENCES rooms (id),
        id        INTEGER NOT NULL,
        username  TEXT    NOT NULL,
        message   TEXT    NOT NULL,
        timestamp INTEGER NOT NULL,
        nonce     TEXT    NOT NULL DEFAULT '',
        origin    INTEGER,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    INSERT INTO room_messages (room, id, username, message, timestamp, nonce, origin)
        SELECT 1, id, username, message, timestamp, nonce, origin FROM messages;
    DROP TABLE messages;
    ALTER TABLE room_messages RENAME TO messages;
    DROP TABLE meta;
"],
    &["
    -- Changes to earlier messages (edits, deletions, reactions) share the
    -- messages' table and their room's one sequence of ids: `kind` 0 is a
    -- message, otherwise the change's ChangeKind, and `target` the message
    -- it changes. For a change `username` is who made it, `message` an
    -- edit's text and `nonce` an edit's nonce.
    ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN target INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN reply_to INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN emoji TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN by_moderator INTEGER NOT NULL DEFAULT 0;
    -- A message's current state, every change up to state_id folded in
    -- (the reactions encoded as in changes.rs).
    ALTER TABLE messages ADD COLUMN edited_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN state_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN reactions BLOB;
    -- Partial: only changes pay for them, not every message.
    CREATE INDEX changes_by_target ON messages (room, target) WHERE kind != 0;
    CREATE INDEX changes_in_order ON messages (room, id) WHERE kind != 0;
    -- Who reacted with what: every reactor (a message names only the first
    -- 50 of each emoji), to tell a reaction one has from one one has not.
    CREATE TABLE reactors (
        room     INTEGER NOT NULL,
        target   INTEGER NOT NULL,
        emoji    TEXT    NOT NULL,
        username TEXT    NOT NULL,
        PRIMARY KEY (room, target, emoji, username)
    ) WITHOUT ROWID;
    ALTER TABLE rooms ADD COLUMN last_message_id INTEGER NOT NULL DEFAULT 0;
    UPDATE rooms SET last_message_id = last_id;
"],
    &[
        index::SCHEMA,
        "
    -- What is left to index of the history there was before search: each
    -- room's messages below `below`, taken newest first by a task at start
    -- (`search::Backfill`), so recent history is found first.
    CREATE TABLE search_backfill (room INTEGER PRIMARY KEY, below INTEGER NOT NULL);
    INSERT INTO search_backfill (room, below)
        SELECT id, last_message_id + 1 FROM rooms WHERE last_message_id > 0;
",
    ],
    &["
    -- A message's place in the search index, in its own row, so the index
    -- needs no (room, id) index of its own, which cost the writer a B-tree
    -- insert at a random place per message (`index::Keys`).
    ALTER TABLE messages ADD COLUMN search_seq INTEGER;
    UPDATE messages SET search_seq =
        (SELECT seq FROM search_rows r WHERE r.room = messages.room AND r.id = messages.id)
        WHERE kind = 0;
    DROP INDEX search_rows_by_message;
"],
];

/// Every room, by id.
pub(super) fn read_rooms(connection: &Connection) -> Result<Vec<RoomRow>, LogError> {
    let mut statement = connection
        .prepare("SELECT id, name, topic, last_id, last_message_id FROM rooms ORDER BY id")?;
    let rows = statement.query_map([], |row| {
        Ok(RoomRow {
            id: row.get(0)?,
            name: row.get(1)?,
            topic: row.get(2)?,
            last_id: row.get(3)?,
            last_message_id: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn migrate(connection: &mut Connection) -> Result<(), LogError> {
    let version: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(LogError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, batches) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction()?;
        for sql in *batches {
            transaction.execute_batch(sql)?;
        }
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
        info!(schema = index + 1, "database migrated");
    }
    Ok(())
}
