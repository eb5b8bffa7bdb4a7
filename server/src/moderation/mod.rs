//! What moderators did, and what holds because of it.
//!
//! - Mutes: a name silenced in one room or in every room, for a while or
//!   until lifted. They are asked about on every post, so they live in
//!   memory ([`Moderation::muted`] takes no lock while nobody is muted, and
//!   one read lock otherwise) and are written through to the [`Ledger`].
//! - Bans: all a mute does, everywhere, and more: the name's sessions end
//!   (streams are told through [`Moderation::bans_changed`]), the name
//!   cannot be claimed, and with `address` the client addresses the name
//!   was seen at in the last hour (as each replica saw them) are refused
//!   too, for at most `--address-ban`.
//! - Slow mode: a room where each name may post once per so many seconds.
//!   When each name last posted there is kept in memory, per replica.
//! - Room settings: a room's slow mode and the topic a moderator set;
//!   streams of the room hear of either ([`Moderation::rooms_changed`]).
//! - Reports ([`reports`]): people point moderators at a message.
//! - The audit log: every moderator action (who, when, what, whom, why),
//!   kept by the ledger and read back with `AuditLog`.
//!
//! The [`Ledger`] is where all of it survives a restart: on one server,
//! tables beside the messages ([`sqlite`]); in cluster mode, a KV bucket
//! and a stream on the NATS cluster ([`nats`]), whose keys every replica
//! watches, so a mute, ban, topic or report made through one replica holds
//! on all of them.

mod ledger;
pub mod nats;
pub mod reports;
pub mod sqlite;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use chat_proto::{AuditEntry, Report};
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::log::now_millis;
use crate::people::name_key::NameKey;
pub use ledger::Ledger;
use nats::Seen;
use reports::Reports;

/// Most audit entries one `AuditLog` call returns.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// What `limit = 0` means.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;
/// The slowest slow mode: six hours between posts.
pub const MAX_SLOW_MODE: u32 = 21_600;
/// Room settings changes a stream may fall behind by (it then misses
/// some: they are rare, and `ListRooms` has them all).
const ROOMS_CHANGED_BUFFER: usize = 64;

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
        (self.room.is_empty() || self.room == room) && in_force(self.until, now)
    }
}

/// A name banned by a moderator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub username: String,
    /// When it ends, ms since the epoch; 0: when lifted.
    pub until: i64,
    pub reason: String,
    /// The addresses refused with it (`address = true`).
    pub addresses: Vec<IpAddr>,
    /// When the address ban ends (ms); 0 without one.
    pub addresses_until: i64,
}

/// Whether something ending at `until` (0: never) holds at `now`.
fn in_force(until: i64, now: i64) -> bool {
    until == 0 || until > now
}

/// How long an address a name used counts as its, for an address ban.
const SEEN_FOR_MS: i64 = 3_600_000;

/// Mutes, bans, slow mode and the audit log; shared behind an `Arc`.
#[derive(Debug)]
pub struct Moderation {
    /// Every mute in force (or not yet noticed to have ended), by name.
    mutes: RwLock<HashMap<NameKey, Vec<Mute>>>,
    /// Whether `mutes` or `bans` has any: the common case asks no lock.
    any: AtomicBool,
    /// Every ban in force (or not yet noticed to have ended), by name.
    bans: RwLock<HashMap<NameKey, Ban>>,
    /// The client addresses each name was seen at lately, for address bans.
    seen: Mutex<HashMap<NameKey, Vec<(IpAddr, i64)>>>,
    /// Bumped whenever a ban is made here or seen from another replica.
    bans_changed: watch::Sender<u64>,
    /// The longest an address ban lasts (`--address-ban`).
    address_ban: Duration,
    /// The rooms in slow mode, and how slow (seconds).
    slow: RwLock<HashMap<String, u32>>,
    /// Whether `slow` has any: the common case asks no lock.
    any_slow: AtomicBool,
    /// When each name last posted in a room in slow mode (ms).
    last_post: Mutex<HashMap<(String, NameKey), i64>>,
    /// The topics moderators set, by room.
    topics: RwLock<HashMap<String, String>>,
    /// The room whose slow mode or topic changed, for the streams.
    rooms_changed: broadcast::Sender<String>,
    reports: Reports,
    ledger: Ledger,
}

