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
//! Each replica also keeps a search index of every room (`search`, fed by
//! `search_feed`): an SQLite FTS5 file of its own, rebuilt from the
//! streams at start.
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, context, kv, stream};
use chat_proto::ChatMessage;
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tracing::info;

mod changes;
mod consume;
mod follow;
mod index;
pub mod patience;
mod read;
mod search;
mod search_feed;
mod write;

use follow::Followed;
use index::RoomIndex;
use search::SearchFile;
use write::random_u64;

use super::{
    ChangeRequest, Changed, LogError, OnCommit, Retention, RoomKey, RoomLog, RoomRow, Stored,
    StreamFailure,
};
use crate::metrics::Metrics;
use crate::search::{Find, Found};

/// Every room's stream is named this, then the room's name.
pub const STREAM_PREFIX: &str = "CHAT_";
/// The room every server has.
const GENERAL: &str = "general";
/// How long a `Send` keeps retrying a write JetStream did not acknowledge
/// (a leader election takes a few seconds), with the same `Nats-Msg-Id`.
const WRITE_PATIENCE: Duration = Duration::from_secs(20);
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
    /// Where this replica keeps its search index (`None`: in memory).
    pub search_db: Option<PathBuf>,
}

/// A connection to the cluster, with the rooms it had, not yet handing
/// messages to anyone ([`Connected::open`] does).
pub struct Connected {
    config: NatsConfig,
    client: async_nats::Client,
    replica: u64,
    js: context::Context,
    erased: kv::Store,
    rooms: Vec<RoomRow>,
    search: Arc<SearchFile>,
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
        let (rooms, erased) = patience::patiently("JetStream", || rooms_of(&js, &config)).await?;
        info!(urls = %config.urls, rooms = rooms.len(), "connected to NATS JetStream");
        let search = Arc::new(SearchFile::open(config.search_db.as_deref())?);
        Ok(Self {
            search,
            config,
            client,
            replica: random_u64(),
            js,
            erased,
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

    /// The log on this connection; each room the hub follows hands what is
    /// read of it to `on_commit`.
    pub fn open(self, on_commit: OnCommit, metrics: Metrics) -> NatsLog {
        let shared = Arc::new(Shared {
            config: self.config,
            client: self.client,
            follow_js: {
                let mut js = self.js.clone();
                js.set_timeout(FOLLOW_REQUEST);
                js
            },
            js: self.js,
            erased: self.erased,
            search: self.search,
            on_commit: Mutex::new(on_commit),
            followed: Mutex::new(HashMap::new()),
            indexes: Mutex::new(HashMap::new()),
            next_room: AtomicI64::new(1),
            replica: self.replica,
            metrics,
            starting: std::sync::atomic::AtomicUsize::new(self.rooms.len()),
            starting_rooms: Mutex::new(self.rooms.iter().map(|r| r.name.clone()).collect()),
            pipelines: Mutex::new(HashMap::new()),
        });
        let log = NatsLog {
            at_open: self
                .rooms
                .into_iter()
                .map(|row| shared.number(row))
                .collect(),
            shared,
        };
        tokio::spawn(Arc::clone(&log.shared).check_followers());
        tokio::spawn(Arc::clone(&log.shared).find_rooms_to_index());
        log
    }
}

/// The JetStream log; see the module header.
pub struct NatsLog {
    shared: Arc<Shared>,
    at_open: Vec<RoomRow>,
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
    /// The tombstones of erased entries ([`changes::ERASED_BUCKET`]).
    erased: kv::Store,
    /// This replica's search index, fed from every room's stream.
    search: Arc<SearchFile>,
    on_commit: Mutex<OnCommit>,
    /// The rooms the hub follows here, by name.
    followed: Mutex<HashMap<Arc<str>, Followed>>,
    /// Each followed room's index of its changes, by name.
    indexes: Mutex<HashMap<Arc<str>, Arc<RoomIndex>>>,
    /// Numbers rooms for the hub (a number per row handed out; the hub keeps
    /// one room per name).
    next_room: AtomicI64,
    /// Tells this process's messages apart from other replicas'.
    replica: u64,
    metrics: Metrics,
    /// Rooms found at start whose consumer is not open yet: until it is,
    /// the replica reports itself unavailable, so a load balancer sends
    /// nobody to a replica that would make them wait.
    starting: std::sync::atomic::AtomicUsize,
    /// The rooms found at start not followed yet.
    starting_rooms: Mutex<HashSet<String>>,
    /// Each `ChatStream` connection's publisher, by origin.
    pipelines: Mutex<HashMap<u64, mpsc::Sender<jetstream::message::PublishMessage>>>,
}

impl Shared {
    /// `row` with a number of this process's for the hub to know it by.
    fn number(&self, row: RoomRow) -> RoomRow {
        RoomRow {
            id: self.next_room.fetch_add(1, Ordering::Relaxed),
            ..row
        }
    }

    /// The index of `room`'s changes, if this replica follows it.
    fn index(&self, room: &str) -> Option<Arc<RoomIndex>> {
        lock(&self.indexes).get(room).cloned()
    }

    /// The same; a room not followed here is one this replica cannot serve
    /// yet.
    fn index_of(&self, room: &str) -> Result<Arc<RoomIndex>, LogError> {
        self.index(room).ok_or_else(|| {
            LogError::Unavailable(format!("this replica does not follow room {room} yet"))
        })
    }

    /// The newest id of `room`, as the stream's leader has it.
    async fn newest_id(&self, room: &str) -> Result<u64, LogError> {
        Ok(self.stream_state(room).await?.last_sequence)
    }

    /// `room`'s stream as its leader has it.
    async fn stream_state(&self, room: &str) -> Result<stream::State, LogError> {
        let mut stream = self
            .js
            .get_stream(stream_name(room))
            .await
            .map_err(unavailable)?;
        Ok(stream.info().await.map_err(unavailable)?.state.clone())
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
}

impl RoomLog for NatsLog {
    fn rooms_at_open(&self) -> Vec<RoomRow> {
        self.at_open.clone()
    }

    fn find_room(&self, name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, LogError>> {
        let name = name.to_owned();
        Box::pin(async move {
            match self.shared.js.get_stream(stream_name(&name)).await {
                Ok(mut stream) => {
                    let info = stream.info().await.map_err(unavailable)?.clone();
                    let row = room_row(&self.shared.js, &info).await?;
                    Ok(row.map(|row| self.shared.number(row)))
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
                if let Some(row) = room_row(&self.shared.js, &info).await? {
                    rows.push(self.shared.number(row));
                }
            }
            Ok(rows)
        })
    }

    fn follow(&self, room: &RoomKey, handed: Arc<AtomicU64>) {
        self.shared.follow_room(room, handed);
        self.shared.index_room(&room.name);
    }

    fn newest<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(self.shared.newest_id(&room.name))
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
            Ok(self.shared.number(RoomRow {
                id: 0,
                name: name.to_owned(),
                topic: topic.to_owned(),
                last_id: 0,
                last_message_id: 0,
            }))
        })
    }

    fn append<'a>(
        &'a self,
        room: &'a RoomKey,
        message: ChatMessage,
    ) -> BoxFuture<'a, Result<ChatMessage, LogError>> {
        Box::pin(self.shared.write(&room.name, None, message))
    }

