//! The ledger on one server: two tables in the
//! message database, written through a connection of their own (moderators
//! act rarely, so they never wait on, or hold up, the messages' group
//! commit for long: SQLite's busy timeout lets one wait for the other).
//!
//! - `mod_audit`: every moderator action, ids ascending.
//! - `mod_mutes`: the mutes in force, one per name key and room.
//! - `mod_slow`: the rooms in slow mode, and how slow.
//! - `mod_topics`: the topics moderators set, by room.
//! - `mod_reports`: every report, one per message and reporter (a closed
//!   one stays, so the same person cannot report the message again).
//! - `mod_bans`: the bans in force, one per name key (with the addresses
//!   an address ban refuses, space-separated).

use std::sync::Mutex;
use std::time::Duration;

use chat_proto::{AuditEntry, Report};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Ban, Mute};
use crate::log::sqlite::Location;
use crate::people::name_key::NameKey;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS mod_audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp INTEGER NOT NULL,
        moderator TEXT    NOT NULL,
        action    TEXT    NOT NULL,
        room      TEXT    NOT NULL,
        username  TEXT    NOT NULL,
        target    INTEGER NOT NULL,
        reason    TEXT    NOT NULL
    );
    CREATE TABLE IF NOT EXISTS mod_mutes (
        name_key TEXT    NOT NULL,
        room     TEXT    NOT NULL,
        username TEXT    NOT NULL,
        until    INTEGER NOT NULL,
        reason   TEXT    NOT NULL,
        PRIMARY KEY (name_key, room)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS mod_slow (
        room    TEXT    PRIMARY KEY,
        seconds INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS mod_topics (
        room  TEXT PRIMARY KEY,
        topic TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS mod_reports (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        room      TEXT    NOT NULL,
        target    INTEGER NOT NULL,
        username  TEXT    NOT NULL,
        name_key  TEXT    NOT NULL,
        reason    TEXT    NOT NULL,
        timestamp INTEGER NOT NULL,
        closed    INTEGER NOT NULL DEFAULT 0,
        UNIQUE (room, target, name_key)
    );
    CREATE TABLE IF NOT EXISTS mod_bans (
        name_key        TEXT    PRIMARY KEY,
        username        TEXT    NOT NULL,
        until           INTEGER NOT NULL,
        reason          TEXT    NOT NULL,
        addresses       TEXT    NOT NULL,
        addresses_until INTEGER NOT NULL
    ) WITHOUT ROWID;
";

#[derive(Debug)]
pub struct SqliteLedger {
    db: Mutex<Connection>,
}

impl SqliteLedger {
    /// The ledger in the database at `location` (made if missing).
    pub fn open(location: &Location) -> rusqlite::Result<Self> {
        let db = match location {
            Location::File(path) => Connection::open(path)?,
            Location::Memory => Connection::open_in_memory()?,
        };
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db: Mutex::new(db) })
    }

    /// The mutes still in force at `now`; ended ones are cleared away.
    pub fn mutes(&self, now: i64) -> rusqlite::Result<Vec<Mute>> {
        let db = self.lock();
        db.execute(
            "DELETE FROM mod_mutes WHERE until != 0 AND until <= ?1",
            [now],
        )?;
        let mut select = db.prepare("SELECT username, room, until, reason FROM mod_mutes")?;
        let rows = select.query_map([], |row| {
            Ok(Mute {
                username: row.get(0)?,
                room: row.get(1)?,
                until: row.get(2)?,
                reason: row.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// The bans still in force at `now`; ended ones are cleared away.
    pub fn bans(&self, now: i64) -> rusqlite::Result<Vec<Ban>> {
        let db = self.lock();
        db.execute(
            "DELETE FROM mod_bans WHERE until != 0 AND until <= ?1",
            [now],
        )?;
        let mut select =
            db.prepare("SELECT username, until, reason, addresses, addresses_until FROM mod_bans")?;
        let rows = select.query_map([], |row| {
            let addresses: String = row.get(3)?;
            Ok(Ban {
                username: row.get(0)?,
                until: row.get(1)?,
                reason: row.get(2)?,
                addresses: addresses
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect(),
                addresses_until: row.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// The rooms in slow mode.
    pub fn slow_rooms(&self) -> rusqlite::Result<Vec<(String, u32)>> {
        let db = self.lock();
        let mut select = db.prepare("SELECT room, seconds FROM mod_slow")?;
        let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Puts `room` in slow mode (0 seconds: out of it), with the audit
    /// entry; the entry's id.
    pub fn slow(&self, room: &str, seconds: u32, entry: &AuditEntry) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        if seconds == 0 {
            tx.execute("DELETE FROM mod_slow WHERE room = ?1", [room])?;
        } else {
            tx.execute(
                "INSERT OR REPLACE INTO mod_slow (room, seconds) VALUES (?1, ?2)",
                params![room, seconds],
            )?;
        }
        let id = insert(&tx, entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// The topics moderators set.
    pub fn topics(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let db = self.lock();
        let mut select = db.prepare("SELECT room, topic FROM mod_topics")?;
        let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Sets `room`'s topic, with the audit entry; the entry's id.
    pub fn topic(&self, room: &str, topic: &str, entry: &AuditEntry) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO mod_topics (room, topic) VALUES (?1, ?2)",
            params![room, topic],
        )?;
        let id = insert(&tx, entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores `report` (its id aside); the new id, or `None` if its
    /// reporter reported that message before.
    pub fn report(&self, report: &Report) -> rusqlite::Result<Option<u64>> {
        self.lock()
            .query_row(
                "INSERT OR IGNORE INTO mod_reports
                     (room, target, username, name_key, reason, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![
                    report.room,
                    report.target,
                    report.username,
                    NameKey::of(&report.username).as_str(),
                    report.reason,
                    report.timestamp
                ],
                |row| row.get(0),
            )
            .optional()
    }

    /// The open reports, oldest first.
    pub fn open_reports(&self) -> rusqlite::Result<Vec<Report>> {
        let db = self.lock();
        let mut select = db.prepare(
            "SELECT id, room, target, username, reason, timestamp
             FROM mod_reports WHERE closed = 0 ORDER BY id",
        )?;
        let rows = select.query_map([], |row| {
            Ok(Report {
                id: row.get(0)?,
                room: row.get(1)?,
                target: row.get(2)?,
                username: row.get(3)?,
                reason: row.get(4)?,
                timestamp: row.get(5)?,
                message: None,
            })
        })?;
        rows.collect()
    }

    /// Closes `reports`, with `entry` when a moderator dismissed them; the
    /// entry's id (0 without one).
    pub fn close_reports(
        &self,
        reports: &[Report],
        entry: Option<&AuditEntry>,
    ) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        for report in reports {
            tx.execute(
                "UPDATE mod_reports SET closed = 1 WHERE id = ?1",
                [report.id],
            )?;
        }
        let id = match entry {
            Some(entry) => insert(&tx, entry)?,
            None => 0,
        };
        tx.commit()?;
        Ok(id)
    }

    /// Stores `ban` and its audit entry together; the entry's id.
    pub fn ban(&self, ban: &Ban, entry: &AuditEntry) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        let addresses: Vec<String> = ban.addresses.iter().map(ToString::to_string).collect();
        tx.execute(
            "INSERT OR REPLACE INTO mod_bans
                 (name_key, username, until, reason, addresses, addresses_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                NameKey::of(&ban.username).as_str(),
                ban.username,
                ban.until,
                ban.reason,
                addresses.join(" "),
                ban.addresses_until
            ],
        )?;
        let id = insert(&tx, entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores `mute` and its audit entry together; the entry's id.
    pub fn mute(&self, mute: &Mute, entry: &AuditEntry) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO mod_mutes (name_key, room, username, until, reason)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                NameKey::of(&mute.username).as_str(),
                mute.room,
                mute.username,
                mute.until,
                mute.reason
            ],
        )?;
        let id = insert(&tx, entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Ends `username`'s mute in `room` (empty: all of them, and the
    /// ban), with its audit entry; the entry's id.
    pub fn lift(&self, username: &str, room: &str, entry: &AuditEntry) -> rusqlite::Result<u64> {
        let mut db = self.lock();
        let tx = db.transaction()?;
        let key = NameKey::of(username);
        tx.execute(
            "DELETE FROM mod_mutes WHERE name_key = ?1 AND (?2 = '' OR room = ?2)",
            params![key.as_str(), room],
        )?;
        if room.is_empty() {
            tx.execute("DELETE FROM mod_bans WHERE name_key = ?1", [key.as_str()])?;
        }
        let id = insert(&tx, entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores one audit entry; its id.
    pub fn record(&self, entry: &AuditEntry) -> rusqlite::Result<u64> {
        insert(&self.lock(), entry)
    }

    /// Up to `limit` entries after `after_id`, oldest first.
    pub fn audit(&self, after_id: u64, limit: u32) -> rusqlite::Result<Vec<AuditEntry>> {
        let db = self.lock();
        let mut select = db.prepare(
            "SELECT id, timestamp, moderator, action, room, username, target, reason
             FROM mod_audit WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = select.query_map(params![after_id, limit], |row| {
            Ok(AuditEntry {
                id: row.get(0)?,
                timestamp: row.get(1)?,
                moderator: row.get(2)?,
                action: row.get(3)?,
                room: row.get(4)?,
                username: row.get(5)?,
                target: row.get(6)?,
                reason: row.get(7)?,
            })
        })?;
        rows.collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends `entry`, stamped now; its id.
fn insert(db: &Connection, entry: &AuditEntry) -> rusqlite::Result<u64> {
    db.query_row(
        "INSERT INTO mod_audit (timestamp, moderator, action, room, username, target, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            entry.timestamp,
            entry.moderator,
            entry.action,
            entry.room,
            entry.username,
            entry.target,
            entry.reason
        ],
        |row| row.get(0),
    )
    .optional()
    .map(Option::unwrap_or_default)
}
