//! The shared log for several replicas: each room is a NATS JetStream
//! stream, `CHAT_<room>`, replicated on the NATS cluster.
//!
//! A message's id is its stream sequence, so every replica and every client
//! agrees on it, and ids have no holes. `append` returns only after
//! JetStream acknowledged the write (a `PubAck` from a majority of the
//! stream's replicas). A message with a nonce carries a `Nats-Msg-Id` made
//! from its sender's name and nonce, so a retried `Send` (here or on another
//! replica, inside the stream's duplicate window) is stored once and
//! answered with the first copy's id.
//!
//! Every replica follows each room it serves with a consumer of its own and
//! hands what it reads to the hub, exactly as the SQLite writer hands over a
//! committed batch: the hub cannot tell the two apart. History and resumes
//! are read back from the stream.
//!
//! A consumer may be served by any node that keeps a copy of the stream,
//! including one that is still catching up (after a restart, or just slow):
//! such a node reads fine but has not got every message yet. So nothing
//! read here is trusted to be complete on its own: ids have no holes, and
//! every read is checked against the stream's first and last sequence as
//! the stream's leader gives them (`STREAM.INFO` is answered by the leader
//! only). A history read that comes back short or with a hole serves
//! nothing and says [`LogError::Incomplete`] (the subscription asks again,
//! then says it is unavailable, rather than serve a gap); a follower that
//! skips an id, or stops getting what the leader has, opens its consumer
//! again where it was.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, context, stream};
use bytes::Bytes;
use chat_proto::ChatMessage;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use prost::Message as _;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::log::{Committed, LogError, OnCommit, RoomId, RoomLog, RoomRow, Stored, StreamFailure};
use crate::metrics::Metrics;
use crate::store::{PAGE_BYTES, Retention, now_millis};

/// Every room's stream is named this, then the room's name.
pub const STREAM_PREFIX: &str = "CHAT_";
/// The room every server has.
const GENERAL: &str = "general";
/// How long a `Send` keeps retrying a write JetStream did not acknowledge
/// (a leader election takes a few seconds), with the same `Nats-Msg-Id`.
const WRITE_PATIENCE: Duration = Duration::from_secs(20);
/// How long a starting replica waits for JetStream to answer.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long one publish waits for its acknowledgement before retrying.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// A retried write is recognised as a copy for this long.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a follower's request to JetStream may take before it asks again.
const FOLLOW_REQUEST: Duration = Duration::from_secs(2);
/// A consumer nobody reads from is removed by the server after this.
const CONSUMER_IDLE: Duration = Duration::from_secs(10);
/// Messages the follower hands to the hub at once, at most.
const BATCH: usize = 256;
/// How long a history read waits for the next message before it tries
/// another read.
const READ_WAIT: Duration = Duration::from_secs(2);
/// How often the followers are checked against the leaders' newest ids.
const FOLLOW_CHECK: Duration = Duration::from_secs(3);
/// A `ChatStream`'s messages published and not yet acknowledged, at most.
const PIPELINE_WINDOW: usize = 512;
/// A `ChatStream`'s messages queued for its publisher, at most (then the
/// reader waits, and HTTP/2 flow control slows the client).
const PIPELINE_QUEUE: usize = 1024;
/// The header that says which replica and connection wrote a message, so
/// `ChatStream` does not echo a client's own words back to it.
const ORIGIN_HEADER: &str = "Chat-Origin";

/// How the cluster is reached and how rooms are kept.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port`, comma-separated.
    pub urls: String,
    /// Copies of each room's stream (3 survives one node).
    pub replicas: usize,
    pub retention: Retention,
}

/// A connection to the cluster, with the rooms it had, not yet handing
/// messages to anyone ([`Connected::open`] does).
pub struct Connected {
    config: NatsConfig,
    client: async_nats::Client,
    replica: u64,
    js: context::Context,
    rooms: Vec<RoomRow>,
}