impl Moderation {
    /// Moderation kept in `ledger`, holding the mutes it has (in cluster
    /// mode: and every mute made or lifted later through any replica).
    pub async fn open(ledger: Ledger, address_ban: Duration) -> Result<Arc<Self>, ModerationError> {
        let held = ledger.held().await?;
        let moderation = Arc::new(Self {
            mutes: RwLock::new(HashMap::new()),
            any: AtomicBool::new(false),
            bans: RwLock::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            bans_changed: watch::Sender::new(0),
            address_ban,
            slow: RwLock::new(HashMap::new()),
            any_slow: AtomicBool::new(false),
            last_post: Mutex::new(HashMap::new()),
            topics: RwLock::new(HashMap::new()),
            rooms_changed: broadcast::Sender::new(ROOMS_CHANGED_BUFFER),
            reports: Reports::default(),
            ledger: ledger.clone(),
        });
        for mute in held.mutes {
            moderation.hold(mute);
        }
        for ban in held.bans {
            moderation.hold_ban(ban);
        }
        for (room, seconds) in held.slow {
            moderation.hold_slow(room, seconds);
        }
        for (room, topic) in held.topics {
            moderation.hold_topic(room, topic);
        }
        for report in held.reports {
            moderation.reports.hold(report);
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

    /// The ban of `name` in force now, if any.
    pub fn banned(&self, name: &str) -> Option<Ban> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
        bans.get(&NameKey::of(name))
            .filter(|ban| in_force(ban.until, now_millis()))
            .cloned()
    }

    /// The ban that refuses `address` now, if any.
    pub fn address_banned(&self, address: IpAddr) -> Option<Ban> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = now_millis();
        let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
        bans.values()
            .find(|ban| {
                ban.addresses_until > now
                    && in_force(ban.until, now)
                    && ban.addresses.contains(&address)
            })
            .cloned()
    }

    /// Notes that `name` was used from `address` (a Join, a stream).
    pub fn saw(&self, name: &str, address: IpAddr) {
        let now = now_millis();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what is over an hour old, now and then, so this stays small.
        if seen.len() > 1_000 {
            seen.retain(|_, at| {
                at.retain(|(_, when)| now - when < SEEN_FOR_MS);
                !at.is_empty()
            });
        }
        let at = seen.entry(NameKey::of(name)).or_default();
        at.retain(|(ip, when)| *ip != address && now - when < SEEN_FOR_MS);
        at.push((address, now));
    }

    /// Changes whenever a ban is made or lifted: a stream then asks whether
    /// its own name is banned.
    pub fn bans_changed(&self) -> watch::Receiver<u64> {
        self.bans_changed.subscribe()
    }

    /// Bans `username` for `seconds` (0: until lifted), with `address`
    /// the addresses it was seen at in the last hour too; the audit id.
    pub async fn ban(
        &self,
        moderator: &str,
        username: String,
        seconds: u64,
        reason: String,
        address: bool,
    ) -> Result<u64, ModerationError> {
        let now = now_millis();
        let until = after(now, seconds);
        let (addresses, addresses_until) = if address {
            let limit = match seconds {
                0 => self.address_ban.as_secs(),
                s => s.min(self.address_ban.as_secs()),
            };
            (self.seen_at(&username), after(now, limit))
        } else {
            (Vec::new(), 0)
        };
        let ban = Ban {
            username,
            until,
            reason,
            addresses,
            addresses_until,
        };
        let entry = AuditEntry {
            target: u64::from(address),
            ..audit_entry(moderator, "ban", "", &ban.username, &ban.reason)
        };
        let id = self.ledger.ban(&ban, entry).await?;
        self.hold_ban(ban);
        Ok(id)
    }

