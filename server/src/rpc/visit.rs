//! A log line when a stream's client arrives, and one when it leaves,
//! whatever ends the stream.

use std::sync::{Arc, OnceLock};

use tracing::info;

use crate::http::client_addr::ClientAddr;

/// Logs a client's arrival and, when its stream is dropped for whatever
/// reason, its departure.
pub(super) struct Visit {
    rpc: &'static str,
    /// ChatStream clients only say who they are in their first message.
    username: Arc<OnceLock<String>>,
    client: Option<String>,
}

impl Visit {
    pub(super) fn new(
        rpc: &'static str,
        username: Option<String>,
        client: Option<ClientAddr>,
    ) -> Self {
        let client = client.map(|c| c.to_string());
        info!(
            rpc,
            username = username.as_deref(),
            client,
            "client connected"
        );
        Self {
            rpc,
            username: Arc::new(username.map(OnceLock::from).unwrap_or_default()),
            client,
        }
    }

    /// Where the name goes once the client says it.
    pub(super) fn name_slot(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.username)
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        info!(
            rpc = self.rpc,
            username = self.username.get().map(String::as_str),
            client = self.client,
            "client disconnected"
        );
    }
}
