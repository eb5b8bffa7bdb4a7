//! Opening what the server serves, by mode: on one machine, the SQLite log
//! and names held in this process; in cluster mode, the NATS JetStream log,
//! presence shared with the other replicas, and names claimed cluster-wide.
//! Either way the rest of the server gets a [`Hub`], [`Names`] and
//! [`Moderation`], and never asks which mode it is in.

use std::sync::Arc;
use std::time::Duration;

use super::{ServeError, presence_nats};
use crate::config::Config;
use crate::hub::{Buffer, Hub};
use crate::log::nats::{self, NatsConfig};
use crate::log::{LogError, RoomLog};
use crate::metrics::Metrics;
use crate::moderation::nats::NatsLedger;
use crate::moderation::sqlite::SqliteLedger;
use crate::moderation::{Ledger, Moderation, ModerationError};
use crate::people::claims::Claims;
use crate::people::claims_nats::SharedClaims;
use crate::people::names::Names;

/// The hub on the configured log, the names facade and moderation for the
/// mode.
pub async fn open(config: &Config) -> Result<(Hub, Names, Arc<Moderation>), ServeError> {
    let buffer = Buffer {
        messages: config.buffer,
        mib: config.buffer_mib,
    };
    let claims = Claims::new(Duration::from_secs(config.name_grace));
    match &config.nats {
        None => {
            let hub = Hub::open(
                config.db.clone(),
                config.retain,
                buffer,
                config.history,
                Metrics::new(),
            )
            .map_err(|source| ServeError::Store {
                db: config.db.to_string(),
                source,
            })?;
            // Moderation is kept beside the messages, in the same file.
            let ledger = SqliteLedger::open(&config.db).map_err(ModerationError::from)?;
            let moderation =
                Moderation::open(Ledger::Sqlite(Arc::new(ledger)), config.address_ban).await?;
            Ok((hub, Names::local(claims), moderation))
        }
        Some(urls) => cluster(config, urls, buffer, claims).await,
    }
}

/// Cluster mode: every replica on the same NATS JetStream cluster.
async fn cluster(
    config: &Config,
    urls: &str,
    buffer: Buffer,
    claims: Arc<Claims>,
) -> Result<(Hub, Names, Arc<Moderation>), ServeError> {
    let failed = |source: LogError| ServeError::Store {
        db: urls.to_owned(),
        source,
    };
    let unavailable = |error: String| failed(LogError::Unavailable(error));
    let connected = nats::Connected::connect(NatsConfig {
        urls: urls.to_owned(),
        replicas: usize::from(config.nats_replicas),
        retention: config.retain,
        search_db: config.search_db.clone(),
    })
    .await
    .map_err(failed)?;
    let (client, replica) = (connected.client(), connected.replica());
    let hub = Hub::open_log(
        |on_commit, metrics| Ok(Arc::new(connected.open(on_commit, metrics)) as Arc<dyn RoomLog>),
        buffer,
        config.history,
        Metrics::new(),
    )
    .map_err(failed)?;
    presence_nats::start(client.clone(), hub.clone(), replica)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let ledger = NatsLedger::open(client.clone(), usize::from(config.nats_replicas))
        .await
        .map_err(|e| unavailable(e.clone()))?;
    let moderation = Moderation::open(Ledger::Nats(Arc::new(ledger)), config.address_ban).await?;
    let shared = SharedClaims::open(
        client,
        usize::from(config.nats_replicas),
        Arc::clone(&claims),
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    Ok((hub, Names::shared(claims, shared), moderation))
}
