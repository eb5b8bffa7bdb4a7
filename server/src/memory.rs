//! Giving memory back to the system once a crowd has left.
//!
//! A burst of readers (thousands of streams replaying history) allocates
//! hundreds of megabytes across the runtime's threads. When they disconnect,
//! glibc's malloc keeps the freed memory in its per-thread arenas for reuse,
//! so the process stays at its peak for good. Every few seconds, if
//! connections have closed since the last look, the server asks malloc to
//! return its free pages (`malloc_trim`), from a blocking thread so no
//! request waits on it. Measured with `bench --memory`, see
//! docs/benchmarks.md. (mimalloc was tried first: it kept most of a
//! 10,000-reader burst as well.)

use std::time::Duration;

use crate::metrics::Metrics;

/// How often the server checks whether connections have closed.
const EVERY: Duration = Duration::from_secs(5);

/// Starts the trimming task on the current runtime; it ends with it.
pub fn give_back_after_bursts(metrics: Metrics) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closed_before = metrics.connections_closed();
        loop {
            every.tick().await;
            let closed = metrics.connections_closed();
            if closed != closed_before {
                closed_before = closed;
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and releases malloc's own free lists;
    // it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
