//! Indexing, for search, the history a database had before it had the
//! index. The migration notes each room's messages still to do; a task
//! started with the store asks the writer for one slice at a time (newest
//! first, so recent history is found first), between the batches it
//! writes anyway, so the server serves as usual while it runs, and says in
//! the log how far it got.
//!
//! What is written from then on is indexed in the writer's own
//! transactions (`writer`, `changes`), not here.

use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::writer::{Backfilled, Job, Writer};
use crate::log::LogError;
use crate::search::index::{self, Keys};

/// Messages indexed in one slice: small, so a live batch waits little.
const SLICE: u64 = 500;
/// How often progress is logged.
const REPORT_EVERY: Duration = Duration::from_secs(5);

impl Writer {
    /// Indexes the newest [`SLICE`] messages still to do of one room.
    pub(super) fn backfill(&mut self) -> Result<Backfilled, LogError> {
        // Immediate, as the writer's batches are (see `Writer::write`).
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: Option<(i64, u64)> = transaction
            .query_row(
                "SELECT room, below FROM search_backfill LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((room, below)) = next else {
            return Ok(Backfilled {
                indexed: 0,
                done: true,
            });
        };
        let mut lowest = below;
        let mut indexed = 0;
        {
            let mut messages = transaction.prepare_cached(
                "SELECT id, timestamp, username, message FROM messages
                 WHERE room = ?1 AND id < ?2 AND kind = 0 AND deleted = 0
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let mut rows = messages.query(params![room, below, SLICE])?;
            while let Some(row) = rows.next()? {
                let id: u64 = row.get(0)?;
                let text: String = row.get(3)?;
                index::put(
                    &transaction,
                    Keys::InMessages,
                    room,
                    id,
                    row.get(1)?,
                    &row.get::<_, String>(2)?,
                    &text,
                )?;
                lowest = id;
                indexed += 1;
            }
        }
        if indexed < SLICE {
            transaction.execute("DELETE FROM search_backfill WHERE room = ?1", [room])?;
        } else {
            transaction.execute(
                "UPDATE search_backfill SET below = ?2 WHERE room = ?1",
                params![room, lowest],
            )?;
        }
        transaction.commit()?;
        Ok(Backfilled {
            indexed,
            done: false,
        })
    }
}

/// Asks the writer for slice after slice until the history is indexed,
/// logging progress; `total` is what there was to do at start.
pub(super) async fn backfill(queue: mpsc::Sender<Job>, total: u64) {
    if total > 0 {
        info!(messages = total, "indexing the existing history for search");
    }
    let started = Instant::now();
    let mut reported = Instant::now();
    let mut indexed = 0;
    loop {
        let (reply, replied) = oneshot::channel();
        if queue.send(Job::Backfill { reply }).await.is_err() {
            return;
        }
        match replied.await {
            Ok(Ok(Backfilled { done: true, .. })) => break,
            Ok(Ok(slice)) => indexed += slice.indexed,
            Ok(Err(err)) => {
                warn!(error = %err, indexed, "indexing the history for search stopped");
                return;
            }
            // The store is closing.
            Err(_) => return,
        }
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            info!(indexed, of = total, "indexing the history for search");
        }
    }
    if total > 0 {
        info!(
            indexed,
            seconds = started.elapsed().as_secs_f64(),
            "the history is indexed for search"
        );
    }
}