    fn append_from<'a>(
        &'a self,
        room: &'a RoomKey,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let written = self
                .shared
                .write_queued(&room.name, origin, message, failure)
                .await;
            if let Err(error) = &written {
                failure.send_replace(Some(error.to_string()));
            }
            written
        })
    }

    fn change<'a>(
        &'a self,
        room: &'a RoomKey,
        change: ChangeRequest,
    ) -> BoxFuture<'a, Result<Changed, LogError>> {
        Box::pin(self.shared.change(room, change))
    }

    /// The newest ids that are not changes, as the room's index knows them
    /// once it has folded in every id up to the newest.
    fn recent_messages<'a>(
        &'a self,
        room: &'a RoomKey,
        count: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            let index = self.shared.index_of(&room.name)?;
            let state = self.shared.stream_state(&room.name).await?;
            self.shared.wait_built(&index).await?;
            self.shared.wait_folded(&index, state.last_sequence).await?;
            let known = index.known();
            // Erased messages below the stream's first id count too.
            let mut ids: Vec<u64> = (state.first_sequence.max(1)..=state.last_sequence)
                .rev()
                .filter(|&id| !known.is_change(id))
                .chain(known.erased_messages_below(state.first_sequence))
                .take(usize::try_from(count).unwrap_or(usize::MAX))
                .collect();
            ids.reverse();
            Ok(ids)
        })
    }

    fn search<'a>(&'a self, find: &'a Find) -> BoxFuture<'a, Result<Vec<Found>, LogError>> {
        Box::pin(self.shared.search.find(find.clone()))
    }

    fn range<'a>(
        &'a self,
        room: &'a RoomKey,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, LogError>> {
        Box::pin(async move {
            if upto <= after || limit == 0 {
                return Ok(Vec::new());
            }
            self.shared.read_range(&room.name, after, upto, limit).await
        })
    }

    fn is_available(&self) -> bool {
        self.shared.available().is_ok() && self.shared.starting.load(Ordering::SeqCst) == 0
    }
}

