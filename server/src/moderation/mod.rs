//! What moderators did, and what holds because of it.
//!
//! - Mutes: a name silenced in one room or in every room, for a while or
//!   until lifted. They are asked about on every post, so they live in
//!   memory ([`Moderation::muted`] takes no lock while nobody is muted, and
//!   one read lock otherwise) and are written through to the [`Ledger`].
//! - The audit log: every moderator action (who, when, what, whom, why),
//!   kept by the ledger and read back with `AuditLog`.
//!
//! The ledger is where both survive a restart: on one server, two tables
//! beside the messages ([`sqlite`]); in cluster mode, a KV bucket and a
//! stream on the NATS cluster ([`nats`]), whose mutes every replica
//! watches, so a mute made through one replica holds on all of them.

pub mod nats;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use chat_proto::AuditEntry;
use futures_util::StreamExt;
use thiserror::Error;
use tracing::warn;

use crate::log::now_millis;
use crate::people::name_key::NameKey;
use nats::{NatsLedger, Seen};
use sqlite::SqliteLedger;

/// Most audit entries one `AuditLog` call returns.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// What `limit = 0` means.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;

#[derive(Debug, Error)]
pub enum ModerationError {
    #[error("the moderation tables failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the moderation ledger's task ended: {0}")]
    Task(String),
    #[error("the NATS cluster could not keep a moderator's action: {0}")]
    Nats(String),
}

/// A name silenced by a moderator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    pub username: String,
    /// Empty: every room.
    pub room: String,
    /// When it ends, ms since the epoch; 0: when lifted.
    pub until: i64,
    pub reason: String,
}

impl Mute {
    fn holds(&self, room: &str, now: i64) -> bool {
        (self.room.is_empty() || self.room == room) && (self.until == 0 || self.until > now)
    }
}

/// Where mutes and the audit log are kept.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlite(Arc<SqliteLedger>),
    Nats(Arc<NatsLedger>),
}

