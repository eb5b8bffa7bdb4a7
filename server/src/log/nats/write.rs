//! Writing to a room's stream: a `Send` publishes and waits for
//! JetStream's acknowledgement, retrying with the same `Nats-Msg-Id`
//! through a leader election; each `ChatStream` connection has one ordered
//! publisher with many writes in flight ([`Shared::pipeline`]).

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context};
use bytes::Bytes;
use chat_proto::ChatMessage;
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    ACK_WAIT, ORIGIN_HEADER, PIPELINE_QUEUE, PIPELINE_WINDOW, Shared, WRITE_PATIENCE, lock, subject,
};
use crate::log::{LogError, StreamFailure, now_millis};

impl Shared {
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
    pub(super) async fn write_queued(
        self: &Arc<Self>,
        room: &str,
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
                    subject(room),
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

    /// Publishes `message` and waits for JetStream's acknowledgement,
    /// retrying with the same message id through a leader election.
    pub(super) async fn write(
        &self,
        room: &str,
        origin: Option<u64>,
        message: ChatMessage,
    ) -> Result<ChatMessage, LogError> {
        self.available()?;
        let (message, publish) = self.prepare(origin, message);
        let ack = self
            .publish_acked(&subject(room), publish)
            .await
            .map_err(LogError::Unavailable)?;
        if ack.duplicate {
            // A retry: answer with the copy that was stored.
            return Ok(self
                .stored(room, ack.sequence)
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

/// The dedupe key of a message from `name` with `nonce`: the same on every
/// replica, and unambiguous (hex, so no separator can be forged).
pub(super) fn message_id(name: &str, nonce: &str) -> String {
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

pub(super) fn random_u64() -> u64 {
    let mut bytes = [0; 8];
    // Falls back to the clock: uniqueness within this process is enough.
    if getrandom::fill(&mut bytes).is_err() {
        return now_millis().unsigned_abs();
    }
    u64::from_le_bytes(bytes)
}