impl Connected {
    /// Connects, makes sure `general` exists, and reads the rooms.
    pub async fn connect(config: NatsConfig) -> Result<Self, LogError> {
        let servers = config
            .urls
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LogError::Unavailable(format!("--nats {}: {e}", config.urls)))?;
        let client = async_nats::ConnectOptions::new()
            .name("chat-server")
            .connect(servers)
            .await
            .map_err(|e| {
                LogError::Unavailable(format!("cannot connect to {}: {e}", config.urls))
            })?;
        let js = jetstream::new(client.clone());
        // A cluster that is starting (or electing) answers JetStream requests
        // only after a while: wait for it rather than fail the start.
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        let rooms = loop {
            match rooms_of(&js, &config).await {
                Ok(rooms) => break rooms,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    warn!(%error, "JetStream is not ready yet; waiting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        };
        info!(urls = %config.urls, rooms = rooms.len(), "connected to NATS JetStream");
        Ok(Self {
            config,
            client,
            replica: random_u64(),
            js,
            rooms,
        })
    }

    /// The connection, for what else travels on NATS (presence, typing).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// This process's number among the replicas (random).
    pub fn replica(&self) -> u64 {
        self.replica
    }

    /// Starts following every room; each message read goes to `on_commit`.
    pub fn open(self, on_commit: OnCommit, metrics: Metrics) -> NatsLog {
        let log = NatsLog {
            shared: Arc::new(Shared {
                config: self.config,
                client: self.client,
                follow_js: {
                    let mut js = self.js.clone();
                    js.set_timeout(FOLLOW_REQUEST);
                    js
                },
                js: self.js,
                on_commit: Mutex::new(on_commit),
                rooms: Mutex::new(HashMap::new()),
                next_room: AtomicI64::new(1),
                replica: self.replica,
                metrics,
                starting: std::sync::atomic::AtomicUsize::new(self.rooms.len()),
                pipelines: Mutex::new(HashMap::new()),
            }),
            at_open: Mutex::new(Vec::new()),
        };
        let rows: Vec<RoomRow> = self
            .rooms
            .into_iter()
            .map(|row| log.shared.register_room(row, true))
            .collect();
        *lock(&log.at_open) = rows;
        tokio::spawn(Arc::clone(&log.shared).check_followers());
        log
    }
}

/// The JetStream log; see the module header.
pub struct NatsLog {
    shared: Arc<Shared>,
    at_open: Mutex<Vec<RoomRow>>,
}

impl fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsLog")
            .field("urls", &self.shared.config.urls)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: NatsConfig,
    client: async_nats::Client,
    js: context::Context,
    /// The same, with short requests: a follower that lost its consumer
    /// (a stream leader died) asks again soon rather than wait long.
    follow_js: context::Context,
    on_commit: Mutex<OnCommit>,
    rooms: Mutex<HashMap<String, Followed>>,
    next_room: AtomicI64,
    /// Tells this process's messages apart from other replicas'.
    replica: u64,
    metrics: Metrics,
    /// Rooms found at start whose consumer is not open yet: until it is,
    /// the replica reports itself unavailable, so a load balancer sends
    /// nobody to a replica that would make them wait.
    starting: std::sync::atomic::AtomicUsize,
    /// Each `ChatStream` connection's publisher, by origin.
    pipelines: Mutex<HashMap<u64, mpsc::Sender<jetstream::message::PublishMessage>>>,
}

/// A room this replica follows.
#[derive(Clone)]
struct Followed {
    id: RoomId,
    name: Arc<str>,
    last_id: Arc<AtomicU64>,
    /// Tells the follower to open its consumer again (it stopped getting
    /// what the leader has).
    kick: Arc<Notify>,
}

impl Shared {
    /// Follows the room `row` describes (once, however often it is asked),
    /// and returns the row with this process's number for it.
    fn register(self: &Arc<Self>, row: RoomRow) -> RoomRow {
        self.register_room(row, false)
    }

