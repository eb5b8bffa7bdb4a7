//! The SQLite log's tables, and the migrations that bring any older
//! database up to them at start-up (`PRAGMA user_version` counts the ones
//! that ran). A new kind of entry or index lands here as one more
//! migration: only ever append.

use rusqlite::Connection;
use tracing::info;

use super::{LogError, RoomRow};

/// Schema changes, applied in order at start-up; `PRAGMA user_version`
/// records how many have run. Only ever append.
pub(super) const MIGRATIONS: &[&str] = &[
    "
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
",
    "
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
",
];

/// Every room, by id.
pub(super) fn read_rooms(connection: &Connection) -> Result<Vec<RoomRow>, LogError> {
    let mut statement =
        connection.prepare("SELECT id, name, topic, last_id FROM rooms ORDER BY id")?;
    let rows = statement.query_map([], |row| {
        Ok(RoomRow {
            id: row.get(0)?,
            name: row.get(1)?,
            topic: row.get(2)?,
            last_id: row.get(3)?,
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
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
        info!(schema = index + 1, "database migrated");
    }
    Ok(())
}
