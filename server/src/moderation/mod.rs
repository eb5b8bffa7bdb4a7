//! What moderators did, and what holds because of it.
//!
//! - Mutes: a name silenced in one room or in every room, for a while or
//!   until lifted. They are asked about on every post, so they live in
//!   memory ([`Moderation::muted`] takes no lock while nobody is muted, and
//!   one read lock otherwise) and are written through to the [`ledger`].
//! - The audit log: every moderator action (who, when, what, whom, why),
//!   kept by the ledger and read back with `AuditLog`.
//!
//! On one server the ledger is a pair of tables in the message database
//! (`ledger::Ledger`), so both survive a restart. Cluster mode has no
//! ledger yet: moderation calls other than deleting are refused there
//! ([`ModerationError::NotInCluster`]).

pub mod ledger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chat_proto::AuditEntry;
use thiserror::Error;

use crate::log::now_millis;
use crate::people::name_key::NameKey;
use ledger::Ledger;

#[derive(Debug, Error)]
pub enum ModerationError {
    #[error("the moderation ledger failed: {0}")]
    Ledger(#[from] rusqlite::Error),
    #[error("the moderation ledger's task ended: {0}")]
    Task(String),
    #[error(
        "muting and the audit log are not available in cluster mode yet: \
         delete the messages instead"
    )]
    NotInCluster,
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

/// Mutes and the audit log; cheap to share.
#[derive(Debug)]
pub struct Moderation {
    /// Every mute still in force (or not yet noticed to have ended), by name.
    mutes: RwLock<HashMap<NameKey, Vec<Mute>>>,
    /// Whether `mutes` has any: the common case asks no lock.
    any: AtomicBool,
    ledger: Option<Arc<Ledger>>,
}

impl Moderation {
    /// Moderation kept in `ledger`, with the mutes it holds.
    pub async fn open(ledger: Ledger) -> Result<Self, ModerationError> {
        let ledger = Arc::new(ledger);
        let mutes = {
            let ledger = Arc::clone(&ledger);
            blocking(move || ledger.mutes(now_millis())).await?
        };
        let moderation = Self {
            mutes: RwLock::new(HashMap::new()),
            any: AtomicBool::new(false),
            ledger: Some(ledger),
        };
        for mute in mutes {
            moderation.hold(mute);
        }
        Ok(moderation)
    }

    /// Cluster mode, for now: nothing to mute with, nothing recorded.
    pub fn without_ledger() -> Self {
        Self {
            mutes: RwLock::new(HashMap::new()),
            any: AtomicBool::new(false),
            ledger: None,
        }
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
        let ledger = self.ledger()?;
        let entry = AuditEntry {
            moderator: moderator.to_owned(),
            action: "mute".into(),
            room: mute.room.clone(),
            username: mute.username.clone(),
            reason: mute.reason.clone(),
            ..AuditEntry::default()
        };
        let stored = mute.clone();
        let id = blocking(move || ledger.mute(&stored, entry)).await?;
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
        let ledger = self.ledger()?;
        let entry = AuditEntry {
            moderator: moderator.to_owned(),
            action: "lift".into(),
            room: room.to_owned(),
            username: username.to_owned(),
            ..AuditEntry::default()
        };
        let (name, lifted) = (username.to_owned(), room.to_owned());
        let id = blocking(move || ledger.lift(&name, &lifted, entry)).await?;
        let mut mutes = self.mutes.write().unwrap_or_else(|e| e.into_inner());
        let key = NameKey::of(username);
        if let Some(held) = mutes.get_mut(&key) {
            held.retain(|mute| !room.is_empty() && mute.room != room);
            if held.is_empty() {
                mutes.remove(&key);
            }
        }
        self.any.store(!mutes.is_empty(), Ordering::Release);
        Ok(id)
    }

    /// Records an action taken elsewhere (a moderator's deletion); the
    /// audit id, or 0 where nothing is recorded (cluster mode, for now).
    pub async fn record(&self, entry: AuditEntry) -> Result<u64, ModerationError> {
        match &self.ledger {
            Some(ledger) => {
                let ledger = Arc::clone(ledger);
                blocking(move || ledger.record(entry)).await
            }
            None => Ok(0),
        }
    }

    /// Up to `limit` audit entries after `after_id`, oldest first.
    pub async fn audit(
        &self,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ModerationError> {
        let ledger = self.ledger()?;
        blocking(move || ledger.audit(after_id, limit)).await
    }

    fn ledger(&self) -> Result<Arc<Ledger>, ModerationError> {
        self.ledger
            .as_ref()
            .map(Arc::clone)
            .ok_or(ModerationError::NotInCluster)
    }

    /// Holds `mute` in memory, replacing one of the same name and room.
    fn hold(&self, mute: Mute) {
        let mut mutes = self.mutes.write().unwrap_or_else(|e| e.into_inner());
        let held = mutes.entry(NameKey::of(&mute.username)).or_default();
        held.retain(|m| m.room != mute.room);
        held.push(mute);
        self.any.store(true, Ordering::Release);
    }
}

/// Runs a ledger call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, rusqlite::Error> + Send + 'static,
) -> Result<T, ModerationError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| ModerationError::Task(e.to_string()))?
        .map_err(ModerationError::from)
}
