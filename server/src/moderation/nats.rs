//! The ledger in cluster mode, on the NATS JetStream cluster every replica
//! shares:
//!
//! - Mutes are keys of the KV bucket `chat_mutes` (one per name key and
//!   room, hex-encoded), and so are bans (`ban.` and the name key in hex:
//!   `n` is no hex digit, so the two never meet), and rooms' slow mode
//!   (`slow.` and the room in hex). Every replica watches the bucket
//!   ([`NatsLedger::watch`]), so a mute made through one holds on all of
//!   them within a round trip, and one lifted anywhere is lifted everywhere.
//! - The audit log is the stream `chat_audit` (subject `moderation.audit`),
//!   each entry an encoded `AuditEntry` whose id is its stream sequence.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use chat_proto::{AuditEntry, Report};
use futures_util::StreamExt;
use prost::Message as _;

use super::{Ban, Mute};
use crate::log::nats::patience::patiently;
use crate::people::name_key::NameKey;

const MUTES_BUCKET: &str = "chat_mutes";
const AUDIT_STREAM: &str = "chat_audit";
const AUDIT_SUBJECT: &str = "moderation.audit";
/// How long one call to the cluster may take before it is reported.
const PATIENCE: Duration = Duration::from_secs(10);

/// What went wrong talking to the cluster, in words.
pub type NatsError = String;

#[derive(Debug, Clone)]
pub struct NatsLedger {
    mutes: kv::Store,
    audit: stream::Stream,
    js: jetstream::Context,
}

/// A change to the mutes and bans seen in the bucket.
pub enum Seen {
    /// A mute (new or replacing one of the same name and room).
    Held(Mute),
    /// The mute of this name key and room ended.
    Lifted { name: NameKey, room: String },
    /// A ban (new or replacing the name's).
    Banned(Ban),
    /// The ban of this name key ended.
    Unbanned(NameKey),
    /// A room's slow mode (0: off).
    Slow { room: String, seconds: u32 },
    /// A room's topic, as a moderator set it.
    Topic { room: String, topic: String },
    /// A report opened (its id is its key's revision).
    Reported(Report),
    /// The report of `target` in `room` by `reporter` closed.
    ReportClosed {
        room: String,
        target: u64,
        reporter: NameKey,
    },
}

