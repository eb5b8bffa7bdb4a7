//! Ephemeral pull consumers of our own, read as message streams: what the
//! follower, the index builder and history reads all use to read a room's
//! stream (like async-nats's ordered consumer, with a heartbeat every
//! second, so a consumer lost with its stream's leader is noticed in
//! seconds, not the ordered consumer's 30).

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::{CONSUMER_IDLE, unavailable};
use crate::log::LogError;

/// Messages of `stream` from id `start` on, from an ephemeral consumer of
/// our own (like an ordered consumer, but with a heartbeat every second: a
/// consumer lost with its stream's leader is noticed in seconds, not the
/// ordered consumer's 30).
pub(super) async fn consume_from(
    stream: &stream::Stream,
    start: u64,
) -> Result<consumer::pull::Stream, LogError> {
    let from = consumer::DeliverPolicy::ByStartSequence {
        start_sequence: start,
    };
    consume(stream, from, String::new()).await
}

/// Messages of `stream` on `subjects` (empty: all) from `from` on, from an
/// ephemeral consumer of our own, as [`consume_from`] says.
pub(super) async fn consume(
    stream: &stream::Stream,
    from: consumer::DeliverPolicy,
    subjects: String,
) -> Result<consumer::pull::Stream, LogError> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: from,
            filter_subject: subjects,
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
