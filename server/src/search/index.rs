//! The search index's tables and every statement on them, for any SQLite
//! database that also has a `rooms (id, name)` table: the SQLite log's own
//! (kept in the writer's transactions) and a cluster replica's search file.
//!
//! `search_text` is a contentless FTS5 table of each message's folded words
//! (the text itself stays in the log), with its room and author as one
//! token each, so `in:` and `from:` are part of the one FTS5 match rather
//! than indexes of their own (which cost the writer more than the text
//! did). Its rowid, `seq`, is the message's time in milliseconds times 1024
//! plus a counter, so FTS5's rowid order is newest first across rooms;
//! `search_rows` maps it to the room and the id. The way back, from a
//! message to its seq, is the log's own `messages` row, or in a replica's
//! file an index on `search_rows` (see [`Keys`]).

use std::fmt::Write as _;

use chat_proto::ChatMessage;
use rusqlite::{Connection, OptionalExtension, params};

use super::fold::folded;
use crate::people::name_key::NameKey;

/// The tables: a fresh search file, and the SQLite log's migration 4 (its
/// migration 5 moves the way back to `messages`, see [`Keys`]).
pub const SCHEMA: &str = "
    CREATE VIRTUAL TABLE search_text USING fts5(
        body, room, author, content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 0'
    );
    -- author: the author's token (see `author_token`), for re-indexing.
    CREATE TABLE search_rows (
        seq    INTEGER PRIMARY KEY,
        room   INTEGER NOT NULL,
        id     INTEGER NOT NULL,
        author TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX search_rows_by_message ON search_rows (room, id);
";

/// Messages given one millisecond's seqs before the next one's are used.
const PER_MILLISECOND: i64 = 1024;

/// Where a message's seq is found from its room and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// In the SQLite log's own `messages` row (`search_seq`), which the
    /// writer fills in the same insert, so the index needs no (room, id)
    /// index of its own: one B-tree fewer written per message.
    InMessages,
    /// In `search_rows`' (room, id) index: a replica's search file, which
    /// has no messages of its own.
    InRows,
}

/// What the index holds of a message: its folded words and its author's
/// token. Made before the writer's transaction (on the sender's task), so
/// the writer only inserts.
#[derive(Debug, Clone)]
pub struct Words {
    body: String,
    author: String,
}

impl Words {
    pub fn of(username: &str, text: &str) -> Self {
        Self {
            body: folded(text),
            author: author_token(username),
        }
    }
}

/// Indexes message `id` of `room` (or indexes it again, keeping its place,
/// if it is in already): the history from before search, and a replica's
/// file.
pub fn put(
    connection: &Connection,
    keys: Keys,
    room: i64,
    id: u64,
    timestamp: i64,
    username: &str,
    text: &str,
) -> rusqlite::Result<()> {
    if reindex(connection, keys, room, id, text)? {
        return Ok(());
    }
    let seq = free_seq(connection, timestamp)?;
    if keys == Keys::InMessages {
        connection
            .prepare_cached("UPDATE messages SET search_seq = ?3 WHERE room = ?1 AND id = ?2")?
            .execute(params![room, id, seq])?;
    }
    insert(connection, seq, room, id, &Words::of(username, text))
}

/// Indexes message `id` of `room` as `seq`, new to the index (the writer's
/// own messages, whose row it gives `seq` itself).
pub fn insert(
    connection: &Connection,
    seq: i64,
    room: i64,
    id: u64,
    words: &Words,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached("INSERT INTO search_rows (seq, room, id, author) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![seq, room, id, words.author])?;
    write_text(connection, seq, room, words)
}

/// The text index's row `seq`: the words, the room's and author's tokens.
fn write_text(connection: &Connection, seq: i64, room: i64, words: &Words) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO search_text (rowid, body, room, author) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![seq, words.body, room_token(room), words.author])?;
    Ok(())
}

/// A room as one token of the index (`r` and its number).
fn room_token(room: i64) -> String {
    format!("r{room}")
}

/// An author as one token of the index: `a` and their name key in hex, so
/// every spelling of one name is one token, whatever its characters.
fn author_token(username: &str) -> String {
    let mut token = String::from("a");
    for byte in NameKey::of(username).as_str().bytes() {
        let _ = write!(token, "{byte:02x}");
    }
    token
}

