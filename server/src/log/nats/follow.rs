//! Following a room: a consumer of the room's stream of our own hands
//! what it reads to the hub, in id order, exactly as the SQLite writer hands
//! over a committed batch. A consumer may be served by a node that is still
//! catching up, so a follower that skips an id (one that was neither erased
//! nor removed by retention), or stops getting what the stream's leader has
//! (checked every few seconds), opens its consumer again where it was.
//!
//! Before it hands anything over, the follower builds the room's index
//! (`index`) from the room's changes, and then folds in each change it
//! hands over, before the hub has it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::changes::{sealed, tombstone_entry};
use super::consume::{consume, consume_from};
use super::index::RoomIndex;
use super::read::Decoded;
use super::{
    BATCH, FOLLOW_CHECK, READ_WAIT, STREAM_PREFIX, Shared, lock, stream_name, unavailable,
};
use crate::log::{Committed, Entry, LogError, RoomKey, Stored};

/// A room this replica follows.
#[derive(Clone)]
pub(super) struct Followed {
    key: RoomKey,
    /// The newest id the hub has taken (the hub moves it): where the
    /// follower resumes.
    last_id: Arc<AtomicU64>,
    /// Tells the follower to open its consumer again (it stopped getting
    /// what the leader has).
    kick: Arc<Notify>,
    index: Arc<RoomIndex>,
}

impl Shared {
    /// Starts handing `room`'s messages to the hub after `handed` (once per
    /// room, however often it is asked).
    pub(super) fn follow_room(self: &Arc<Self>, room: &RoomKey, handed: Arc<AtomicU64>) {
        let mut followed = lock(&self.followed);
        if followed.contains_key(&room.name) {
            return;
        }
        let at_start = lock(&self.starting_rooms).remove(&*room.name);
        let index = Arc::new(RoomIndex::default());
        lock(&self.indexes).insert(Arc::clone(&room.name), Arc::clone(&index));
        let follower = Followed {
            key: room.clone(),
            last_id: handed,
            kick: Arc::new(Notify::new()),
            index,
        };
        followed.insert(Arc::clone(&room.name), follower.clone());
        drop(followed);
        tokio::spawn(Arc::clone(self).follow(follower, at_start));
    }

