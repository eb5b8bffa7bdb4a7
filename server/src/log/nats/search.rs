//! A replica's search index: an SQLite FTS5 database of its own
//! (`--search-db`, or in memory), with the tables `crate::search::index`
//! keeps, fed from every room's stream in order (`search_feed`). It is
//! rebuilt at every start, so it never holds what was deleted or edited
//! while the replica was down; what retention removes from a stream
//! stays in it until the next start, and search leaves it out when the
//! message is read back (`hub::search`).
//!
//! One connection, behind a lock: a feeder's batch and a search take it
//! in turn, each for milliseconds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chat_proto::ChangeKind;
use rusqlite::{Connection, params};
use tracing::info;

use super::lock;
use crate::log::{Entry, LogError};
use crate::search::index::{self, Keys};
use crate::search::{Find, Found};

pub(super) struct SearchFile {
    connection: Arc<Mutex<Connection>>,
    /// Each room's number in the file, by name.
    rooms: Mutex<HashMap<String, i64>>,
}

impl SearchFile {
    /// A fresh index at `path` (what was there is replaced), or in memory.
    pub(super) fn open(path: Option<&Path>) -> Result<Self, LogError> {
        let connection = match path {
            Some(path) => {
                for stale in ["", "-journal", "-wal", "-shm"] {
                    let mut name = path.as_os_str().to_owned();
                    name.push(stale);
                    match std::fs::remove_file(&name) {
                        Ok(()) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                        Err(error) => {
                            return Err(LogError::Unavailable(format!(
                                "--search-db {}: cannot replace it: {error}",
                                path.display()
                            )));
                        }
                    }
                }
                Connection::open(path)?
            }
            None => Connection::open_in_memory()?,
        };
        // Rebuilt at every start: a crash loses nothing worth an fsync.
        connection.execute_batch(
            "PRAGMA journal_mode = MEMORY;
             PRAGMA synchronous = OFF;
             CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);",
        )?;
        connection.execute_batch(index::SCHEMA)?;
        match path {
            Some(path) => info!(file = %path.display(), "search index: a fresh file"),
            None => info!("search index: in memory"),
        }
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// `room`'s number in the file, the first time it is asked for (the
    /// caller then feeds it); `None` when it is fed already.
    pub(super) fn new_room(&self, room: &str) -> Result<Option<i64>, LogError> {
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(room) {
            return Ok(None);
        }
        let connection = lock(&self.connection);
        connection.execute(
            "INSERT INTO rooms (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            params![room],
        )?;
        let number: i64 =
            connection.query_row("SELECT id FROM rooms WHERE name = ?1", [room], |row| {
                row.get(0)
            })?;
        rooms.insert(room.to_owned(), number);
        Ok(Some(number))
    }

    /// Takes a batch of a room's stream, in order, in one transaction.
    pub(super) async fn take(&self, room: i64, entries: Vec<Entry>) -> Result<(), LogError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = lock(&connection);
            let transaction = connection.transaction()?;
            for entry in &entries {
                match entry {
                    Entry::Message(message) if !message.deleted => index::put(
                        &transaction,
                        Keys::InRows,
                        room,
                        message.id,
                        message.timestamp,
                        &message.username,
                        &message.message,
                    )?,
                    Entry::Message(_) => {}
                    Entry::Change(change) => match change.kind() {
                        ChangeKind::ChangeEdit => {
                            index::reindex(
                                &transaction,
                                Keys::InRows,
                                room,
                                change.target,
                                &change.message,
                            )?;
                        }
                        ChangeKind::ChangeDelete => {
                            index::remove(&transaction, Keys::InRows, room, change.target)?;
                        }
                        _ => {}
                    },
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await?
    }

    /// What the index finds for `find`, newest first.
    pub(super) async fn find(&self, find: Find) -> Result<Vec<Found>, LogError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || Ok(index::find(&lock(&connection), &find)?)).await?
    }
}