/// Indexes message `id` of `room` with its new `text` (an edit), if it is
/// in the index; says whether it was.
pub fn reindex(
    connection: &Connection,
    keys: Keys,
    room: i64,
    id: u64,
    text: &str,
) -> rusqlite::Result<bool> {
    let Some(seq) = seq_of(connection, keys, room, id)? else {
        return Ok(false);
    };
    let author: Option<String> = connection
        .prepare_cached("SELECT author FROM search_rows WHERE seq = ?1")?
        .query_row([seq], |row| row.get(0))
        .optional()?;
    let Some(author) = author else {
        return Ok(false);
    };
    connection
        .prepare_cached("DELETE FROM search_text WHERE rowid = ?1")?
        .execute([seq])?;
    let words = Words {
        body: folded(text),
        author,
    };
    write_text(connection, seq, room, &words)?;
    Ok(true)
}

/// Takes message `id` of `room` out of the index (deleted), if it is in.
pub fn remove(connection: &Connection, keys: Keys, room: i64, id: u64) -> rusqlite::Result<()> {
    if let Some(seq) = seq_of(connection, keys, room, id)? {
        connection
            .prepare_cached("DELETE FROM search_text WHERE rowid = ?1")?
            .execute([seq])?;
        connection
            .prepare_cached("DELETE FROM search_rows WHERE seq = ?1")?
            .execute([seq])?;
    }
    Ok(())
}

/// Takes every message of `room` below id `cutoff` out (retention; with
/// [`Keys::InMessages`], before the messages themselves go).
pub fn remove_before(
    connection: &Connection,
    keys: Keys,
    room: i64,
    cutoff: u64,
) -> rusqlite::Result<usize> {
    let seqs = match keys {
        Keys::InMessages => {
            "SELECT search_seq FROM messages
             WHERE room = ?1 AND id < ?2 AND search_seq IS NOT NULL"
        }
        Keys::InRows => "SELECT seq FROM search_rows WHERE room = ?1 AND id < ?2",
    };
    connection
        .prepare_cached(&format!("DELETE FROM search_text WHERE rowid IN ({seqs})"))?
        .execute(params![room, cutoff])?;
    connection
        .prepare_cached(&format!("DELETE FROM search_rows WHERE seq IN ({seqs})"))?
        .execute(params![room, cutoff])
}