    /// How slow `room` is (seconds between a name's posts; 0: not).
    pub fn slow_mode(&self, room: &str) -> u32 {
        if !self.any_slow.load(Ordering::Acquire) {
            return 0;
        }
        let slow = self.slow.read().unwrap_or_else(|e| e.into_inner());
        slow.get(room).copied().unwrap_or(0)
    }

    /// Whether `name` may post in `room` now (slow mode): if so, the post
    /// is counted; if not, how long to wait.
    pub fn may_post(&self, name: &str, room: &str) -> Result<(), Duration> {
        let seconds = self.slow_mode(room);
        if seconds == 0 {
            return Ok(());
        }
        let now = now_millis();
        let every = i64::from(seconds) * 1000;
        let mut last = self.last_post.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 10_000 {
            // Nobody waits longer than the slowest room: forget the rest.
            last.retain(|_, at| now.saturating_sub(*at) < i64::from(MAX_SLOW_MODE) * 1000);
        }
        // Never posted here: as if at the epoch, long enough ago.
        let at = last
            .entry((room.to_owned(), NameKey::of(name)))
            .or_insert(0);
        let wait = at.saturating_add(every).saturating_sub(now);
        if wait > 0 {
            return Err(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
        }
        *at = now;
        Ok(())
    }

    /// Puts `room` in slow mode for `seconds` (0: out of it); the audit id.
    pub async fn set_slow_mode(
        &self,
        moderator: &str,
        room: &str,
        seconds: u32,
    ) -> Result<u64, ModerationError> {
        let entry = AuditEntry {
            target: u64::from(seconds),
            ..audit_entry(moderator, "slow_mode", room, "", "")
        };
        let id = self.ledger.slow(room, seconds, entry).await?;
        self.hold_slow(room.to_owned(), seconds);
        Ok(id)
    }

    /// The topic a moderator set for `room`, if any.
    pub fn topic(&self, room: &str) -> Option<String> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(room).cloned()
    }

    /// Sets `room`'s topic; the audit id.
    pub async fn set_topic(
        &self,
        moderator: &str,
        room: &str,
        topic: String,
    ) -> Result<u64, ModerationError> {
        let entry = audit_entry(moderator, "topic", room, "", &topic);
        let id = self.ledger.topic(room, &topic, entry).await?;
        self.hold_topic(room.to_owned(), topic);
        Ok(id)
    }

    /// The name of each room whose slow mode or topic changes.
    pub fn rooms_changed(&self) -> broadcast::Receiver<String> {
        self.rooms_changed.subscribe()
    }

    /// The open reports.
    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// Opens `report` (its id aside): the report with its id, or `None` if
    /// its reporter reported that message before.
    pub async fn report(&self, report: Report) -> Result<Option<Report>, ModerationError> {
        let Some(id) = self.ledger.report(&report).await? else {
            return Ok(None);
        };
        let report = Report { id, ..report };
        self.reports.hold(report.clone());
        Ok(Some(report))
    }

    /// Closes open report `id` as dismissed by `moderator`: the audit id,
    /// or `None` if no such report is open.
    pub async fn dismiss(&self, moderator: &str, id: u64) -> Result<Option<u64>, ModerationError> {
        let Some(report) = self.reports.get(id) else {
            return Ok(None);
        };
        let entry = AuditEntry {
            target: id,
            ..audit_entry(
                moderator,
                "dismiss_report",
                &report.room,
                &report.username,
                "",
            )
        };
        let audit_id = self
            .ledger
            .close_reports(vec![report.clone()], Some(entry))
            .await?;
        self.close_report(&report);
        Ok(Some(audit_id))
    }