    /// Hands the room's new messages to the hub, in order, for as long as
    /// the process runs; a broken consumer is opened again where it left,
    /// and so is one that skipped an id or stopped getting new messages.
    async fn follow(self: Arc<Self>, room: Followed, mut at_start: bool) {
        loop {
            if !*room.index.built.borrow()
                && let Err(error) = self.build_index(&room).await
            {
                warn!(room = %room.key.name, %error, "cannot read the room's changes; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let after = room.last_id.load(Ordering::SeqCst);
            match self.messages_after(&room.key.name, after).await {
                Ok(mut messages) => {
                    if std::mem::take(&mut at_start) {
                        self.starting.fetch_sub(1, Ordering::SeqCst);
                    }
                    self.read_into_hub(&room, &mut messages).await;
                }
                Err(error) => {
                    warn!(room = %room.key.name, %error, "cannot follow the room's stream; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Reads `messages` and hands them over in batches until the consumer
    /// breaks, skips an id, or the follower is kicked.
    async fn read_into_hub(
        self: &Arc<Self>,
        room: &Followed,
        messages: &mut consumer::pull::Stream,
    ) {
        loop {
            let first = tokio::select! {
                next = messages.next() => next,
                () = room.kick.notified() => {
                    warn!(room = %room.key.name, "this replica stopped getting the room's newest messages; reading again");
                    return;
                }
            };
            let Some(first) = first else { return };
            let mut batch = Vec::new();
            let mut broken = false;
            let mut next = Some(first);
            while let Some(item) = next {
                match item {
                    Ok(message) => {
                        if let Some(decoded) = self.decode(&room.key.name, &message) {
                            batch.push(decoded);
                        }
                    }
                    Err(error) => {
                        // A lost leader, a missed heartbeat: open a new
                        // consumer where this one stopped.
                        debug!(room = %room.key.name, %error, "the room's consumer broke");
                        broken = true;
                        break;
                    }
                }
                next = if batch.len() < BATCH {
                    messages.next().now_or_never().flatten()
                } else {
                    None
                };
            }
            if !self.hand_over(room, batch).await || broken {
                return;
            }
        }
    }

    /// Gives the batch to the hub (which moves the room's newest id), with
    /// the tombstones of erased ids in their places and its changes folded
    /// into the room's index first; `false` if the batch does not follow on
    /// from what was handed over before (a node that is behind skipped ids
    /// that were neither erased nor removed by retention).
    async fn hand_over(self: &Arc<Self>, room: &Followed, batch: Vec<Decoded>) -> bool {
        let known = room.last_id.load(Ordering::SeqCst);
        let mut whole = Vec::with_capacity(batch.len());
        let mut expected = known + 1;
        let mut first = None;
        for decoded in batch {
            let id = decoded.stored.id();
            if id < expected {
                continue;
            }
            if id > expected {
                let first = match first {
                    Some(first) => first,
                    None => match self.leader_state(&room.key.name).await {
                        Ok(state) => *first.insert(state.first_sequence),
                        Err(_) => return false,
                    },
                };
                match self.holes(&room.key.name, expected, id, first).await {
                    Ok(tombstones) => whole.extend(tombstones.into_iter().map(|entry| Decoded {
                        stored: Stored {
                            origin: None,
                            entry,
                        },
                        record: None,
                    })),
                    Err(why) => {
                        warn!(room = %room.key.name, after = expected - 1, got = id, %why, "the room's consumer skipped ids; reading again");
                        return false;
                    }
                }
            }
            expected = id + 1;
            whole.push(decoded);
        }
        let Some(last) = whole.last().map(|d| d.stored.id()) else {
            return true;
        };
        let mut rewritten = Vec::new();
        let mut deletions = Vec::new();
        {
            let mut index = room.index.known();
            for decoded in &whole {
                let (Entry::Change(change), Some(record)) =
                    (&decoded.stored.entry, &decoded.record)
                else {
                    continue;
                };
                index.fold(change, &record.nonce);
                if !record.tombstones.is_empty() {
                    for tombstone in sealed(&record.tombstones, change.id) {
                        if let Some(entry) = tombstone_entry(tombstone) {
                            index.bury(entry.clone());
                            rewritten.push(entry);
                        }
                    }
                    deletions.push((change.id, record.tombstones.clone()));
                }
            }
            for decoded in &mut whole {
                if let Entry::Message(message) = &mut decoded.stored.entry {
                    index.show(message);
                }
            }
        }
        room.index.folded.send_replace(last);
        for (deletion, tombstones) in deletions {
            // Made sure of on every replica: the deleting one may have died
            // before it erased.
            let shared = Arc::clone(self);
            let name = Arc::clone(&room.key.name);
            tokio::spawn(async move {
                if let Err(error) = shared.erase(&name, deletion, &tombstones).await {
                    warn!(room = %name, deletion, %error, "could not erase a deleted message yet");
                }
            });
        }
        // The hub moves the room's newest id to `last` as it takes the batch.
        let on_commit = lock(&self.on_commit);
        on_commit(Committed {
            room: room.key.id,
            entries: whole.into_iter().map(|d| d.stored).collect(),
            oldest_kept: None,
            rewritten,
        });
        true
    }

    /// Reads every change of the room into its index (JetStream reads only
    /// the change subjects), up to the newest there is now.
    async fn build_index(&self, room: &Followed) -> Result<(), LogError> {
        let name = &room.key.name;
        let stream = self
            .follow_js
            .get_stream(stream_name(name))
            .await
            .map_err(unavailable)?;
        let changes = format!("chat.{name}.c.*");
        // The newest change as the stream's leader has it (a direct get may
        // be answered by a copy that is behind).
        let newest = match stream.get_last_raw_message_by_subject(&changes).await {
            Ok(message) => message.sequence,
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
            Err(error) => return Err(unavailable(error)),
        };
        if newest > 0 {
            let started = std::time::Instant::now();
            let mut records = consume(&stream, consumer::DeliverPolicy::All, changes).await?;
            let mut count = 0_u64;
            loop {
                let next = tokio::time::timeout(READ_WAIT, records.next())
                    .await
                    .map_err(|_| LogError::Incomplete("the room's changes stopped coming".into()))?
                    .ok_or_else(|| LogError::Incomplete("the room's changes ended".into()))?
                    .map_err(unavailable)?;
                let Some(decoded) = self.decode(name, &next) else {
                    continue;
                };
                let id = decoded.stored.id();
                if let (Entry::Change(change), Some(record)) =
                    (&decoded.stored.entry, &decoded.record)
                {
                    let mut index = room.index.known();
                    index.fold(change, &record.nonce);
                    for tombstone in sealed(&record.tombstones, change.id) {
                        if let Some(entry) = tombstone_entry(tombstone) {
                            index.bury(entry);
                        }
                    }
                }
                count += 1;
                if id >= newest {
                    break;
                }
            }
            info!(room = %name, changes = count, seconds = started.elapsed().as_secs_f64(), "read the room's changes");
        }
        room.index
            .folded
            .send_replace(room.last_id.load(Ordering::SeqCst));
        room.index.built.send_replace(true);
        Ok(())
    }

    /// The room's stream as its leader sees it.
    async fn leader_state(&self, room: &str) -> Result<stream::State, LogError> {
        let stream = self
            .follow_js
            .get_stream(stream_name(room))
            .await
            .map_err(unavailable)?;
        Ok(stream.cached_info().state.clone())
    }

    /// Every [`FOLLOW_CHECK`], compares each room's newest id here with the
    /// leader's, and kicks a follower that was behind twice in a row without
    /// moving: its consumer is on a node that stopped catching up.
    pub(super) async fn check_followers(self: Arc<Self>) {
        let mut every = tokio::time::interval(FOLLOW_CHECK);
        let mut behind: HashMap<Arc<str>, u64> = HashMap::new();
        loop {
            every.tick().await;
            if self.available().is_err() {
                continue;
            }
            let mut newest = HashMap::new();
            let mut streams = self.follow_js.streams();
            while let Ok(Some(info)) = streams.try_next().await {
                if let Some(name) = info.config.name.strip_prefix(STREAM_PREFIX) {
                    newest.insert(name.to_owned(), info.state.last_sequence);
                }
            }
            let rooms: Vec<Followed> = lock(&self.followed).values().cloned().collect();
            for room in rooms {
                let here = room.last_id.load(Ordering::SeqCst);
                match newest.get(&*room.key.name) {
                    Some(&leader) if leader > here => {
                        if behind.insert(Arc::clone(&room.key.name), here) == Some(here) {
                            behind.remove(&room.key.name);
                            room.kick.notify_one();
                        }
                    }
                    _ => {
                        behind.remove(&room.key.name);
                    }
                }
            }
        }
    }

    /// The room's messages from id `after + 1` (see [`consume_from`]).
    async fn messages_after(
        &self,
        room: &str,
        after: u64,
    ) -> Result<consumer::pull::Stream, LogError> {
        let stream = self
            .follow_js
            .get_stream(stream_name(room))
            .await
            .map_err(unavailable)?;
        consume_from(&stream, after + 1).await
    }
}
