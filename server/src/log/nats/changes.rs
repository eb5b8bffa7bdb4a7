//! Changes in cluster mode. A change to message X of a room is a record
//! ([`Record`]) on the room's stream under `chat.<room>.c.<X>`, so its id
//! is the room's next, like a message's. It is judged against this
//! replica's index of the room (`index`) and published on condition that
//! X's newest change is still the one the index has folded in
//! (`Nats-Expected-Last-Subject-Sequence`): of two replicas that judged
//! changes to X against the same state, only one stores its change; the
//! other waits for its index to fold that one in and judges again. A
//! retried edit carries a `Nats-Msg-Id` made from its author, nonce and
//! target, so it is stored once cluster-wide (and the index remembers the
//! nonces for longer than JetStream's duplicate window).
//!
//! A deletion erases. Its record carries the tombstones of the message and
//! of its edits (ids, names and times; no text); they are put in the
//! [`ERASED_BUCKET`] key-value bucket, and then the stream messages are
//! erased (JetStream overwrites them in its files; each node's Raft log
//! lets go of them at its next snapshot). Reads find the tombstones where
//! the ids are missing, never a gap. The deleting replica erases before it
//! answers, and every replica's follower does again (it costs nothing once
//! done) when it hands the deletion over, so a replica that dies halfway
//! leaves nothing behind.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode, stream};
use bytes::Bytes;
use chat_proto::{Change, ChangeKind, ChatEvent, ChatMessage, Event};
use prost::Message as _;
use tracing::{debug, warn};

use super::index::{Fold, RoomIndex};
use super::write::{message_id, random_u64};
use super::{ACK_WAIT, Shared, WRITE_PATIENCE, stream_name, unavailable};
use crate::log::judge::{Verdict, judge};
use crate::log::{ChangeRequest, Changed, Entry, LogError, Refusal, RoomKey, now_millis};

/// The key-value bucket that holds the tombstones of erased entries, by
/// `<room>.<id>`.
pub const ERASED_BUCKET: &str = "chat_erased";
/// How long a change waits for the index to fold in what it must be judged
/// against.
const FOLD_PATIENCE: Duration = Duration::from_secs(10);

/// What a change's stream message holds.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Record {
    #[prost(message, optional, tag = "1")]
    pub(super) change: Option<Change>,
    /// An edit's nonce.
    #[prost(string, tag = "2")]
    pub(super) nonce: String,
    /// A deletion's tombstones: the message's and its edits', as they are
    /// served in their place once erased.
    #[prost(message, repeated, tag = "3")]
    pub(super) tombstones: Vec<ChatEvent>,
}

/// The subject of the changes to message `target` of `room`.
pub(super) fn change_subject(room: &str, target: u64) -> String {
    format!("chat.{room}.c.{target}")
}

/// The key of entry `id`'s tombstone in [`ERASED_BUCKET`].
fn tombstone_key(room: &str, id: u64) -> String {
    format!("{room}.{id}")
}