    /// [`Shared::register`], for a room found at start (`at_start`).
    fn register_room(self: &Arc<Self>, row: RoomRow, at_start: bool) -> RoomRow {
        let mut rooms = lock(&self.rooms);
        if let Some(known) = rooms.get(&row.name) {
            if at_start {
                self.starting.fetch_sub(1, Ordering::SeqCst);
            }
            return RoomRow {
                id: known.id,
                last_id: known.last_id.load(Ordering::SeqCst),
                ..row
            };
        }
        let followed = Followed {
            id: self.next_room.fetch_add(1, Ordering::Relaxed),
            name: row.name.as_str().into(),
            last_id: Arc::new(AtomicU64::new(row.last_id)),
            kick: Arc::new(Notify::new()),
        };
        rooms.insert(row.name.clone(), followed.clone());
        drop(rooms);
        tokio::spawn(Arc::clone(self).follow(followed.clone(), at_start));
        RoomRow {
            id: followed.id,
            ..row
        }
    }

    fn room(&self, id: RoomId) -> Option<Followed> {
        lock(&self.rooms).values().find(|r| r.id == id).cloned()
    }

    fn room_or_gone(&self, id: RoomId) -> Result<Followed, LogError> {
        self.room(id)
            .ok_or_else(|| LogError::Write("no such room on this replica".into()))
    }

