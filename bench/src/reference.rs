//! The reference the chat is measured against: the plainest tonic server
//! that relays the paper's `ChatStream`. One `tokio::sync::broadcast` for
//! the whole server, each message cloned and encoded once per subscriber,
//! nothing stored, nothing validated, no limits. It runs in its own process
//! (`bench --reference-server ADDR`, started by [`crate::server`]) on the
//! same tonic stack as chat-server, so both are measured the same way.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto::ChatMessage;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tonic::{Request, Response, Status, Streaming};

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/.ChatService.rs"));
}
use generated::chat_service_server::{ChatService, ChatServiceServer};

/// Messages a subscriber may lag before the broadcast drops them for it
/// (such a loss shows in the bench's `lost` column).
const CAPACITY: usize = 65_536;

type Outbound = Pin<Box<dyn Stream<Item = Result<ChatMessage, Status>> + Send>>;

struct Relay {
    sender: broadcast::Sender<(u64, ChatMessage)>,
    next_client: AtomicU64,
}

#[tonic::async_trait]
impl ChatService for Relay {
    type ChatStreamStream = Outbound;

    async fn chat_stream(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let me = self.next_client.fetch_add(1, Ordering::Relaxed);
        let mut inbound = request.into_inner();
        let sender = self.sender.clone();
        tokio::spawn(async move {
            while let Some(Ok(mut message)) = inbound.next().await {
                message.timestamp = now_millis();
                // An error only means nobody listens.
                let _ = sender.send((me, message));
            }
        });
        let mut receiver = self.sender.subscribe();
        let outbound = async_stream::stream! {
            loop {
                match receiver.recv().await {
                    Ok((from, message)) if from != me => yield Ok(message),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Serves the reference on `addr` until the process is killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let relay = Relay {
        sender: broadcast::channel(CAPACITY).0,
        next_client: AtomicU64::new(0),
    };
    tonic::transport::Server::builder()
        .add_service(ChatServiceServer::new(relay))
        .serve(addr)
        .await?;
    Ok(())
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