    /// Message `target` of `room` was deleted: its reports close.
    pub async fn message_gone(&self, room: &str, target: u64) -> Result<(), ModerationError> {
        let reports = self.reports.on(room, target);
        if reports.is_empty() {
            return Ok(());
        }
        self.ledger.close_reports(reports.clone(), None).await?;
        for report in &reports {
            self.close_report(report);
        }
        Ok(())
    }

    fn close_report(&self, report: &Report) {
        self.reports
            .close(&report.room, report.target, &NameKey::of(&report.username));
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
        let name = NameKey::of(username);
        self.forget(&name, |mute| room.is_empty() || mute.room == room);
        if room.is_empty() {
            self.unban(&name);
        }
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

    /// Records a moderator's purge of `author`'s messages in `room` (empty:
    /// every room): `deleted` of them; the audit id.
    pub async fn record_purge(
        &self,
        moderator: &str,
        room: &str,
        author: &str,
        deleted: u64,
    ) -> Result<u64, ModerationError> {
        let entry = AuditEntry {
            target: deleted,
            ..audit_entry(moderator, "purge", room, author, "")
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

    /// Holds `ban` in memory (adding the addresses this replica saw the
    /// name at, for an address ban) and tells the streams.
    fn hold_ban(&self, mut ban: Ban) {
        if ban.addresses_until > 0 {
            for address in self.seen_at(&ban.username) {
                if !ban.addresses.contains(&address) {
                    ban.addresses.push(address);
                }
            }
        }
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        bans.insert(NameKey::of(&ban.username), ban);
        self.any.store(true, Ordering::Release);
        drop(bans);
        self.bans_changed.send_modify(|n| *n += 1);
    }

    fn hold_slow(&self, room: String, seconds: u32) {
        let mut slow = self.slow.write().unwrap_or_else(|e| e.into_inner());
        let was = if seconds == 0 {
            slow.remove(&room)
        } else {
            slow.insert(room.clone(), seconds)
        };
        self.any_slow.store(!slow.is_empty(), Ordering::Release);
        drop(slow);
        if was.unwrap_or(0) != seconds {
            let _ = self.rooms_changed.send(room);
        }
    }

    fn hold_topic(&self, room: String, topic: String) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let was = topics.insert(room.clone(), topic.clone());
        drop(topics);
        if was.as_ref() != Some(&topic) {
            let _ = self.rooms_changed.send(room);
        }
    }

    fn unban(&self, name: &NameKey) {
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        bans.remove(name);
        drop(bans);
        self.refresh_any();
        self.bans_changed.send_modify(|n| *n += 1);
    }

    /// The addresses `name` was seen at in the last hour.
    fn seen_at(&self, name: &str) -> Vec<IpAddr> {
        let now = now_millis();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&NameKey::of(name))
            .map(|at| {
                at.iter()
                    .filter(|(_, when)| now - when < SEEN_FOR_MS)
                    .map(|(ip, _)| *ip)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn refresh_any(&self) {
        let any = !self
            .mutes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            || !self
                .bans
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
        self.any.store(any, Ordering::Release);
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
        drop(mutes);
        self.refresh_any();
    }
}

/// `seconds` after `now` (ms); 0 for 0 seconds (no end).
pub fn after(now: i64, seconds: u64) -> i64 {
    match seconds {
        0 => 0,
        s => now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
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
            Seen::Banned(ban) => moderation.hold_ban(ban),
            Seen::Unbanned(name) => moderation.unban(&name),
            Seen::Slow { room, seconds } => moderation.hold_slow(room, seconds),
            Seen::Topic { room, topic } => moderation.hold_topic(room, topic),
            Seen::Reported(report) => moderation.reports.hold(report),
            Seen::ReportClosed {
                room,
                target,
                reporter,
            } => moderation.reports.close(&room, target, &reporter),
        }
    }
    warn!("stopped following mutes made on other replicas: the watch ended");
}