impl Shared {
    /// Judges `request` and stores it; see the module header.
    pub(super) async fn change(
        &self,
        room: &RoomKey,
        request: ChangeRequest,
    ) -> Result<Changed, LogError> {
        self.available()?;
        let index = self.index_of(&room.name)?;
        self.wait_built(&index).await?;
        let _turn = index.turn.lock().await;
        let target = request.target;
        let subject = change_subject(&room.name, target);
        let msg_id = if request.kind == ChangeKind::ChangeEdit && !request.nonce.is_empty() {
            format!(
                "edit-{target}-{}",
                message_id(&request.username, &request.nonce)
            )
        } else {
            format!("{}-{}", self.replica, random_u64())
        };
        let timestamp = now_millis();
        let deadline = tokio::time::Instant::now() + WRITE_PATIENCE;
        loop {
            let (message, mut fold) = self.standing(&room.name, &index, target).await?;
            match judge(&request, &message, &mut fold)? {
                Verdict::Store => {}
                Verdict::AlreadySo { id, timestamp } => {
                    return Ok(Changed::AlreadySo { id, timestamp });
                }
                Verdict::Refused(refusal) => return Err(refusal.into()),
            }
            let mut change = Change {
                id: 0,
                room: String::new(),
                target,
                username: request.username.clone(),
                timestamp,
                kind: request.kind as i32,
                message: String::new(),
                emoji: String::new(),
                by_moderator: request.by_moderator,
                reason: String::new(),
            };
            match request.kind {
                ChangeKind::ChangeEdit => change.message.clone_from(&request.message),
                ChangeKind::ChangeDelete => change.reason.clone_from(&request.reason),
                _ => change.emoji.clone_from(&request.emoji),
            }
            let tombstones = if request.kind == ChangeKind::ChangeDelete {
                self.tombstones(&room.name, &message, &fold).await?
            } else {
                Vec::new()
            };
            let record = Record {
                change: Some(change.clone()),
                nonce: request.nonce.clone(),
                tombstones: tombstones.clone(),
            };
            let publish = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(record.encode_to_vec()))
                .message_id(&msg_id)
                .expected_last_subject_sequence(fold.last);
            match self
                .publish_until_answered(&subject, publish, deadline)
                .await
            {
                Ok(ack) if ack.duplicate && request.kind == ChangeKind::ChangeEdit => {
                    // The same edit, sent before (here or on another replica).
                    let timestamp = self
                        .record(&room.name, ack.sequence)
                        .await
                        .and_then(|r| r.change)
                        .map_or(timestamp, |c| c.timestamp);
                    return Ok(Changed::AlreadySo {
                        id: ack.sequence,
                        timestamp,
                    });
                }
                Ok(ack) => {
                    change.id = ack.sequence;
                    // The next change is judged with this one folded in.
                    self.wait_folded(&index, ack.sequence).await?;
                    if !tombstones.is_empty() {
                        self.erase(&room.name, ack.sequence, &tombstones).await?;
                    }
                    return Ok(Changed::Stored(change));
                }
                Err(error) if out_of_date(&error) => {
                    // Another replica changed the message since: judge
                    // again once that change is folded in here.
                    debug!(%subject, "a change was refused as out of date; judging again");
                    let newest = self.newest_id(&room.name).await?;
                    self.wait_folded(&index, newest).await?;
                }
                Err(error) => return Err(unavailable(error)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LogError::Unavailable(
                    "the message kept changing under this change; try again".into(),
                ));
            }
        }
    }

    /// Publishes `publish` and waits for JetStream's answer, publishing it
    /// again (with its message id, so it is stored once) while no answer
    /// comes, until `deadline`. A refusal is an answer.
    async fn publish_until_answered(
        &self,
        subject: &str,
        publish: jetstream::message::PublishMessage,
        deadline: tokio::time::Instant,
    ) -> Result<jetstream::publish::PublishAck, PublishError> {
        loop {
            let attempt = async {
                let ack = self
                    .js
                    .send_publish(subject.to_owned(), publish.clone())
                    .await?;
                match tokio::time::timeout(ACK_WAIT, ack).await {
                    Ok(answer) => answer,
                    Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
                }
            };
            match attempt.await {
                Ok(ack) => return Ok(ack),
                Err(error)
                    if matches!(
                        error.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    warn!(subject, %error, "change not acknowledged yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Message `target` as it stands (its deletion and reactions are what
    /// the rules look at), and its fold.
    async fn standing(
        &self,
        room: &str,
        index: &RoomIndex,
        target: u64,
    ) -> Result<(ChatMessage, Fold), LogError> {
        let (fold, is_change, tombstone) = {
            let known = index.known();
            (
                known.fold_of(target),
                known.is_change(target),
                known.tombstone(target),
            )
        };
        if is_change {
            return Err(Refusal::NotAMessage(target).into());
        }
        let stored = match tombstone {
            Some(entry) => Some(entry),
            None => self.entry_at(room, target).await?,
        };
        match stored {
            Some(Entry::Message(message)) => Ok((fold.applied_to(message), fold)),
            Some(Entry::Change(_)) => Err(Refusal::NotAMessage(target).into()),
            None => Err(Refusal::NotFound(target).into()),
        }
    }

    /// Entry `id` of `room` as stored (not in its current state), from the
    /// stream's leader, or its tombstone if it was erased.
    async fn entry_at(&self, room: &str, id: u64) -> Result<Option<Entry>, LogError> {
        if id == 0 {
            return Ok(None);
        }
        let stream = self
            .js
            .get_stream(stream_name(room))
            .await
            .map_err(unavailable)?;
        match stream.get_raw_message(id).await {
            Ok(raw) => Ok(self.decode_raw(room, &raw).map(|(entry, _)| entry)),
            Err(error) if matches!(error.kind(), stream::RawMessageErrorKind::NoMessageFound) => {
                self.erased_entry(room, id).await
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// The record of change `id` of `room`, if it is stored.
    async fn record(&self, room: &str, id: u64) -> Option<Record> {
        let stream = self.js.get_stream(stream_name(room)).await.ok()?;
        let raw = stream.get_raw_message(id).await.ok()?;
        Record::decode(raw.payload.as_ref()).ok()
    }

    /// The tombstones a deletion of `message` leaves: its own, and one for
    /// each of its edits (their ids, with no text).
    async fn tombstones(
        &self,
        room: &str,
        message: &ChatMessage,
        fold: &Fold,
    ) -> Result<Vec<ChatEvent>, LogError> {
        let mut tombstones = vec![ChatEvent {
            event: Some(Event::Message(ChatMessage {
                id: message.id,
                username: message.username.clone(),
                timestamp: message.timestamp,
                reply_to: message.reply_to,
                deleted: true,
                ..ChatMessage::default()
            })),
        }];
        for id in fold.edit_ids() {
            if let Some(Entry::Change(edit)) = self.entry_at(room, id).await? {
                tombstones.push(ChatEvent {
                    event: Some(Event::Change(Change {
                        message: String::new(),
                        room: String::new(),
                        ..edit
                    })),
                });
            }
        }
        Ok(tombstones)
    }

    /// Puts `tombstones`, of deletion `deletion`, in the bucket, then erases
    /// their entries from the room's stream (an entry erased already is
    /// fine).
    pub(super) async fn erase(
        &self,
        room: &str,
        deletion: u64,
        tombstones: &[ChatEvent],
    ) -> Result<(), LogError> {
        let stream = self
            .js
            .get_stream(stream_name(room))
            .await
            .map_err(unavailable)?;
        for tombstone in sealed(tombstones, deletion) {
            let Some(id) = tombstone_id(&tombstone) else {
                continue;
            };
            self.erased
                .put(
                    tombstone_key(room, id),
                    Bytes::from(tombstone.encode_to_vec()),
                )
                .await
                .map_err(unavailable)?;
            match stream.delete_message(id).await {
                Ok(_) => {}
                // Erased already, by this replica's follower or another's:
                // "sequence N not found", "no message found", or a failed
                // delete that says the latter.
                Err(error) if erased_already(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Ok(())
    }

    /// The tombstone of entry `id` of `room`, if it was erased.
    pub(super) async fn erased_entry(
        &self,
        room: &str,
        id: u64,
    ) -> Result<Option<Entry>, LogError> {
        if let Some(entry) = self
            .index(room)
            .and_then(|index| index.known().tombstone(id))
        {
            return Ok(Some(entry));
        }
        let Some(bytes) = self
            .erased
            .get(tombstone_key(room, id))
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let entry = ChatEvent::decode(bytes.as_ref())
            .ok()
            .and_then(tombstone_entry);
        if let (Some(entry), Some(index)) = (&entry, self.index(room)) {
            index.known().bury(entry.clone());
        }
        Ok(entry)
    }

    /// Waits until the room's index has folded in every id up to `id`.
    pub(super) async fn wait_folded(&self, index: &RoomIndex, id: u64) -> Result<(), LogError> {
        let mut folded = index.folded.subscribe();
        tokio::time::timeout(FOLD_PATIENCE, folded.wait_for(|&f| f >= id))
            .await
            .map_err(|_| {
                LogError::Unavailable("this replica is behind the room's log; try again".into())
            })?
            .map(|_| ())
            .map_err(|_| LogError::Stopped)
    }

    /// Waits until the room's index is built.
    pub(super) async fn wait_built(&self, index: &RoomIndex) -> Result<(), LogError> {
        let mut built = index.built.subscribe();
        tokio::time::timeout(FOLD_PATIENCE, built.wait_for(|&b| b))
            .await
            .map_err(|_| {
                LogError::Incomplete("this replica is still reading the room's changes".into())
            })?
            .map(|_| ())
            .map_err(|_| LogError::Stopped)
    }
}

/// `tombstones` of deletion `deletion`: the message's says the deletion is
/// folded in (its record could not know its own id).
pub(super) fn sealed(tombstones: &[ChatEvent], deletion: u64) -> Vec<ChatEvent> {
    let mut tombstones = tombstones.to_vec();
    for tombstone in &mut tombstones {
        if let Some(Event::Message(message)) = &mut tombstone.event {
            message.state_id = deletion;
        }
    }
    tombstones
}

/// Whether JetStream refused a publish because the message's subject has
/// moved on since the sequence it was conditioned on, or could not check yet
/// (a new stream leader). Newer servers name the first with a code of their
/// own, which the client reports as `Other`.
fn out_of_date(error: &PublishError) -> bool {
    error.kind() == PublishErrorKind::WrongLastSequence
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| {
                [
                    ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
                    ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
                    ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY,
                ]
                .contains(&e.error_code())
            })
}

/// The id of the entry a tombstone stands for.
fn tombstone_id(tombstone: &ChatEvent) -> Option<u64> {
    match &tombstone.event {
        Some(Event::Message(message)) => Some(message.id),
        Some(Event::Change(change)) => Some(change.id),
        _ => None,
    }
}

/// Whether a failed erase found the entry erased already.
fn erased_already(error: &stream::DeleteMessageError) -> bool {
    match error.kind() {
        stream::DeleteMessageErrorKind::JetStream(e) => {
            let code = e.error_code();
            code == ErrorCode::SEQUENCE_NOT_FOUND
                || code == ErrorCode::NO_MESSAGE_FOUND
                || (code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                    && e.to_string().contains("no message found"))
        }
        _ => false,
    }
}

/// The entry a tombstone is served as.
pub(super) fn tombstone_entry(tombstone: ChatEvent) -> Option<Entry> {
    match tombstone.event? {
        Event::Message(message) => Some(Entry::Message(message)),
        Event::Change(change) => Some(Entry::Change(change)),
        _ => None,
    }
}
