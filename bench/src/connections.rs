//! Idle connections: K gRPC-Web subscribers (one HTTP/1.1 connection each,
//! as browser tabs have) holding their streams open, and what each costs
//! the server in resident memory.

use chat_proto::{ChatEvent, Event, SubscribeRequest};
use futures_util::StreamExt;

use crate::clients;
use crate::server::ServerProcess;

pub struct Outcome {
    pub connections: usize,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl Outcome {
    pub fn bytes_per_connection(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before) / self.connections.max(1) as u64
    }
}

pub async fn run(server: &ServerProcess, connections: usize) -> anyhow::Result<Outcome> {
    let url = server.url();
    let rss_before = server.rss_bytes()?;
    // Connect in parallel batches; hold every stream until measured.
    let opened = futures_util::stream::iter(0..connections)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut client = clients::web(&url)?;
                let mut events = client
                    .subscribe(SubscribeRequest {
                        username: format!("idle{i}"),
                        after_id: 0,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                match events.message().await? {
                    Some(ChatEvent {
                        event: Some(Event::Ready(_)),
                    }) => Ok((client, events)),
                    other => anyhow::bail!("expected Ready, got {other:?}"),
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Let the server settle its buffers before reading its memory.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_after = server.rss_bytes()?;
    drop(opened);
    Ok(Outcome {
        connections,
        rss_before,
        rss_after,
    })
}
