//! Reports: anyone may point the moderators at a message, once.
//!
//! The open reports are few (moderators close them), so they live in memory
//! on every replica, written through to the ledger; each one that opens is
//! told to the moderators' streams ([`Reports::listen`]). A report closes
//! when a moderator dismisses it or when its message is deleted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chat_proto::Report;
use tokio::sync::broadcast;

use crate::people::name_key::NameKey;

/// Reports a moderator's stream may fall behind by before it is told from
/// the list instead (`ListReports`).
const TOLD_BUFFER: usize = 256;

/// The open reports, by id.
#[derive(Debug)]
pub struct Reports {
    open: Mutex<BTreeMap<u64, Report>>,
    /// Whether `open` has any: deleting a message asks no lock otherwise.
    any: AtomicBool,
    told: broadcast::Sender<Report>,
}

impl Default for Reports {
    fn default() -> Self {
        Self {
            open: Mutex::new(BTreeMap::new()),
            any: AtomicBool::new(false),
            told: broadcast::Sender::new(TOLD_BUFFER),
        }
    }
}

impl Reports {
    /// Holds `report` as open, telling the moderators' streams if it is new
    /// here (in cluster mode a report is seen twice on its own replica).
    pub fn hold(&self, report: Report) {
        let mut open = self.lock();
        if open.insert(report.id, report.clone()).is_none() {
            let _ = self.told.send(report);
        }
        self.any.store(true, Ordering::Release);
    }

    /// The open report `id`, if there is one.
    pub fn get(&self, id: u64) -> Option<Report> {
        self.lock().get(&id).cloned()
    }

    /// Every open report, oldest first.
    pub fn all(&self) -> Vec<Report> {
        self.lock().values().cloned().collect()
    }

    /// The open reports of message `target` in `room`.
    pub fn on(&self, room: &str, target: u64) -> Vec<Report> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.lock()
            .values()
            .filter(|r| r.room == room && r.target == target)
            .cloned()
            .collect()
    }

    /// Closes `room`'s report of `target` by `reporter`.
    pub fn close(&self, room: &str, target: u64, reporter: &NameKey) {
        let mut open = self.lock();
        open.retain(|_, r| {
            !(r.room == room && r.target == target && NameKey::of(&r.username) == *reporter)
        });
        self.any.store(!open.is_empty(), Ordering::Release);
    }

    /// Each report as it opens, for a moderator's stream.
    pub fn listen(&self) -> broadcast::Receiver<Report> {
        self.told.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Report>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u64, target: u64, username: &str) -> Report {
        Report {
            id,
            room: "general".into(),
            target,
            username: username.into(),
            reason: String::new(),
            timestamp: 0,
            message: None,
        }
    }

    #[test]
    fn a_report_is_told_once_and_closes_by_message_and_reporter() {
        let reports = Reports::default();
        let mut told = reports.listen();
        reports.hold(report(1, 10, "Ada"));
        reports.hold(report(1, 10, "Ada"));
        reports.hold(report(2, 10, "Bob"));
        assert_eq!(told.try_recv().map(|r| r.id), Ok(1));
        assert_eq!(told.try_recv().map(|r| r.id), Ok(2));
        assert!(told.try_recv().is_err(), "told twice");
        assert_eq!(reports.on("general", 10).len(), 2);
        reports.close("general", 10, &NameKey::of("ADA"));
        assert_eq!(reports.all(), vec![report(2, 10, "Bob")]);
        assert!(reports.get(1).is_none());
    }
}
