//! What operators can watch: `GET /metrics` in the Prometheus (OpenMetrics)
//! text format.
//!
//! One [`Metrics`] per server, shared by the parts that count: the accept
//! loop (connections, limits on them), the stream tracker (open streams by
//! kind), the store's writer (messages stored, commit latency), the
//! subscriptions (messages relayed) and the rate limiter. Counting is an
//! atomic add; nothing here takes a lock on the message path.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every limit that can be hit, as it appears in the `kind` label of
/// `chat_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections`: a connection refused at accept.
    Connections,
    /// `--first-request-timeout`: a connection closed before its first request.
    FirstRequestTimeout,
    /// `--idle-timeout`: a connection closed with no stream open.
    IdleTimeout,
    /// `--reset-flood`: a connection ended for cancelling streams without pause.
    ResetFlood,
    /// `--rate-limit`: a `Send` refused.
    RateSend,
    /// `--rate-limit`: a `ChatStream` paused.
    RateStream,
    /// `--rate-limit`: a `Join` refused (names claimed too fast).
    RateJoin,
    /// `--rate-limit`: a `SetTyping` refused.
    RateTyping,
    /// `--rate-limit`: a `CreateRoom` refused (rooms created too fast).
    RateRooms,
    /// A search over `--search-rate`.
    RateSearch,
    /// A message over the size limit.
    MessageSize,
    /// A request without a gRPC content type.
    ContentType,
    /// A call whose `grpc-timeout` ran out.
    Deadline,
    /// `--max-rooms`: a room not created.
    Rooms,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::FirstRequestTimeout => "first_request_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::ResetFlood => "reset_flood",
            Self::RateSend => "rate_send",
            Self::RateStream => "rate_stream",
            Self::RateJoin => "rate_join",
            Self::RateTyping => "rate_typing",
            Self::RateRooms => "rate_rooms",
            Self::RateSearch => "rate_search",
            Self::MessageSize => "message_size",
            Self::ContentType => "content_type",
            Self::Deadline => "deadline",
            Self::Rooms => "rooms",
        }
    }
}

/// The server's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_closed: Counter,
    streams_open: Family<KindLabel, Gauge>,
    messages_stored: Counter,
    messages_relayed: Counter,
    commit_seconds: Histogram,
    store_readers: Gauge,
    store_queue: Gauge,
    log_available: Gauge,
    limit_hits: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chat");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open client connections (TCP)",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "Client connections accepted since start",
            connections_accepted.clone(),
        );
        let connections_closed = Counter::default();
        registry.register(
            "connections_closed",
            "Client connections closed since start",
            connections_closed.clone(),
        );
        let streams_open = Family::<KindLabel, Gauge>::default();
        registry.register(
            "streams_open",
            "Open requests and streams, by kind (subscribe, chat_stream, send, other)",
            streams_open.clone(),
        );
        let messages_stored = Counter::default();
        registry.register(
            "messages_stored",
            "Chat messages durably stored",
            messages_stored.clone(),
        );
        let messages_relayed = Counter::default();
        registry.register(
            "messages_relayed",
            "Chat messages delivered to clients (one per message and receiver)",
            messages_relayed.clone(),
        );
        // 0.25 ms to about 4 s: an fsync on a quiet SSD to a struggling disk.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        registry.register(
            "store_commit_seconds",
            "Time to write and fsync one batch of messages (cluster mode: one write until JetStream acknowledged it)",
            commit_seconds.clone(),
        );
        let store_readers = Gauge::default();
        registry.register(
            "store_readers_open",
            "Open read connections to the message database",
            store_readers.clone(),
        );
        let store_queue = Gauge::default();
        registry.register(
            "store_queue",
            "Messages waiting for the database writer (senders wait past 8,192)",
            store_queue.clone(),
        );
        let log_available = Gauge::default();
        log_available.set(1);
        registry.register(
            "log_available",
            "1 while the message log takes writes; 0 while a replica has lost NATS (cluster mode)",
            log_available.clone(),
        );
        let limit_hits = Family::<KindLabel, Counter>::default();
        registry.register(
            "limit_hits",
            "Times a limit refused, slowed or closed something, by kind",
            limit_hits.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                connections_open,
                connections_accepted,
                connections_closed,
                streams_open,
                messages_stored,
                messages_relayed,
                commit_seconds,
                store_readers,
                store_queue,
                log_available,
                limit_hits,
            }),
        }
    }

    /// The OpenMetrics text for a scrape.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    pub fn connection_opened(&self) {
        self.inner.connections_accepted.inc();
        self.inner.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.inner.connections_open.dec();
        self.inner.connections_closed.inc();
    }

    /// Connections closed since start.
    pub fn connections_closed(&self) -> u64 {
        self.inner.connections_closed.get()
    }

    /// Counts a stream of `kind` as open; returns its gauge, for the caller
    /// to decrement when the stream ends (one label lookup per stream).
    pub fn stream_opened(&self, kind: &'static str) -> Gauge {
        let gauge = self
            .inner
            .streams_open
            .get_or_create(&KindLabel { kind })
            .clone();
        gauge.inc();
        gauge
    }

    pub fn stored(&self, messages: u64, commit_seconds: f64) {
        self.inner.messages_stored.inc_by(messages);
        self.inner.commit_seconds.observe(commit_seconds);
    }

    pub fn relayed(&self, messages: u64) {
        self.inner.messages_relayed.inc_by(messages);
    }

    pub fn store_readers(&self, open: usize) {
        self.inner
            .store_readers
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn store_queue(&self, waiting: usize) {
        self.inner
            .store_queue
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    pub fn log_available(&self, available: bool) {
        self.inner.log_available.set(i64::from(available));
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.inner
            .limit_hits
            .get_or_create(&KindLabel {
                kind: limit.label(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.connection_opened();
        let _open = metrics.stream_opened("subscribe");
        metrics.stored(3, 0.002);
        metrics.limit_hit(Limit::RateSend);
        let text = metrics.render();
        assert!(text.contains("chat_connections_open 1"), "{text}");
        assert!(
            text.contains(r#"chat_streams_open{kind="subscribe"} 1"#),
            "{text}"
        );
        assert!(text.contains("chat_messages_stored_total 3"), "{text}");
        assert!(
            text.contains(r#"chat_limit_hits_total{kind="rate_send"} 1"#),
            "{text}"
        );
        assert!(text.contains("chat_store_commit_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn each_refusal_counts_under_its_own_kind() {
        let metrics = Metrics::new();
        for limit in [
            Limit::RateJoin,
            Limit::RateTyping,
            Limit::RateRooms,
            Limit::RateSearch,
        ] {
            metrics.limit_hit(limit);
        }
        let text = metrics.render();
        for kind in ["rate_join", "rate_typing", "rate_rooms"] {
            assert!(
                text.contains(&format!(r#"chat_limit_hits_total{{kind="{kind}"}} 1"#)),
                "{text}"
            );
        }
        assert!(!text.contains("rate_send"), "{text}");
    }
}
