//! Presence: what people cost the server, and what one arrival costs each
//! stream.
//!
//! K people arrive, as browsers do: each on its own gRPC-Web connection
//! claims a name with `Join` and opens `Subscribe` with the session, so it
//! is present and hears everyone else arrive. Then, with all K settled, one
//! more person joins and leaves again. Reported:
//!
//! - arrival: how long until every stream sees all K, the server's CPU time
//!   and resident memory (per person: compare the `connections` scenario's
//!   listeners, who are not present), and how many presence events each
//!   stream got (a stream that falls behind gets waiting changes folded
//!   into one event, so this stays far below K);
//! - one join and one leave in the settled room: the events each stream got
//!   for it (one), the largest of them in bytes (a name, never the list),
//!   and how long until every stream had it (a leave is announced after the
//!   server's few seconds of grace for reloads).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{ChatEvent, Event, JoinRequest, SubscribeRequest};
use futures_util::StreamExt;
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Request, Streaming};

use crate::clients;
use crate::report::Row;
use crate::server::ServerProcess;

/// How long everyone may take to see a change before the run fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// Presence events seen by the streams since the last reset.
#[derive(Default)]
struct Tally {
    events: AtomicU64,
    bytes: AtomicU64,
    largest: AtomicU64,
}

impl Tally {
    fn note(&self, bytes: u64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.largest.fetch_max(bytes, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64, u64) {
        (
            self.events.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
            self.largest.swap(0, Ordering::Relaxed),
        )
    }
}

pub struct Outcome {
    pub people: usize,
    pub arrive: Duration,
    pub arrive_cpu: Duration,
    pub rss_before: u64,
    pub rss_after: u64,
    pub arrive_events: u64,
    pub arrive_bytes: u64,
    pub join_seen: Duration,
    pub join_events: u64,
    pub join_largest: u64,
    pub leave_seen: Duration,
    pub leave_events: u64,
    pub leave_largest: u64,
}

impl Outcome {
    pub fn row(&self) -> Row {
        let k = self.people.max(1) as f64;
        Row::new("presence")
            .num("people", self.people)
            .num("arrive_s", format!("{:.1}", self.arrive.as_secs_f64()))
            .num(
                "server_cpu_s",
                format!("{:.1}", self.arrive_cpu.as_secs_f64()),
            )
            .num(
                "rss_mib",
                format!("{:.1}", self.rss_after as f64 / 1_048_576.0),
            )
            .num(
                "bytes_per_person",
                self.rss_after.saturating_sub(self.rss_before) / self.people.max(1) as u64,
            )
            .num(
                "arrive_events_per_stream",
                format!("{:.1}", self.arrive_events as f64 / k),
            )
            .num(
                "arrive_kib_per_stream",
                format!("{:.1}", self.arrive_bytes as f64 / k / 1024.0),
            )
            .num(
                "join_events_per_stream",
                format!("{:.2}", self.join_events as f64 / k),
            )
            .num("join_event_bytes_max", self.join_largest)
            .num(
                "join_seen_ms",
                format!("{:.0}", self.join_seen.as_secs_f64() * 1e3),
            )
            .num(
                "leave_events_per_stream",
                format!("{:.2}", self.leave_events as f64 / k),
            )
            .num("leave_event_bytes_max", self.leave_largest)
            .num(
                "leave_seen_s",
                format!("{:.1}", self.leave_seen.as_secs_f64()),
            )
    }

    /// A join or leave that cost a stream more than one event, or an event
    /// bigger than a few names, is a regression to a full list.
    pub fn problem(&self) -> Option<String> {
        let k = self.people as u64;
        let small = 256;
        if self.join_events != k || self.leave_events != k {
            return Some(format!(
                "one join gave {} events on {k} streams, one leave {}",
                self.join_events, self.leave_events
            ));
        }
        if self.join_largest > small || self.leave_largest > small {
            return Some(format!(
                "a join or leave event of {} / {} bytes: a list, not a name",
                self.join_largest, self.leave_largest
            ));
        }
        None
    }
}

/// One present person: a name claimed and its session's stream, past
/// `Ready`.
async fn present(url: String, name: String) -> anyhow::Result<Streaming<ChatEvent>> {
    let mut client = clients::web(&url)?;
    let session = client
        .join(JoinRequest {
            username: name,
            token: String::new(),
            ..Default::default()
        })
        .await
        .context("join")?
        .into_inner();
    let mut request = Request::new(SubscribeRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", session.token).parse()?,
    );
    let mut events = client.subscribe(request).await?.into_inner();
    match events.message().await? {
        Some(ChatEvent {
            event: Some(Event::Ready(_)),
        }) => {}
        other => bail!("expected Ready, got {other:?}"),
    }
    Ok(events)
}

/// Reads a stream, keeping `online` (how many people it says are here) and
/// the tally.
async fn read(mut events: Streaming<ChatEvent>, online: Arc<AtomicI64>, tally: Arc<Tally>) {
    let mut first = true;
    while let Ok(Some(event)) = events.message().await {
        let Some(Event::Presence(presence)) = event.event else {
            continue;
        };
        tally.note(presence.encoded_len() as u64);
        if first || !presence.online.is_empty() {
            first = false;
            online.store(presence.online.len() as i64, Ordering::Relaxed);
        }
        let change = presence.joined.len() as i64 - presence.left.len() as i64;
        online.fetch_add(change, Ordering::Relaxed);
    }
}

/// Waits until every stream says `want` people are here.
async fn settle(counts: &[Arc<AtomicI64>], want: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if counts
            .iter()
            .all(|c| c.load(Ordering::Relaxed) == want as i64)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > SETTLE_LIMIT {
            let behind = counts
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) != want as i64)
                .count();
            bail!(
                "{behind} of {} streams never saw {want} people",
                counts.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(server: &ServerProcess, people: usize) -> anyhow::Result<Outcome> {
    let url = server.url();
    let tally = Arc::new(Tally::default());
    let counts: Vec<_> = (0..people).map(|_| Arc::new(AtomicI64::new(-1))).collect();
    let mut readers = JoinSet::new();
    let rss_before = server.rss_bytes()?;
    let cpu_before = server.cpu_time()?;

    let start = Instant::now();
    let mut arrivals = futures_util::stream::iter(0..people)
        .map(|i| {
            let url = url.clone();
            async move { (i, present(url, format!("person{i}")).await) }
        })
        .buffer_unordered(64);
    while let Some((i, stream)) = arrivals.next().await {
        readers.spawn(read(stream?, Arc::clone(&counts[i]), Arc::clone(&tally)));
    }
    drop(arrivals);
    settle(&counts, people).await?;
    let arrive = start.elapsed();
    let arrive_cpu = server.cpu_time()? - cpu_before;
    let (arrive_events, arrive_bytes, _) = tally.take();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_bytes()?;

    // One more, in a settled room.
    let newcomer = present(url, "newcomer".into()).await?;
    let join_seen = settle(&counts, people + 1).await?;
    let (join_events, _, join_largest) = tally.take();
    // Gone without a word, as a closed tab is.
    drop(newcomer);
    let leave_seen = settle(&counts, people).await?;
    // Anything else in flight (there should be nothing) lands in the tally.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (leave_events, _, leave_largest) = tally.take();
    readers.shutdown().await;

    Ok(Outcome {
        people,
        arrive,
        arrive_cpu,
        rss_before,
        rss_after,
        arrive_events,
        arrive_bytes,
        join_seen,
        join_events,
        join_largest,
        leave_seen,
        leave_events,
        leave_largest,
    })
}