impl Ledger {
    async fn mutes(&self) -> Result<Vec<Mute>, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || db.mutes(now_millis())).await
            }
            // Read by the watch, which starts with every mute.
            Self::Nats(_) => Ok(Vec::new()),
        }
    }

    async fn mute(&self, mute: &Mute, entry: AuditEntry) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let (db, mute) = (Arc::clone(db), mute.clone());
                blocking(move || db.mute(&mute, &entry)).await
            }
            Self::Nats(nats) => nats.mute(mute, &entry).await.map_err(ModerationError::Nats),
        }
    }

    async fn lift(
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

    async fn record(&self, entry: AuditEntry) -> Result<u64, ModerationError> {
        match self {
            Self::Sqlite(db) => {
                let db = Arc::clone(db);
                blocking(move || db.record(&entry)).await
            }
            Self::Nats(nats) => nats.record(&entry).await.map_err(ModerationError::Nats),
        }
    }

    async fn audit(&self, after_id: u64, limit: u32) -> Result<Vec<AuditEntry>, ModerationError> {
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

/// Mutes and the audit log; shared behind an `Arc`.
#[derive(Debug)]
pub struct Moderation {
    /// Every mute in force (or not yet noticed to have ended), by name.
    mutes: RwLock<HashMap<NameKey, Vec<Mute>>>,
    /// Whether `mutes` has any: the common case asks no lock.
    any: AtomicBool,
    ledger: Ledger,
}

impl Moderation {
    /// Moderation kept in `ledger`, holding the mutes it has (in cluster
    /// mode: and every mute made or lifted later through any replica).
    pub async fn open(ledger: Ledger) -> Result<Arc<Self>, ModerationError> {
        let held = ledger.mutes().await?;
        let moderation = Arc::new(Self {
            mutes: RwLock::new(HashMap::new()),
            any: AtomicBool::new(false),
            ledger: ledger.clone(),
        });
        for mute in held {
            moderation.hold(mute);
        }
        if let Ledger::Nats(nats) = &ledger {
            let seen = nats.watch().await.map_err(ModerationError::Nats)?;
            tokio::spawn(follow(seen, Arc::downgrade(&moderation)));
        }
        Ok(moderation)
    }

    /// The mute that keeps `name` from posting in `room` now, if any.
    pub fn muted(&self, name: &str, room: &str) -> Option<Mute> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = now_millis();
        let mutes = self.mutes.read().unwrap_or_else(|e| e.into_inner());
        mutes
            .get(&NameKey::of(name))?
            .iter()
            .find(|mute| mute.holds(room, now))
            .cloned()
    }

    /// Mutes as `mute` says, recorded as done by `moderator`; the audit id.
    pub async fn mute(&self, moderator: &str, mute: Mute) -> Result<u64, ModerationError> {
        let entry = audit_entry(moderator, "mute", &mute.room, &mute.username, &mute.reason);
        let id = self.ledger.mute(&mute, entry).await?;
        self.hold(mute);
        Ok(id)
    }

    /// Ends `username`'s mute in `room` (empty: every one); the audit id.
    pub async fn lift(
        &self,
        moderator: &str,
        username: &str,
        room: &str,
    ) -> Result<u64, ModerationError> {
        let entry = audit_entry(moderator, "lift", room, username, "");
        let id = self.ledger.lift(username, room, entry).await?;
        self.forget(&NameKey::of(username), |mute| {
            room.is_empty() || mute.room == room
        });
        Ok(id)
    }

    /// Records a moderator's deletion of `target`, `author`'s message in
    /// `room`; the audit id.
    pub async fn record_deletion(
        &self,
        moderator: &str,
        room: &str,
        author: &str,
        target: u64,
        reason: &str,
    ) -> Result<u64, ModerationError> {
        let entry = AuditEntry {
            target,
            ..audit_entry(moderator, "delete", room, author, reason)
        };
        self.ledger.record(entry).await
    }

    /// Up to `limit` audit entries (0: [`DEFAULT_AUDIT_PAGE`], at most
    /// [`MAX_AUDIT_PAGE`]) after `after_id`, oldest first.
    pub async fn audit(
        &self,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ModerationError> {
        let limit = match limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        self.ledger.audit(after_id, limit).await
    }

    /// Holds `mute` in memory, replacing one of the same name and room.
    fn hold(&self, mute: Mute) {
        let mut mutes = self.mutes.write().unwrap_or_else(|e| e.into_inner());
        let held = mutes.entry(NameKey::of(&mute.username)).or_default();
        held.retain(|m| m.room != mute.room);
        held.push(mute);
        self.any.store(true, Ordering::Release);
    }

    /// Forgets the mutes of `name` that `lifted` picks.
    fn forget(&self, name: &NameKey, lifted: impl Fn(&Mute) -> bool) {
        let mut mutes = self.mutes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = mutes.get_mut(name) {
            held.retain(|mute| !lifted(mute));
            if held.is_empty() {
                mutes.remove(name);
            }
        }
        self.any.store(!mutes.is_empty(), Ordering::Release);
    }
}

/// An audit entry stamped now.
fn audit_entry(
    moderator: &str,
    action: &str,
    room: &str,
    username: &str,
    reason: &str,
) -> AuditEntry {
    AuditEntry {
        timestamp: now_millis(),
        moderator: moderator.to_owned(),
        action: action.to_owned(),
        room: room.to_owned(),
        username: username.to_owned(),
        reason: reason.to_owned(),
        ..AuditEntry::default()
    }
}

/// Cluster mode: applies every mute made or lifted through any replica,
/// for as long as the server runs.
async fn follow(seen: impl futures_util::Stream<Item = Seen>, moderation: Weak<Moderation>) {
    let mut seen = std::pin::pin!(seen);
    while let Some(seen) = seen.next().await {
        let Some(moderation) = moderation.upgrade() else {
            return;
        };
        match seen {
            Seen::Held(mute) => moderation.hold(mute),
            // One key is one mute: an empty room is the "everywhere" one.
            Seen::Lifted { name, room } => moderation.forget(&name, |mute| mute.room == room),
        }
    }
    warn!("stopped following mutes made on other replicas: the watch ended");
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
