//! What a replica knows of a room's changes, to judge a new change and to
//! read messages back in their current state: for each message that has
//! changes, their fold ([`Fold`]); which ids are changes; and the
//! tombstones of erased entries it has met.
//!
//! A room's index is built when the replica starts following the room, from
//! the room's change subjects (`chat.<room>.c.<target>`: JetStream reads
//! only those), and kept by the follower, which folds each change it hands
//! to the hub before the hub has it. So whatever a subscriber is replayed
//! up to the hub's newest id is shown with at least every change up to
//! that id folded in; a copy with more folded in has a higher `state_id`,
//! and the client skips the changes it already has (`chat_proto::state`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chat_proto::{Change, ChangeKind, ChatMessage, state};
use tokio::sync::watch;

use super::lock;
use crate::log::Entry;
use crate::log::judge::Standing;
use crate::log::{LogError, Refusal};

/// One room's index, shared by its follower (which writes it) and the
/// room's readers and writers.
#[derive(Default)]
pub(super) struct RoomIndex {
    pub(super) known: Mutex<Known>,
    /// The newest id folded in (the follower moves it after each batch);
    /// 0 until the index is built.
    pub(super) folded: watch::Sender<u64>,
    /// Whether the index was built from the room's stream.
    pub(super) built: watch::Sender<bool>,
    /// This replica's changes to the room, one at a time: each is judged
    /// after the one before it is folded in, so they never conflict with
    /// each other (other replicas' may, and are published again).
    pub(super) turn: tokio::sync::Mutex<()>,
}

/// The index proper.
#[derive(Default)]
pub(super) struct Known {
    /// By target message id.
    folds: HashMap<u64, Fold>,
    /// Ids of changes: a change's id is not a message's.
    changes: BTreeSet<u64>,
    /// Erased entries, as they are served in their place.
    tombstones: BTreeMap<u64, Entry>,
}

/// Every change of one message, folded.
#[derive(Default, Clone)]
pub(super) struct Fold {
    /// The newest change's id: the last sequence of the message's change
    /// subject, which the next change is published on condition of.
    pub(super) last: u64,
    /// The changes applied to an empty copy of the message: its text if
    /// edited, whether deleted, its reactions (`chat_proto::state`).
    shown: ChatMessage,
    /// Every (emoji, name) reaction standing, beyond the listed first ones.
    reactors: HashSet<(String, String)>,
    /// Edits: id, time and nonce.
    edits: Vec<(u64, i64, String)>,
    /// The first deletion: id and time.
    deletion: Option<(u64, i64)>,
}

impl Known {
    /// Folds `change` in (once: a change at or below its message's newest
    /// is skipped); `nonce` is an edit's.
    pub(super) fn fold(&mut self, change: &Change, nonce: &str) {
        self.changes.insert(change.id);
        let fold = self.folds.entry(change.target).or_default();
        if change.id <= fold.last {
            return;
        }
        fold.last = change.id;
        if fold.shown.id == 0 {
            fold.shown.id = change.target;
        }
        state::apply(&mut fold.shown, change);
        match change.kind() {
            ChangeKind::ChangeEdit => {
                fold.edits
                    .push((change.id, change.timestamp, nonce.to_owned()));
            }
            ChangeKind::ChangeDelete => {
                fold.deletion.get_or_insert((change.id, change.timestamp));
                fold.reactors.clear();
            }
            ChangeKind::ChangeReact if !fold.shown.deleted => {
                fold.reactors
                    .insert((change.emoji.clone(), change.username.clone()));
            }
            ChangeKind::ChangeUnreact => {
                fold.reactors
                    .remove(&(change.emoji.clone(), change.username.clone()));
            }
            _ => {}
        }
    }

    /// `message`, read back as it was stored, in its current state.
    pub(super) fn show(&self, message: &mut ChatMessage) {
        let Some(fold) = self.folds.get(&message.id) else {
            return;
        };
        let shown = &fold.shown;
        if shown.state_id <= message.state_id {
            return;
        }
        if shown.deleted {
            message.deleted = true;
            message.message.clear();
            message.reactions.clear();
        } else {
            if shown.edited_at != 0 {
                message.message.clone_from(&shown.message);
                message.edited_at = shown.edited_at;
            }
            message.reactions.clone_from(&shown.reactions);
        }
        message.state_id = shown.state_id;
    }

    /// The fold of message `target` (empty if it has no changes).
    pub(super) fn fold_of(&self, target: u64) -> Fold {
        self.folds.get(&target).cloned().unwrap_or_default()
    }

    pub(super) fn is_change(&self, id: u64) -> bool {
        self.changes.contains(&id)
    }

    pub(super) fn tombstone(&self, id: u64) -> Option<Entry> {
        self.tombstones.get(&id).cloned()
    }

    /// The tombstones of erased entries with ids in `from..to`, in order.
    pub(super) fn tombstones_in(&self, from: u64, to: u64) -> Vec<Entry> {
        if from >= to {
            return Vec::new();
        }
        self.tombstones
            .range(from..to)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The ids of erased messages below `to`, newest first.
    pub(super) fn erased_messages_below(&self, to: u64) -> impl Iterator<Item = u64> + '_ {
        self.tombstones
            .range(..to)
            .rev()
            .filter(|(_, e)| matches!(e, Entry::Message(_)))
            .map(|(id, _)| *id)
    }

    pub(super) fn bury(&mut self, entry: Entry) {
        if let Entry::Change(change) = &entry {
            self.changes.insert(change.id);
        }
        self.tombstones.insert(entry.id(), entry);
    }
}

impl RoomIndex {
    pub(super) fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        lock(&self.known)
    }
}

impl Fold {
    /// The ids a deletion of this message erases, with the message's: its
    /// edits (reactions carry no text).
    pub(super) fn edit_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.edits.iter().map(|(id, _, _)| *id)
    }

    /// `message` (as stored) in the state this fold gives it.
    pub(super) fn applied_to(&self, mut message: ChatMessage) -> ChatMessage {
        let mut known = Known::default();
        known.folds.insert(message.id, self.clone());
        known.show(&mut message);
        message
    }
}

impl Standing for Fold {
    fn deletion(&mut self) -> Result<(u64, i64), LogError> {
        self.deletion
            .ok_or(LogError::Refused(Refusal::Deleted(self.shown.id)))
    }

    fn edit_with_nonce(&mut self, nonce: &str) -> Result<Option<(u64, i64)>, LogError> {
        Ok(self
            .edits
            .iter()
            .find(|(_, _, n)| n == nonce)
            .map(|(id, timestamp, _)| (*id, *timestamp)))
    }

    fn has_reacted(&mut self, emoji: &str, username: &str) -> Result<bool, LogError> {
        Ok(self
            .reactors
            .contains(&(emoji.to_owned(), username.to_owned())))
    }
}
