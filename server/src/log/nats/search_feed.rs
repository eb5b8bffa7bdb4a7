//! Feeding a replica's search index (`search`): one consumer of its own
//! per room, from the stream's first entry, taking messages, edits and
//! deletions in the stream's order, so the index holds each message as it
//! now stands. Rooms are found by listing the streams every second (and
//! when the hub follows one), so a room made on another replica is
//! indexed here within about a second of its first message.
//!
//! At start, each room's stream is read from its beginning, with progress
//! in the log; searches are answered meanwhile from what is indexed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::consume::consume_from;
use super::read::decode_payload;
use super::{BATCH, STREAM_PREFIX, Shared, stream_name};

/// How often the streams are listed for rooms not indexed yet.
const FIND_ROOMS_EVERY: Duration = Duration::from_secs(1);
/// How long a feeder that lost its consumer waits to open another.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// How often a room being indexed says how far it got.
const REPORT_EVERY: Duration = Duration::from_secs(5);

impl Shared {
    /// Starts feeding `room` to the search index (once per room).
    pub(super) fn index_room(self: &Arc<Self>, room: &str) {
        match self.search.new_room(room) {
            Ok(Some(number)) => {
                tokio::spawn(Arc::clone(self).feed_search(room.to_owned(), number));
            }
            Ok(None) => {}
            Err(error) => warn!(room, %error, "cannot index the room for search"),
        }
    }

    /// Lists the streams every second and indexes the rooms not indexed
    /// yet; runs as long as the log.
    pub(super) async fn find_rooms_to_index(self: Arc<Self>) {
        let mut every = tokio::time::interval(FIND_ROOMS_EVERY);
        loop {
            every.tick().await;
            let mut names = self.js.stream_names();
            while let Some(name) = names.next().await {
                match name {
                    Ok(name) => {
                        if let Some(room) = name.strip_prefix(STREAM_PREFIX) {
                            self.index_room(room);
                        }
                    }
                    Err(error) => {
                        debug!(%error, "listing the rooms to index for search");
                        break;
                    }
                }
            }
        }
    }

    /// Feeds `room` (number `number` in the index) from its stream's first
    /// entry on, for as long as the log runs.
    async fn feed_search(self: Arc<Self>, room: String, number: i64) {
        let started = Instant::now();
        let mut next = 1;
        let mut indexed: u64 = 0;
        // The newest id when the feeder started: reaching it is logged.
        let mut at_start: Option<u64> = None;
        let mut reported = Instant::now();
        loop {
            let stream = match self.js.get_stream(stream_name(&room)).await {
                Ok(stream) => stream,
                Err(error) => {
                    debug!(room, %error, "search feeder: the room's stream is not answering");
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
            };
            if at_start.is_none() {
                let newest = stream.cached_info().state.last_sequence;
                if newest > 0 {
                    info!(room, entries = newest, "indexing the room for search");
                }
                at_start = Some(newest);
            }
            let messages = match consume_from(&stream, next).await {
                Ok(messages) => messages,
                Err(error) => {
                    debug!(room, %error, "search feeder: cannot open a consumer");
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
            };
            let mut batches = messages.ready_chunks(BATCH);
            while let Some(batch) = batches.next().await {
                let mut entries = Vec::with_capacity(batch.len());
                let mut lost = false;
                for read in batch {
                    let message = match read {
                        Ok(message) => message,
                        Err(error) => {
                            debug!(room, %error, "search feeder lost its consumer");
                            lost = true;
                            break;
                        }
                    };
                    let Ok(info) = message.info() else { continue };
                    let id = info.stream_sequence;
                    if id < next {
                        continue;
                    }
                    let (entry, _) = decode_payload(&room, id, &message.subject, &message.payload);
                    entries.push(entry);
                    next = id + 1;
                }
                indexed += entries.len() as u64;
                if let Err(error) = self.search.take(number, entries).await {
                    warn!(room, %error, "could not index entries for search");
                }
                match at_start {
                    Some(newest) if newest > 0 && next > newest => {
                        info!(
                            room,
                            entries = indexed,
                            seconds = started.elapsed().as_secs_f64(),
                            "the room is indexed for search"
                        );
                        at_start = Some(0);
                    }
                    Some(newest) if newest > 0 && reported.elapsed() >= REPORT_EVERY => {
                        reported = Instant::now();
                        info!(
                            room,
                            at = next - 1,
                            of = newest,
                            "indexing the room for search"
                        );
                    }
                    _ => {}
                }
                if lost {
                    break;
                }
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }
}