/// Makes sure `general` and the tombstones' bucket exist, gives every
/// room's stream the subjects of changes (streams from before changes
/// existed have only the messages'), and lists every room.
async fn rooms_of(
    js: &context::Context,
    config: &NatsConfig,
) -> Result<(Vec<RoomRow>, kv::Store), LogError> {
    js.get_or_create_stream(stream_config(config, GENERAL, ""))
        .await
        .map_err(unavailable)?;
    let erased = js
        .create_or_update_key_value(kv::Config {
            bucket: changes::ERASED_BUCKET.to_owned(),
            description: "Tombstones of deleted chat messages and their edits, by room and id"
                .to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let mut rooms = Vec::new();
    let mut infos = Vec::new();
    let mut streams = js.streams();
    while let Some(info) = streams.try_next().await.map_err(unavailable)? {
        infos.push(info);
    }
    for info in infos {
        let Some(name) = info.config.name.strip_prefix(STREAM_PREFIX) else {
            continue;
        };
        let subjects = subjects(name);
        if info.config.subjects != subjects {
            let config = stream::Config {
                subjects,
                ..info.config.clone()
            };
            js.update_stream(config).await.map_err(unavailable)?;
            info!(room = name, "the room's stream now takes changes too");
        }
        rooms.extend(room_row(js, &info).await?);
    }
    Ok((rooms, erased))
}

/// The row of the room `info` describes (`None` if it is not a room's
/// stream).
async fn room_row(js: &context::Context, info: &stream::Info) -> Result<Option<RoomRow>, LogError> {
    let Some(name) = info.config.name.strip_prefix(STREAM_PREFIX) else {
        return Ok(None);
    };
    let stream = js
        .get_stream(&info.config.name)
        .await
        .map_err(unavailable)?;
    let last_message_id = match stream.get_last_raw_message_by_subject(&subject(name)).await {
        Ok(message) => message.sequence,
        Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
        Err(error) => return Err(unavailable(error)),
    };
    Ok(Some(RoomRow {
        id: 0,
        name: name.to_owned(),
        topic: info.config.description.clone().unwrap_or_default(),
        last_id: info.state.last_sequence,
        last_message_id,
    }))
}

/// The stream that holds `room`.
pub fn stream_name(room: &str) -> String {
    format!("{STREAM_PREFIX}{room}")
}

/// The subject of `room`'s messages.
fn subject(room: &str) -> String {
    format!("chat.{room}")
}

/// The subjects of `room`'s stream: its messages', and its changes' (one
/// subject per message changed, `changes::change_subject`).
fn subjects(room: &str) -> Vec<String> {
    vec![subject(room), format!("chat.{room}.c.*")]
}

fn stream_config(config: &NatsConfig, room: &str, topic: &str) -> stream::Config {
    let (max_messages, max_age) = match config.retention {
        Retention::Count(n) => (i64::try_from(n).unwrap_or(i64::MAX), Duration::ZERO),
        Retention::Age(age) => (-1, age),
    };
    stream::Config {
        name: stream_name(room),
        description: (!topic.is_empty()).then(|| topic.to_owned()),
        subjects: subjects(room),
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_messages,
        max_age,
        allow_direct: true,
        ..Default::default()
    }
}

fn is_not_found(error: &context::GetStreamError) -> bool {
    matches!(error.kind(), context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn unavailable(error: impl fmt::Display) -> LogError {
    LogError::Unavailable(error.to_string())
}

/// A lock whose data stays whole even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