fn seq_of(
    connection: &Connection,
    keys: Keys,
    room: i64,
    id: u64,
) -> rusqlite::Result<Option<i64>> {
    let sql = match keys {
        Keys::InMessages => "SELECT search_seq FROM messages WHERE room = ?1 AND id = ?2",
        Keys::InRows => "SELECT seq FROM search_rows WHERE room = ?1 AND id = ?2",
    };
    Ok(connection
        .prepare_cached(sql)?
        .query_row(params![room, id], |row| row.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// The first free seq of `timestamp`'s millisecond; past its 1024, the
/// first after every seq given (still the newest, as the writer's clock
/// never goes back). The writer asks once a batch and counts on from it.
pub fn free_seq(connection: &Connection, timestamp: i64) -> rusqlite::Result<i64> {
    let start = timestamp.max(0).saturating_mul(PER_MILLISECOND);
    let next: i64 = connection
        .prepare_cached(
            "SELECT coalesce(max(seq) + 1, ?1) FROM search_rows
             WHERE seq >= ?1 AND seq < ?1 + ?2",
        )?
        .query_row(params![start, PER_MILLISECOND], |row| row.get(0))?;
    if next < start + PER_MILLISECOND {
        return Ok(next);
    }
    connection
        .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM search_rows")?
        .query_row([], |row| row.get(0))
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Find {
    /// The FTS5 expression (`None`: filters only).
    pub expression: Option<String>,
    /// Only this room, by name.
    pub room: Option<String>,
    /// Only this author, by name (compared by name key).
    pub from: Option<String>,
    /// Only what is older than this seq (the page before it).
    pub before: Option<i64>,
    pub limit: usize,
}

/// A message the index found, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub seq: i64,
    pub room: String,
    pub id: u64,
    /// The message as it stands, when the log read it with the hit (the
    /// SQLite log, in the same read); otherwise the hub reads it.
    pub message: Option<ChatMessage>,
}

/// What matches `find`, newest first: one FTS5 match of the words and
/// the filters' tokens, which hands rowids newest first and stops at the
/// limit.
pub fn find(connection: &Connection, find: &Find) -> rusqlite::Result<Vec<Found>> {
    let mut parts: Vec<String> = find.expression.iter().cloned().collect();
    if let Some(room) = &find.room {
        let number: Option<i64> = connection
            .prepare_cached("SELECT id FROM rooms WHERE name = ?1")?
            .query_row([room], |row| row.get(0))
            .optional()?;
        let Some(number) = number else {
            return Ok(Vec::new());
        };
        parts.push(format!("room : \"{}\"", room_token(number)));
    }
    if let Some(from) = &find.from {
        parts.push(format!("author : \"{}\"", author_token(from)));
    }
    if parts.is_empty() {
        // The query language never asks for everything.
        return Ok(Vec::new());
    }
    let mut statement = connection.prepare_cached(
        "SELECT r.seq, rooms.name, r.id
         FROM search_text CROSS JOIN search_rows r ON r.seq = search_text.rowid
         JOIN rooms ON rooms.id = r.room
         WHERE search_text MATCH ?1 AND search_text.rowid < ?2
         ORDER BY search_text.rowid DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(
        params![
            parts.join(" AND "),
            find.before.unwrap_or(i64::MAX),
            i64::try_from(find.limit).unwrap_or(i64::MAX),
        ],
        |row| {
            Ok(Found {
                seq: row.get(0)?,
                room: row.get(1)?,
                id: row.get(2)?,
                message: None,
            })
        },
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let connection = Connection::open_in_memory().expect("an in-memory database");
        connection
            .execute_batch(
                "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
                 INSERT INTO rooms VALUES (1, 'general'), (2, 'food');",
            )
            .expect("rooms");
        connection.execute_batch(SCHEMA).expect("the schema");
        connection
    }

    fn found(connection: &Connection, find: Find) -> Vec<(String, u64)> {
        super::find(connection, &Find { limit: 10, ..find })
            .expect("a search")
            .into_iter()
            .map(|f| (f.room, f.id))
            .collect()
    }

    fn matching(expression: &str) -> Find {
        Find {
            expression: Some(expression.to_owned()),
            ..Find::default()
        }
    }

    #[test]
    fn newest_first_across_rooms_with_edits_deletions_and_retention() {
        let db = database();
        put(&db, Keys::InRows, 1, 1, 1_000, "Ada", "Saša brings ćevapi").expect("put");
        put(&db, Keys::InRows, 2, 1, 2_000, "Bob", "more cevapi please").expect("put");
        put(&db, Keys::InRows, 1, 2, 2_000, "ada", "no ćevapi today").expect("put");
        assert_eq!(
            found(&db, matching("body : \"cevapi\"")),
            vec![
                ("general".into(), 2),
                ("food".into(), 1),
                ("general".into(), 1)
            ]
        );
        // An edit keeps the message's place, and only its new text counts.
        put(&db, Keys::InRows, 1, 2, 9_000, "ada", "tomorrow then").expect("edit");
        assert_eq!(found(&db, matching("body : \"cevapi\"")).len(), 2);
        assert_eq!(
            found(&db, matching("body : \"tomor\" *")),
            vec![("general".into(), 2)]
        );
        let from_ada = Find {
            from: Some("ADA".into()),
            ..Find::default()
        };
        assert_eq!(
            found(&db, from_ada),
            vec![("general".into(), 2), ("general".into(), 1)]
        );
        remove(&db, Keys::InRows, 2, 1).expect("delete");
        assert_eq!(found(&db, matching("body : \"cevapi\"")).len(), 1);
        assert_eq!(
            remove_before(&db, Keys::InRows, 1, 2).expect("retention"),
            1
        );
        assert!(found(&db, matching("body : \"cevapi\"")).is_empty());
    }

    #[test]
    fn pages_and_rooms() {
        let db = database();
        for id in 1..=5 {
            put(
                &db,
                Keys::InRows,
                1 + (id as i64 % 2),
                id,
                1_000,
                "ada",
                "hello",
            )
            .expect("put");
        }
        let first = super::find(
            &db,
            &Find {
                limit: 2,
                ..matching("body : \"hello\"")
            },
        )
        .expect("a page");
        assert_eq!(first.len(), 2);
        let rest = found(
            &db,
            Find {
                before: Some(first[1].seq),
                ..matching("body : \"hello\"")
            },
        );
        assert_eq!(rest.len(), 3);
        let food = Find {
            room: Some("food".into()),
            ..matching("body : \"hello\"")
        };
        assert_eq!(
            found(&db, food),
            vec![("food".into(), 5), ("food".into(), 3), ("food".into(), 1)]
        );
    }
}
