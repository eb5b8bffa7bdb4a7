//! The SQLite log's read connections: at most [`super::MAX_READERS`], each
//! closed after [`super::READER_IDLE`] unused, and pages bounded in bytes as
//! well as in messages.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::Semaphore;
use tracing::debug;

use super::changes::{ENTRY_COLUMNS, entry};
use super::{Location, MAX_READERS, READER_IDLE};
use crate::log::{LogError, PAGE_BYTES, RoomId, Stored};
use crate::metrics::Metrics;

/// Read connections, opened on demand, reused, and closed when idle.
pub(super) struct Readers {
    pub(super) location: Location,
    /// A `:memory:` database shared by this process's connections.
    pub(super) memory_name: String,
    /// Unused connections, each with when it was last used.
    pub(super) idle: Mutex<Vec<(Connection, Instant)>>,
    /// One per connection that may be open.
    pub(super) permits: Arc<Semaphore>,
    /// Connections open, idle or in use.
    pub(super) open: AtomicUsize,
    pub(super) metrics: Metrics,
}

impl Readers {
    pub(super) fn new(location: Location, metrics: Metrics) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let memory_name = format!(
            "file:/chat-{}-{}?vfs=memdb",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            location,
            memory_name,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
            open: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Closes connections unused for [`READER_IDLE`], now and every few
    /// seconds for as long as the store exists (needs a tokio runtime;
    /// without one, idle connections are closed as readers come and go).
    pub(super) fn close_idle_ones(readers: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let readers = Arc::downgrade(readers);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(READER_IDLE / 4);
            loop {
                every.tick().await;
                let Some(readers) = readers.upgrade() else {
                    return;
                };
                readers.prune_idle();
            }
        });
    }

    pub(super) fn prune_idle(&self) {
        let closed = match self.idle.lock() {
            Ok(mut idle) => {
                let before = idle.len();
                idle.retain(|(_, since)| since.elapsed() < READER_IDLE);
                before - idle.len()
            }
            Err(_) => 0,
        };
        if closed > 0 {
            debug!(closed, "closed idle database readers");
            let open = self.open.fetch_sub(closed, Ordering::SeqCst) - closed;
            self.metrics.store_readers(open);
        }
    }

    pub(super) fn open(&self, read_only: bool) -> Result<Connection, LogError> {
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        flags |= if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let connection = match &self.location {
            Location::File(path) => {
                let c = Connection::open_with_flags(path, flags)?;
                if !read_only {
                    c.pragma_update(None, "journal_mode", "WAL")?;
                    // What a deletion removes is zeroed in the file, not
                    // only marked free.
                    c.pragma_update(None, "secure_delete", "ON")?;
                }
                c
            }
            Location::Memory => Connection::open_with_flags(&self.memory_name, flags)?,
        };
        // An acknowledged message must survive a crash or power loss: fsync
        // on every commit (one per batch, so it stays cheap).
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        Ok(connection)
    }

    /// Called holding a permit, so at most [`MAX_READERS`] connections exist.
    pub(super) fn with_connection<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let connection = match idle {
            Some((c, _)) => c,
            None => {
                let c = self.open(true)?;
                let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
                self.metrics.store_readers(open);
                c
            }
        };
        let rows = read(&connection);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((connection, Instant::now()));
        }
        self.prune_idle();
        rows
    }
}

pub(super) fn read_range(
    connection: &Connection,
    room: RoomId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Stored>, LogError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM messages
         WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        params![room, after, upto, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            Ok(Stored {
                entry: entry(row)?,
                origin: row.get(15)?,
            })
        },
    )?;
    // Stepping stops at the byte budget: later rows are never read.
    let mut page = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let stored = row?;
        if !page.is_empty() && bytes >= PAGE_BYTES {
            break;
        }
        bytes += stored.entry.text_len();
        page.push(stored);
    }
    Ok(page)
}

/// The ids of the newest `count` messages of `room` (not changes), oldest
/// first.
pub(super) fn recent_messages(
    connection: &Connection,
    room: RoomId,
    count: u64,
) -> Result<Vec<u64>, LogError> {
    let mut statement = connection.prepare_cached(
        "SELECT id FROM messages WHERE room = ?1 AND kind = 0 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut ids = statement
        .query_map(
            params![room, i64::try_from(count).unwrap_or(i64::MAX)],
            |row| row.get(0),
        )?
        .collect::<Result<Vec<u64>, _>>()?;
    ids.reverse();
    Ok(ids)
}
