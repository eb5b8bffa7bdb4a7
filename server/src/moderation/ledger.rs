//! The ledger: where moderation is kept so that it survives a restart,
//! on one server the tables of [`super::sqlite`] (called off the async
//! threads), in cluster mode the bucket and stream of [`super::nats`]; and
//! what it holds when the server starts.

use std::sync::Arc;

use chat_proto::{AuditEntry, Report};

use super::nats::NatsLedger;
use super::sqlite::SqliteLedger;
use super::{Ban, ModerationError, Mute};
use crate::log::now_millis;

/// Where mutes and the audit log are kept.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlite(Arc<SqliteLedger>),
    Nats(Arc<NatsLedger>),
}

impl Ledger {
    pub(super) async fn held(&self) -> Result<Held, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || {
                    Ok(Held {
                        mutes: db.mutes(now_millis())?,
                        bans: db.bans(now_millis())?,
                        slow: db.slow_rooms()?,
                        topics: db.topics()?,
                        reports: db.open_reports()?,
                    })
                })
                .await
            }
            // Read by the watch, which starts with all of it.
            Self::Nats(_) => Ok(Held::default()),
        }
    }

    pub(super) async fn slow(
        &self,
        room: &str,
        seconds: u32,
        entry: AuditEntry,
    ) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, room) = (Arc::clone(db), room.to_owned());
                blocking(move || db.slow(&room, seconds, &entry)).await
            }
            Self::Nats(nats) => nats
                .slow(room, seconds, &entry)
                .await
                .map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn topic(
        &self,
        room: &str,
        topic: &str,
        entry: AuditEntry,
    ) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, room, topic) = (Arc::clone(db), room.to_owned(), topic.to_owned());
                blocking(move || db.topic(&room, &topic, &entry)).await
            }
            Self::Nats(nats) => nats
                .topic(room, topic, &entry)
                .await
                .map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn report(&self, report: &Report) -> Result<Option<u64>, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, report) = (Arc::clone(db), report.clone());
                blocking(move || db.report(&report)).await
            }
            Self::Nats(nats) => nats.report(report).await.map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn close_reports(
        &self,
        reports: Vec<Report>,
        entry: Option<AuditEntry>,
    ) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || db.close_reports(&reports, entry.as_ref())).await
            }
            Self::Nats(nats) => nats
                .close_reports(&reports, entry.as_ref())
                .await
                .map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn ban(&self, ban: &Ban, entry: AuditEntry) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, ban) = (Arc::clone(db), ban.clone());
                blocking(move || db.ban(&ban, &entry)).await
            }
            Self::Nats(nats) => nats.ban(ban, &entry).await.map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn mute(
        &self,
        mute: &Mute,
        entry: AuditEntry,
    ) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, mute) = (Arc::clone(db), mute.clone());
                blocking(move || db.mute(&mute, &entry)).await
            }
            Self::Nats(nats) => nats.mute(mute, &entry).await.map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn lift(
        &self,
        name: &str,
        room: &str,
        entry: AuditEntry,
    ) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, name, room) = (Arc::clone(db), name.to_owned(), room.to_owned());
                blocking(move || db.lift(&name, &room, &entry)).await
            }
            Self::Nats(nats) => nats
                .lift(name, room, &entry)
                .await
                .map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn record(&self, entry: AuditEntry) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || db.record(&entry)).await
            }
            Self::Nats(nats) => nats.record(&entry).await.map_err(ModerationError::Nats),
        }
    }

    pub(super) async fn audit(
        &self,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || db.audit(after_id, limit)).await
            }
            Self::Nats(nats) => nats
                .audit(after_id, limit)
                .await
                .map_err(ModerationError::Nats),
        }
    }
}

/// What a ledger holds at start.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) mutes: Vec<Mute>,
    pub(super) bans: Vec<Ban>,
    pub(super) slow: Vec<(String, u32)>,
    pub(super) topics: Vec<(String, String)>,
    pub(super) reports: Vec<Report>,
}

/// Runs a SQLite ledger call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, rusqlite::Error> + Send + 'static,
) -> Result<T, ModerationError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| ModerationError::Task(e.to_string()))?
        .map_err(ModerationError::from)
}