impl NatsLedger {
    /// Opens (making them if missing) the bucket and the stream, each kept
    /// on `replicas` NATS nodes.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, NatsError> {
        let js = jetstream::new(client);
        let mutes = patiently(MUTES_BUCKET, || {
            js.create_or_update_key_value(kv::Config {
                bucket: MUTES_BUCKET.to_owned(),
                description: "chat: names muted by moderators, by name key and room".to_owned(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
        })
        .await
        .map_err(|e| format!("opening the bucket {MUTES_BUCKET}: {e}"))?;
        let audit = patiently(AUDIT_STREAM, || {
            js.get_or_create_stream(stream::Config {
                name: AUDIT_STREAM.to_owned(),
                description: Some("chat: what moderators did".to_owned()),
                subjects: vec![AUDIT_SUBJECT.to_owned()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
        })
        .await
        .map_err(|e| format!("opening the stream {AUDIT_STREAM}: {e}"))?;
        Ok(Self { mutes, audit, js })
    }

    /// Every mute now, then each change as it happens, for as long as the
    /// returned stream is read.
    pub async fn watch(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Seen> + Send + use<>, NatsError> {
        let watch = patiently(MUTES_BUCKET, || self.mutes.watch_with_history(">"))
            .await
            .map_err(|e| format!("watching {MUTES_BUCKET}: {e}"))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if let Some(room) = entry.key.strip_prefix(TOPIC_PREFIX) {
                let topic = std::str::from_utf8(&entry.value).ok()?.to_owned();
                return Some(Seen::Topic {
                    room: unhex(room)?,
                    topic,
                });
            }
            if let Some(key) = entry.key.strip_prefix(REPORT_PREFIX) {
                let (room, target, reporter) = from_report_key(key)?;
                if entry.operation == kv::Operation::Put && !entry.value.is_empty() {
                    let report = Report::decode(entry.value.as_ref()).ok()?;
                    return Some(Seen::Reported(Report {
                        id: entry.revision,
                        ..report
                    }));
                }
                return Some(Seen::ReportClosed {
                    room,
                    target,
                    reporter,
                });
            }
            if let Some(room) = entry.key.strip_prefix(SLOW_PREFIX) {
                let room = unhex(room)?;
                let seconds = match entry.operation {
                    kv::Operation::Put => std::str::from_utf8(&entry.value).ok()?.parse().ok()?,
                    _ => 0,
                };
                return Some(Seen::Slow { room, seconds });
            }
            let ban = entry.key.strip_prefix(BAN_PREFIX);
            match (entry.operation, ban) {
                (kv::Operation::Put, Some(_)) => said_ban(&entry.value).map(Seen::Banned),
                (kv::Operation::Put, None) => said_mute(&entry.value).map(Seen::Held),
                (_, Some(name)) => Some(Seen::Unbanned(NameKey::from_said(unhex(name)?))),
                (_, None) => {
                    let (name, room) = from_key(&entry.key)?;
                    Some(Seen::Lifted { name, room })
                }
            }
        }))
    }

    /// Stores `mute`, after its audit entry; the entry's id.
    pub async fn mute(&self, mute: &Mute, entry: &AuditEntry) -> Result<u64, NatsError> {
        let id = self.record(entry).await?;
        within(self.mutes.put(
            key(&NameKey::of(&mute.username), &mute.room),
            said(mute).into(),
        ))
        .await?
        .map_err(|e| format!("storing the mute: {e}"))?;
        Ok(id)
    }

    /// Puts `room` in slow mode (0: out of it), after its audit entry; the
    /// entry's id.
    pub async fn slow(
        &self,
        room: &str,
        seconds: u32,
        entry: &AuditEntry,
    ) -> Result<u64, NatsError> {
        let id = self.record(entry).await?;
        let key = format!("{SLOW_PREFIX}{}", hex(room));
        if seconds == 0 {
            within(self.mutes.delete(&key))
                .await?
                .map_err(|e| format!("ending slow mode: {e}"))?;
        } else {
            within(self.mutes.put(&key, seconds.to_string().into()))
                .await?
                .map_err(|e| format!("storing slow mode: {e}"))?;
        }
        Ok(id)
    }

    /// Sets `room`'s topic, after its audit entry; the entry's id.
    pub async fn topic(
        &self,
        room: &str,
        topic: &str,
        entry: &AuditEntry,
    ) -> Result<u64, NatsError> {
        let id = self.record(entry).await?;
        within(self.mutes.put(
            format!("{TOPIC_PREFIX}{}", hex(room)),
            topic.to_owned().into(),
        ))
        .await?
        .map_err(|e| format!("storing the topic: {e}"))?;
        Ok(id)
    }

    /// Stores `report` (its id aside) unless its reporter reported that
    /// message before (`None`); the new id (the key's revision, unique in
    /// the bucket).
    pub async fn report(&self, report: &Report) -> Result<Option<u64>, NatsError> {
        let key = report_key(&report.room, report.target, &NameKey::of(&report.username));
        match within(self.mutes.create(key, report.encode_to_vec().into())).await? {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(format!("storing the report: {e}")),
        }
    }

    /// Closes `reports` (their keys stay, empty, so nobody reports the same
    /// message twice), after `entry` when a moderator dismissed them; the
    /// entry's id (0 without one).
    pub async fn close_reports(
        &self,
        reports: &[Report],
        entry: Option<&AuditEntry>,
    ) -> Result<u64, NatsError> {
        let id = match entry {
            Some(entry) => self.record(entry).await?,
            None => 0,
        };
        for report in reports {
            let key = report_key(&report.room, report.target, &NameKey::of(&report.username));
            within(self.mutes.put(key, bytes::Bytes::new()))
                .await?
                .map_err(|e| format!("closing the report: {e}"))?;
        }
        Ok(id)
    }

    /// Stores `ban`, after its audit entry; the entry's id.
    pub async fn ban(&self, ban: &Ban, entry: &AuditEntry) -> Result<u64, NatsError> {
        let id = self.record(entry).await?;
        within(self.mutes.put(
            ban_key(&NameKey::of(&ban.username)),
            said_ban_value(ban).into(),
        ))
        .await?
        .map_err(|e| format!("storing the ban: {e}"))?;
        Ok(id)
    }

    /// Ends `username`'s mute in `room` (empty: all of them, and the ban),
    /// after its audit entry; the entry's id.
    pub async fn lift(
        &self,
        username: &str,
        room: &str,
        entry: &AuditEntry,
    ) -> Result<u64, NatsError> {
        let id = self.record(entry).await?;
        let name = NameKey::of(username);
        let keys: Vec<String> = if room.is_empty() {
            let prefix = format!("{}.", hex(name.as_str()));
            within(self.mutes.keys())
                .await?
                .map_err(|e| format!("listing mutes: {e}"))?
                .filter_map(|key| async move { key.ok() })
                .filter(|key| std::future::ready(key.starts_with(&prefix)))
                .collect()
                .await
        } else {
            vec![key(&name, room)]
        };
        let keys = if room.is_empty() {
            keys.into_iter().chain([ban_key(&name)]).collect()
        } else {
            keys
        };
        for key in keys {
            within(self.mutes.delete(&key))
                .await?
                .map_err(|e| format!("lifting the mute: {e}"))?;
        }
        Ok(id)
    }

    /// Appends `entry` to the audit stream; its id (the sequence).
    pub async fn record(&self, entry: &AuditEntry) -> Result<u64, NatsError> {
        let ack = within(self.js.publish(AUDIT_SUBJECT, entry.encode_to_vec().into()))
            .await?
            .map_err(|e| format!("recording the action: {e}"))?;
        let ack = within(ack)
            .await?
            .map_err(|e| format!("recording the action: {e}"))?;
        Ok(ack.sequence)
    }

    /// Up to `limit` entries after `after_id`, oldest first.
    pub async fn audit(&self, after_id: u64, limit: u32) -> Result<Vec<AuditEntry>, NatsError> {
        let mut audit = self.audit.clone();
        let last = within(audit.info())
            .await?
            .map_err(|e| format!("reading the audit log: {e}"))?
            .state
            .last_sequence;
        let mut entries = Vec::new();
        let mut seq = after_id.saturating_add(1);
        while seq <= last && entries.len() < limit as usize {
            let raw = within(self.audit.get_raw_message(seq))
                .await?
                .map_err(|e| format!("reading audit entry {seq}: {e}"))?;
            let mut entry = AuditEntry::decode(raw.payload.as_ref())
                .map_err(|e| format!("audit entry {seq} is unreadable: {e}"))?;
            entry.id = seq;
            entries.push(entry);
            seq += 1;
        }
        Ok(entries)
    }
}

async fn within<T>(call: impl std::future::IntoFuture<Output = T>) -> Result<T, NatsError> {
    tokio::time::timeout(PATIENCE, call.into_future())
        .await
        .map_err(|_| "the NATS cluster did not answer in time".to_owned())
}

const BAN_PREFIX: &str = "ban.";
/// A room's topic: `topic.` and the room in hex.
const TOPIC_PREFIX: &str = "topic.";
/// A report: `report.`, then the room in hex, the message id and the
/// reporter's name key in hex, dot-separated.
const REPORT_PREFIX: &str = "report.";

fn report_key(room: &str, target: u64, reporter: &NameKey) -> String {
    format!(
        "{REPORT_PREFIX}{}.{target}.{}",
        hex(room),
        hex(reporter.as_str())
    )
}

/// A report key's parts, after [`REPORT_PREFIX`].
fn from_report_key(key: &str) -> Option<(String, u64, NameKey)> {
    let mut parts = key.splitn(3, '.');
    let room = unhex(parts.next()?)?;
    let target = parts.next()?.parse().ok()?;
    let reporter = NameKey::from_said(unhex(parts.next()?)?);
    Some((room, target, reporter))
}
/// A room's slow mode: `slow.` and the room in hex (`s` is no hex digit).
const SLOW_PREFIX: &str = "slow.";

/// A ban's key: `ban.` and the name key in hex.
fn ban_key(name: &NameKey) -> String {
    format!("{BAN_PREFIX}{}", hex(name.as_str()))
}

/// A ban as the bucket holds it: one field a line, the addresses
/// space-separated.
fn said_ban_value(ban: &Ban) -> String {
    let addresses: Vec<String> = ban.addresses.iter().map(ToString::to_string).collect();
    format!(
        "{}\n{}\n{}\n{}\n{}",
        ban.username,
        ban.until,
        ban.addresses_until,
        addresses.join(" "),
        ban.reason
    )
}

fn said_ban(value: &[u8]) -> Option<Ban> {
    let text = std::str::from_utf8(value).ok()?;
    let mut lines = text.splitn(5, '\n');
    Some(Ban {
        username: lines.next()?.to_owned(),
        until: lines.next()?.parse().ok()?,
        addresses_until: lines.next()?.parse().ok()?,
        addresses: lines
            .next()?
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect(),
        reason: lines.next().unwrap_or_default().to_owned(),
    })
}

/// A mute's key: its name key and room, each in hex (keys are ASCII).
fn key(name: &NameKey, room: &str) -> String {
    format!(
        "{}.{}",
        hex(name.as_str()),
        if room.is_empty() {
            "_".to_owned()
        } else {
            hex(room)
        }
    )
}

fn from_key(key: &str) -> Option<(NameKey, String)> {
    let (name, room) = key.split_once('.')?;
    let room = if room == "_" {
        String::new()
    } else {
        unhex(room)?
    };
    Some((NameKey::from_said(unhex(name)?), room))
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Option<String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// A mute as the bucket holds it: one field a line (names and reasons
/// have no control characters).
fn said(mute: &Mute) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        mute.username, mute.room, mute.until, mute.reason
    )
}

fn said_mute(value: &[u8]) -> Option<Mute> {
    let text = std::str::from_utf8(value).ok()?;
    let mut lines = text.splitn(4, '\n');
    Some(Mute {
        username: lines.next()?.to_owned(),
        room: lines.next()?.to_owned(),
        until: lines.next()?.parse().ok()?,
        reason: lines.next().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let mute = Mute {
            username: "Ada Lovelace".into(),
            room: "général".into(),
            until: 1_700_000_000_000,
            reason: "too loud".into(),
        };
        assert_eq!(said_mute(said(&mute).as_bytes()), Some(mute.clone()));
        let name = NameKey::of(&mute.username);
        assert_eq!(
            from_key(&key(&name, &mute.room)),
            Some((name.clone(), mute.room))
        );
        assert_eq!(from_key(&key(&name, "")), Some((name, String::new())));
        let ban = Ban {
            username: "Ada".into(),
            until: 0,
            reason: "spam, again".into(),
            addresses: vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
            addresses_until: 1_700_000_000_000,
        };
        assert_eq!(said_ban(said_ban_value(&ban).as_bytes()), Some(ban));
        let reporter = NameKey::of("Ada");
        let key = report_key("général", 42, &reporter);
        assert_eq!(
            key.strip_prefix(REPORT_PREFIX).and_then(from_report_key),
            Some(("général".to_owned(), 42, reporter))
        );
    }
}
