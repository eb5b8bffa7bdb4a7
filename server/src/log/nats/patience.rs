//! Waiting for a cluster that is starting.
//!
//! A NATS cluster that has just started, or is electing a leader, answers
//! JetStream requests only after a while, and on a busy machine that while
//! can outlast one request's timeout. A replica that is starting waits for
//! it (saying so in the log) rather than failing its start: everything it
//! opens on JetStream at start goes through [`patiently`].

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// How long a replica that is starting waits for JetStream to answer.
pub const START_PATIENCE: Duration = Duration::from_secs(60);

/// Pause between two attempts.
const AGAIN_AFTER: Duration = Duration::from_millis(500);

/// Runs `attempt` until it succeeds or [`START_PATIENCE`] has passed (then
/// the last error); `what` names what is waited for in the log.
pub async fn patiently<T, E, F>(what: &str, mut attempt: impl FnMut() -> F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if Instant::now() + AGAIN_AFTER < deadline => {
                warn!(%error, "{what} is not ready yet; waiting");
                tokio::time::sleep(AGAIN_AFTER).await;
            }
            Err(error) => return Err(error),
        }
    }
}