    fn available(&self) -> Result<(), LogError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(LogError::Unavailable(
                "this replica has lost its connection to NATS; try again (another replica may answer)"
                    .into(),
            )),
        }
    }

    /// Hands the room's new messages to the hub, in order, for as long as
    /// the process runs; a broken consumer is opened again where it left,
    /// and so is one that skipped an id or stopped getting new messages.
    async fn follow(self: Arc<Self>, room: Followed, mut at_start: bool) {
        loop {
            let after = room.last_id.load(Ordering::SeqCst);
            match self.messages_after(&room.name, after).await {
                Ok(mut messages) => {
                    if std::mem::take(&mut at_start) {
                        self.starting.fetch_sub(1, Ordering::SeqCst);
                    }
                    self.read_into_hub(&room, &mut messages).await;
                }
                Err(error) => {
                    warn!(room = %room.name, %error, "cannot follow the room's stream; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Reads `messages` and hands them over in batches until the consumer
    /// breaks, skips an id, or the follower is kicked.
    async fn read_into_hub(&self, room: &Followed, messages: &mut consumer::pull::Stream) {
        loop {
            let first = tokio::select! {
                next = messages.next() => next,
                () = room.kick.notified() => {
                    warn!(room = %room.name, "this replica stopped getting the room's newest messages; reading again");
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
                        if let Some(stored) = self.decode(&message) {
                            batch.push(stored);
                        }
                    }
                    Err(error) => {
                        // A lost leader, a missed heartbeat: open a new
                        // consumer where this one stopped.
                        debug!(room = %room.name, %error, "the room's consumer broke");
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

    /// Moves the room's newest id, then gives the batch to the hub; `false`
    /// if the batch does not follow on from what was handed over before (a
    /// node that is behind skipped ids retention did not remove).
    async fn hand_over(&self, room: &Followed, batch: Vec<Stored>) -> bool {
        let known = room.last_id.load(Ordering::SeqCst);
        let batch: Vec<Stored> = batch.into_iter().filter(|s| s.message.id > known).collect();
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return true;
        };
        let (first, last) = (first.message.id, last.message.id);
        let contiguous = batch
            .iter()
            .zip(first..)
            .all(|(stored, id)| stored.message.id == id);
        if first != known + 1 || !contiguous {
            let removed_upto = match self.leader_state(&room.name).await {
                Ok(state) => state.first_sequence.saturating_sub(1),
                Err(_) => 0,
            };
            let holes_removed = batch
                .iter()
                .scan(known, |previous, stored| {
                    let hole =
                        stored.message.id > *previous + 1 && stored.message.id - 1 > removed_upto;
                    *previous = stored.message.id;
                    Some(hole)
                })
                .all(|hole| !hole);
            if !holes_removed {
                warn!(room = %room.name, after = known, got = first, "the room's consumer skipped ids; reading again");
                return false;
            }
        }
        room.last_id.store(last, Ordering::SeqCst);
        let on_commit = lock(&self.on_commit);
        on_commit(Committed {
            room: room.id,
            messages: batch,
            oldest_kept: None,
        });
        true
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
    async fn check_followers(self: Arc<Self>) {
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
            let rooms: Vec<Followed> = lock(&self.rooms).values().cloned().collect();
            for room in rooms {
                let here = room.last_id.load(Ordering::SeqCst);
                match newest.get(&*room.name) {
                    Some(&leader) if leader > here => {
                        if behind.insert(Arc::clone(&room.name), here) == Some(here) {
                            behind.remove(&room.name);
                            room.kick.notify_one();
                        }
                    }
                    _ => {
                        behind.remove(&room.name);
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

    /// Messages of `room` with `after < id <= upto`, complete, or
    /// [`LogError::Incomplete`] (the subscription asks again, for as long
    /// as its patience lasts).
    async fn read_range(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, LogError> {
        self.read_range_once(room, after, upto, limit)
            .await
            .map_err(|why| {
                debug!(room, after, upto, %why, "history read incomplete");
                LogError::Incomplete(why)
            })
    }

    /// [`Shared::read_range`]: the leader says which ids the stream has,
    /// and whatever node serves the consumer must deliver them all, in
    /// order.
    async fn read_range_once(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, String> {
        let stream = self
            .follow_js
            .get_stream(stream_name(room))
            .await
            .map_err(|e| e.to_string())?;
        let state = &stream.cached_info().state;
        let upto = upto.min(state.last_sequence);
        // Ids before the stream's first were removed by retention.
        let mut expected = (after + 1).max(state.first_sequence);
        if expected > upto {
            return Ok(Vec::new());
        }
        let mut messages = consume_from(&stream, expected)
            .await
            .map_err(|e| e.to_string())?;
        let mut page = Vec::new();
        let mut bytes = 0;
        loop {
            let next = tokio::time::timeout(READ_WAIT, messages.next())
                .await
                .map_err(|_| {
                    format!(
                        "the node serving the read has nothing after {}",
                        expected - 1
                    )
                })?
                .ok_or("the read ended")?
                .map_err(|e| e.to_string())?;
            let Some(stored) = self.decode(&next) else {
                continue;
            };
            let id = stored.message.id;
            if id < expected {
                continue;
            }
            if id > expected {
                return Err(format!(
                    "the node serving the read skipped ids {expected}..{}",
                    id - 1
                ));
            }
            expected += 1;
            bytes += stored.message.username.len()
                + stored.message.message.len()
                + stored.message.nonce.len();
            page.push(stored);
            if id == upto || page.len() >= limit || bytes > PAGE_BYTES {
                return Ok(page);
            }
        }
    }

    /// `message` stamped with the time, and what to publish for it: its
    /// dedupe id (from name and nonce; without a nonce one of our own still
    /// makes this call's retries land once) and, from a `ChatStream`, its
    /// origin.
    fn prepare(
        &self,
        origin: Option<u64>,
        message: ChatMessage,
    ) -> (ChatMessage, jetstream::message::PublishMessage) {
        let message = ChatMessage {
            id: 0,
            timestamp: now_millis(),
            ..message
        };
        let msg_id = if message.nonce.is_empty() {
            format!("{}-{}", self.replica, random_u64())
        } else {
            message_id(&message.username, &message.nonce)
        };
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(message.encode_to_vec()))
            .message_id(msg_id);
        if let Some(origin) = origin {
            publish = publish.header(ORIGIN_HEADER, format!("{}.{origin}", self.replica));
        }
        (message, publish)
    }

    /// Queues a `ChatStream`'s message for its connection's publisher
    /// ([`Shared::pipeline`]), which keeps the connection's messages in
    /// order without a round trip per message.
    async fn write_queued(
        self: &Arc<Self>,
        room: &Followed,
        origin: u64,
        message: ChatMessage,
        failure: &StreamFailure,
    ) -> Result<(), LogError> {
        self.available()?;
        let (_, publish) = self.prepare(Some(origin), message);
        let queue = lock(&self.pipelines)
            .entry(origin)
            .or_insert_with(|| {
                let (queue, queued) = mpsc::channel(PIPELINE_QUEUE);
                tokio::spawn(Arc::clone(self).pipeline(
                    origin,
                    subject(&room.name),
                    queued,
                    Arc::clone(failure),
                ));
                queue
            })
            .clone();
        queue.send(publish).await.map_err(|_| {
            LogError::Write("this stream's earlier message could not be stored".into())
        })
    }

    /// One `ChatStream` connection's publisher: publishes its messages in
    /// order, up to [`PIPELINE_WINDOW`] unacknowledged, and looks at the
    /// acknowledgements in order. A message JetStream refused (a leader
    /// election, a lost node) or did not acknowledge within
    /// [`WRITE_PATIENCE`] is published again, with its `Nats-Msg-Id`, once
    /// everything before it has settled, so the connection's messages are
    /// stored once each and in order. Only a write that fails for
    /// [`WRITE_PATIENCE`] ends the stream (through `failure`). Ends when the
    /// connection has gone and its queue is empty.
    async fn pipeline(
        self: Arc<Self>,
        origin: u64,
        subject: String,
        mut queued: mpsc::Receiver<jetstream::message::PublishMessage>,
        failure: StreamFailure,
    ) {
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut gone = false;
        let outcome: Result<(), String> = async {
            loop {
                if in_flight.is_empty() {
                    let next = if gone {
                        queued.try_recv().ok()
                    } else {
                        tokio::select! {
                            next = queued.recv() => next,
                            () = failure.closed() => {
                                gone = true;
                                queued.try_recv().ok()
                            }
                        }
                    };
                    let Some(publish) = next else {
                        return Ok(());
                    };
                    self.publish_next(&subject, publish, &mut in_flight).await?;
                }
                while in_flight.len() < PIPELINE_WINDOW {
                    let Ok(publish) = queued.try_recv() else {
                        break;
                    };
                    self.publish_next(&subject, publish, &mut in_flight).await?;
                }
                let Some(oldest) = in_flight.pop_front() else {
                    continue;
                };
                match tokio::time::timeout(WRITE_PATIENCE, oldest.ack).await {
                    Ok(Ok(Ok(_))) => self
                        .metrics
                        .stored(1, oldest.started.elapsed().as_secs_f64()),
                    _ => {
                        self.settle(&subject, vec![oldest.publish], &mut in_flight, None)
                            .await?;
                    }
                }
            }
        }
        .await;
        lock(&self.pipelines).remove(&origin);
        if let Err(reason) = outcome {
            failure.send_replace(Some(reason));
        }
    }

    /// Publishes `publish` after what is in flight; if it cannot even be
    /// sent, settles everything in flight and stores it after them.
    async fn publish_next(
        &self,
        subject: &str,
        publish: jetstream::message::PublishMessage,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        match self
            .js
            .send_publish(subject.to_owned(), publish.clone())
            .await
        {
            Ok(ack) => {
                // Awaited at once on the side: an acknowledgement not yet
                // awaited holds one of the JetStream context's in-flight
                // permits (5,000, shared by every connection), and holding
                // them until their turn would stall every publisher.
                let ack = tokio::spawn(ack.into_future());
                in_flight.push_back(InFlight {
                    publish,
                    started,
                    ack,
                });
                Ok(())
            }
            Err(error) => {
                debug!(%error, "a ChatStream message could not be published; settling");
                self.settle(subject, Vec::new(), in_flight, Some(publish))
                    .await
            }
        }
    }

    /// After a write was not acknowledged (`failed`, oldest first): waits
    /// for everything still in flight, then stores again, one at a time and
    /// in order, whatever was not acknowledged, and `unsent` last.
    async fn settle(
        &self,
        subject: &str,
        mut failed: Vec<jetstream::message::PublishMessage>,
        in_flight: &mut VecDeque<InFlight>,
        unsent: Option<jetstream::message::PublishMessage>,
    ) -> Result<(), String> {
        // The lowest id a message after a failed one was stored under.
        let mut lowest_after_failure = u64::MAX;
        for InFlight {
            publish,
            started,
            ack,
        } in in_flight.drain(..)
        {
            match tokio::time::timeout(WRITE_PATIENCE, ack).await {
                Ok(Ok(Ok(ack))) => {
                    if !failed.is_empty() {
                        lowest_after_failure = lowest_after_failure.min(ack.sequence);
                    }
                    self.metrics.stored(1, started.elapsed().as_secs_f64());
                }
                _ => failed.push(publish),
            }
        }
        failed.extend(unsent);
        warn!(
            messages = failed.len(),
            "ChatStream messages not acknowledged by JetStream; storing them again"
        );
        let mut overtaken = false;
        for publish in failed {
            let ack = self.publish_acked(subject, publish).await?;
            overtaken |= ack.sequence > lowest_after_failure;
        }
        if overtaken {
            // The election ended between two of the connection's messages:
            // a later one was stored before an earlier one's retry. Nothing
            // was lost, but the order was; say so rather than go on.
            return Err("a message was stored out of order while NATS elected a leader".into());
        }
        Ok(())
    }

    /// Publishes `publish` and waits for JetStream's acknowledgement,
    /// retrying with the same message id through a leader election, for
    /// [`WRITE_PATIENCE`].
    async fn publish_acked(
        &self,
        subject: &str,
        publish: jetstream::message::PublishMessage,
    ) -> Result<jetstream::publish::PublishAck, String> {
        let started = tokio::time::Instant::now();
        let deadline = started + WRITE_PATIENCE;
        loop {
            let attempt = async {
                let ack = self
                    .js
                    .send_publish(subject.to_owned(), publish.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(ACK_WAIT, ack)
                    .await
                    .map_err(|_| "no acknowledgement in time".to_string())?
                    .map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(ack) => {
                    if !ack.duplicate {
                        self.metrics.stored(1, started.elapsed().as_secs_f64());
                    }
                    return Ok(ack);
                }
                Err(error) if tokio::time::Instant::now() < deadline => {
                    warn!(subject, %error, "write not acknowledged yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(format!("could not store the message: {error}")),
            }
        }
    }

    /// The stored message `id` of `room`, read from the stream's leader.
    async fn stored(&self, room: &str, id: u64) -> Option<ChatMessage> {
        let stream = self.js.get_stream(stream_name(room)).await.ok()?;
        let raw = stream.get_raw_message(id).await.ok()?;
        let message = ChatMessage::decode(raw.payload.as_ref()).ok()?;
        Some(ChatMessage { id, ..message })
    }

    fn decode(&self, message: &jetstream::Message) -> Option<Stored> {
        let info = message.info().ok()?;
        let id = info.stream_sequence;
        let mut chat = match ChatMessage::decode(message.payload.as_ref()) {
            Ok(chat) => chat,
            Err(error) => {
                warn!(id, %error, "a message in the stream is not a ChatMessage; skipped");
                ChatMessage::default()
            }
        };
        chat.id = id;
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .and_then(|v| v.as_str().split_once('.'))
            .and_then(|(replica, origin)| {
                (replica.parse::<u64>().ok()? == self.replica).then(|| origin.parse().ok())?
            });
        Some(Stored {
            origin,
            message: chat,
        })
    }

    /// Publishes `message` and waits for JetStream's acknowledgement,
    /// retrying with the same message id through a leader election.
    async fn write(
        &self,
        room: &Followed,
        origin: Option<u64>,
        message: ChatMessage,
    ) -> Result<ChatMessage, LogError> {
        self.available()?;
        let (message, publish) = self.prepare(origin, message);
        let ack = self
            .publish_acked(&subject(&room.name), publish)
            .await
            .map_err(LogError::Unavailable)?;
        if ack.duplicate {
            // A retry: answer with the copy that was stored.
            return Ok(self
                .stored(&room.name, ack.sequence)
                .await
                .unwrap_or(ChatMessage {
                    id: ack.sequence,
                    ..message
                }));
        }
        Ok(ChatMessage {
            id: ack.sequence,
            ..message
        })
    }
}

/// A `ChatStream` message published and not yet acknowledged.
struct InFlight {
    publish: jetstream::message::PublishMessage,
    started: tokio::time::Instant,
    ack: tokio::task::JoinHandle<Result<jetstream::publish::PublishAck, context::PublishError>>,
}

/// Messages of `stream` from id `start` on, from an ephemeral consumer of
/// our own (like an ordered consumer, but with a heartbeat every second: a
/// consumer lost with its stream's leader is noticed in seconds, not the
/// ordered consumer's 30).
async fn consume_from(
    stream: &stream::Stream,
    start: u64,
) -> Result<consumer::pull::Stream, LogError> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    consumer
        .stream()
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .map_err(unavailable)
}

impl RoomLog for NatsLog {
    fn rooms_at_open(&self) -> Vec<RoomRow> {
        lock(&self.at_open).clone()
    }

    fn find_room(&self, name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, LogError>> {
        let name = name.to_owned();
        Box::pin(async move {
            match self.shared.js.get_stream(stream_name(&name)).await {
                Ok(mut stream) => {
                    let info = stream.info().await.map_err(unavailable)?;
                    let row = RoomRow {
                        id: 0,
                        name,
                        topic: info.config.description.clone().unwrap_or_default(),
                        last_id: info.state.last_sequence,
                    };
                    Ok(Some(self.shared.register(row)))
                }
                Err(error) if is_not_found(&error) => Ok(None),
                Err(error) => Err(unavailable(error)),
            }
        })
    }

    fn list_rooms(&self) -> BoxFuture<'_, Result<Vec<RoomRow>, LogError>> {
        Box::pin(async move {
            let mut rows = Vec::new();
            let mut streams = self.shared.js.streams();
            while let Some(info) = streams.try_next().await.map_err(unavailable)? {
                if let Some(name) = info.config.name.strip_prefix(STREAM_PREFIX) {
                    rows.push(self.shared.register(RoomRow {
                        id: 0,
                        name: name.to_owned(),
                        topic: info.config.description.clone().unwrap_or_default(),
                        last_id: info.state.last_sequence,
                    }));
                }
            }
            Ok(rows)
        })
    }

    fn last_id(&self, room: RoomId) -> Option<Arc<AtomicU64>> {
        self.shared.room(room).map(|r| r.last_id)
    }

    fn newest(&self, room: RoomId) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(async move {
            let room = self.shared.room_or_gone(room)?;
            let mut stream = self
                .shared
                .js
                .get_stream(stream_name(&room.name))
                .await
                .map_err(unavailable)?;
            Ok(stream
                .info()
                .await
                .map_err(unavailable)?
                .state
                .last_sequence)
        })
    }

    fn create_room<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<RoomRow, LogError>> {
        Box::pin(async move {
            self.shared.available()?;
            match self.shared.js.get_stream(stream_name(name)).await {
                Ok(_) => return Err(LogError::RoomExists(name.to_owned())),
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
            let config = stream_config(&self.shared.config, name, topic);
            match self.shared.js.create_stream(config).await {
                Ok(_) => {}
                Err(error)
                    if matches!(error.kind(), context::CreateStreamErrorKind::JetStream(e)
                        if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST) =>
                {
                    return Err(LogError::RoomExists(name.to_owned()));
                }
                Err(error) => return Err(unavailable(error)),
            }
            Ok(self.shared.register(RoomRow {
                id: 0,
                name: name.to_owned(),
                topic: topic.to_owned(),
                last_id: 0,
            }))
        })
    }

    fn append(
        &self,
        room: RoomId,
        message: ChatMessage,
    ) -> BoxFuture<'_, Result<ChatMessage, LogError>> {
        Box::pin(async move {
            let room = self.shared.room_or_gone(room)?;
            self.shared.write(&room, None, message).await
        })
    }

    fn append_from<'a>(
        &'a self,
        room: RoomId,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let room = self.shared.room_or_gone(room)?;
            let written = self
                .shared
                .write_queued(&room, origin, message, failure)
                .await;
            if let Err(error) = &written {
                failure.send_replace(Some(error.to_string()));
            }
            written
        })
    }

    fn range(
        &self,
        room: RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, LogError>> {
        Box::pin(async move {
            if upto <= after || limit == 0 {
                return Ok(Vec::new());
            }
            let room = self.shared.room_or_gone(room)?;
            self.shared.read_range(&room.name, after, upto, limit).await
        })
    }

    fn is_available(&self) -> bool {
        self.shared.available().is_ok() && self.shared.starting.load(Ordering::SeqCst) == 0
    }
}

/// Makes sure `general` exists, and lists every room.
async fn rooms_of(js: &context::Context, config: &NatsConfig) -> Result<Vec<RoomRow>, LogError> {
    js.get_or_create_stream(stream_config(config, GENERAL, ""))
        .await
        .map_err(unavailable)?;
    let mut rooms = Vec::new();
    let mut streams = js.streams();
    while let Some(info) = streams.try_next().await.map_err(unavailable)? {
        if let Some(name) = info.config.name.strip_prefix(STREAM_PREFIX) {
            rooms.push(RoomRow {
                id: 0,
                name: name.to_owned(),
                topic: info.config.description.clone().unwrap_or_default(),
                last_id: info.state.last_sequence,
            });
        }
    }
    Ok(rooms)
}

/// The stream that holds `room`.
pub fn stream_name(room: &str) -> String {
    format!("{STREAM_PREFIX}{room}")
}

fn subject(room: &str) -> String {
    format!("chat.{room}")
}

fn stream_config(config: &NatsConfig, room: &str, topic: &str) -> stream::Config {
    let (max_messages, max_age) = match config.retention {
        Retention::Count(n) => (i64::try_from(n).unwrap_or(i64::MAX), Duration::ZERO),
        Retention::Age(age) => (-1, age),
    };
    stream::Config {
        name: stream_name(room),
        description: (!topic.is_empty()).then(|| topic.to_owned()),
        subjects: vec![subject(room)],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_messages,
        max_age,
        allow_direct: true,
        ..Default::default()
    }
}

/// The dedupe key of a message from `name` with `nonce`: the same on every
/// replica, and unambiguous (hex, so no separator can be forged).
fn message_id(name: &str, nonce: &str) -> String {
    let mut id = String::with_capacity(2 * (name.len() + nonce.len()) + 1);
    for byte in name.bytes() {
        id.push_str(&format!("{byte:02x}"));
    }
    id.push('-');
    for byte in nonce.bytes() {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

fn is_not_found(error: &context::GetStreamError) -> bool {
    matches!(error.kind(), context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn unavailable(error: impl fmt::Display) -> LogError {
    LogError::Unavailable(error.to_string())
}

fn random_u64() -> u64 {
    let mut bytes = [0; 8];
    // Falls back to the clock: uniqueness within this process is enough.
    if getrandom::fill(&mut bytes).is_err() {
        return now_millis().unsigned_abs();
    }
    u64::from_le_bytes(bytes)
}

/// A lock whose data stays whole even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
