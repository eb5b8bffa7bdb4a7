//! How a message's current state follows from its changes: the one rule
//! the server (which folds each change into the copy it stores and relays)
//! and every client (which applies what arrives to the copy it shows)
//! share, so that all of them end in the same state.
//!
//! A change counts once: only if its id is above the copy's `state_id`. So
//! a copy that already has a change folded in (it came in its current
//! state, after the change) ignores the change when it arrives, and a copy
//! that missed changes catches up by applying the later ones in id order.

use crate::rules::MAX_REACTORS_LISTED;
use crate::{Change, ChangeKind, ChatMessage, Reaction};

/// Applies `change` to `message` if it is about `message` and newer than
/// what the copy has folded in; returns whether it did.
pub fn apply(message: &mut ChatMessage, change: &Change) -> bool {
    if change.target != message.id || change.id <= message.state_id {
        return false;
    }
    match change.kind() {
        ChangeKind::ChangeEdit if !message.deleted => {
            message.message.clone_from(&change.message);
            message.edited_at = change.timestamp;
        }
        ChangeKind::ChangeDelete => {
            message.deleted = true;
            message.message.clear();
            message.reactions.clear();
        }
        ChangeKind::ChangeReact if !message.deleted => {
            react(&mut message.reactions, &change.emoji, &change.username);
        }
        ChangeKind::ChangeUnreact if !message.deleted => {
            unreact(&mut message.reactions, &change.emoji, &change.username);
        }
        // An edit or a reaction that raced a deletion, or a kind this
        // build does not know: nothing to show, but the copy has seen it.
        _ => {}
    }
    message.state_id = change.id;
    true
}

/// Replaces `copy` with `newer`, a copy of the same message that arrived
/// again (a replay), unless `newer` has folded in less than `copy`.
pub fn refresh(copy: &mut ChatMessage, newer: ChatMessage) -> bool {
    if newer.id != copy.id || newer.state_id < copy.state_id {
        return false;
    }
    *copy = newer;
    true
}

/// Whether `username` reacted with `emoji` to `message` (by the copy's list:
/// exact for the first reactors, see [`MAX_REACTORS_LISTED`]).
pub fn reacted(message: &ChatMessage, emoji: &str, username: &str) -> bool {
    message
        .reactions
        .iter()
        .any(|r| r.emoji == emoji && r.usernames.iter().any(|u| u == username))
}

fn react(reactions: &mut Vec<Reaction>, emoji: &str, username: &str) {
    match reactions.iter_mut().find(|r| r.emoji == emoji) {
        Some(reaction) => {
            reaction.count = reaction.count.saturating_add(1);
            if reaction.usernames.len() < MAX_REACTORS_LISTED {
                reaction.usernames.push(username.to_owned());
            }
        }
        None => reactions.push(Reaction {
            emoji: emoji.to_owned(),
            count: 1,
            usernames: vec![username.to_owned()],
        }),
    }
}

fn unreact(reactions: &mut Vec<Reaction>, emoji: &str, username: &str) {
    let Some(at) = reactions.iter().position(|r| r.emoji == emoji) else {
        return;
    };
    let reaction = &mut reactions[at];
    reaction.count = reaction.count.saturating_sub(1);
    reaction.usernames.retain(|u| u != username);
    if reaction.count == 0 {
        // Gone from the list, and its place under the cap is free again.
        reactions.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            username: "ada".into(),
            message: text.into(),
            timestamp: 1_000,
            ..Default::default()
        }
    }

    fn change(id: u64, target: u64, kind: ChangeKind, who: &str, text: &str) -> Change {
        let mut change = Change {
            id,
            target,
            username: who.into(),
            timestamp: 1_000 + i64::try_from(id).unwrap_or(0),
            ..Default::default()
        };
        change.set_kind(kind);
        match kind {
            ChangeKind::ChangeEdit => change.message = text.into(),
            _ => change.emoji = text.into(),
        }
        change
    }

    #[test]
    fn an_edit_replaces_the_text_and_stamps_it() {
        let mut m = message(1, "helo");
        assert!(apply(
            &mut m,
            &change(2, 1, ChangeKind::ChangeEdit, "ada", "hello")
        ));
        assert_eq!(
            (m.message.as_str(), m.edited_at, m.state_id),
            ("hello", 1_002, 2)
        );
    }

    #[test]
    fn a_change_counts_once_and_only_for_its_message() {
        let mut m = message(1, "hi");
        let react = change(2, 1, ChangeKind::ChangeReact, "bob", "👍");
        assert!(apply(&mut m, &react));
        assert!(!apply(&mut m, &react), "seen twice");
        assert!(!apply(
            &mut m,
            &change(3, 7, ChangeKind::ChangeReact, "bob", "👍")
        ));
        assert_eq!(m.reactions[0].count, 1);
    }

    #[test]
    fn reactions_keep_the_order_first_added_and_leave_at_zero() {
        let mut m = message(1, "hi");
        let kinds = [
            (2, ChangeKind::ChangeReact, "bob", "👍"),
            (3, ChangeKind::ChangeReact, "cy", "🎉"),
            (4, ChangeKind::ChangeReact, "cy", "👍"),
            (5, ChangeKind::ChangeUnreact, "bob", "👍"),
            (6, ChangeKind::ChangeUnreact, "cy", "🎉"),
        ];
        for (id, kind, who, emoji) in kinds {
            apply(&mut m, &change(id, 1, kind, who, emoji));
        }
        assert_eq!(m.reactions.len(), 1);
        assert_eq!(m.reactions[0].emoji, "👍");
        assert_eq!(m.reactions[0].count, 1);
        assert_eq!(m.reactions[0].usernames, vec!["cy".to_owned()]);
    }

    #[test]
    fn a_deletion_leaves_a_tombstone_that_later_changes_do_not_touch() {
        let mut m = message(1, "secret");
        apply(&mut m, &change(2, 1, ChangeKind::ChangeReact, "bob", "👍"));
        apply(&mut m, &change(3, 1, ChangeKind::ChangeDelete, "ada", ""));
        assert!(m.deleted && m.message.is_empty() && m.reactions.is_empty());
        assert!(apply(
            &mut m,
            &change(4, 1, ChangeKind::ChangeEdit, "ada", "back")
        ));
        assert!(m.message.is_empty());
        assert_eq!(m.state_id, 4);
    }

    #[test]
    fn only_the_first_reactors_are_named() {
        let mut m = message(1, "hi");
        for i in 0..60u64 {
            apply(
                &mut m,
                &change(2 + i, 1, ChangeKind::ChangeReact, &format!("p{i}"), "👍"),
            );
        }
        assert_eq!(m.reactions[0].count, 60);
        assert_eq!(m.reactions[0].usernames.len(), MAX_REACTORS_LISTED);
        assert_eq!(m.reactions[0].usernames[0], "p0");
    }

    /// Whatever a client missed or saw again, applying what arrives (the
    /// message in the state it was replayed in, then later changes) ends
    /// where the server is.
    #[test]
    fn copies_converge_whatever_order_they_catch_up_in() {
        let changes = vec![
            change(2, 1, ChangeKind::ChangeReact, "bob", "👍"),
            change(3, 1, ChangeKind::ChangeEdit, "ada", "hello"),
            change(4, 1, ChangeKind::ChangeReact, "cy", "🎉"),
            change(5, 1, ChangeKind::ChangeUnreact, "bob", "👍"),
            change(6, 1, ChangeKind::ChangeEdit, "ada", "hello!"),
        ];
        let mut server = message(1, "helo");
        let mut states = vec![server.clone()];
        for c in &changes {
            apply(&mut server, c);
            states.push(server.clone());
        }
        // A client holding the state after k changes, that gets a replay in
        // the state after r changes and then every change again.
        for (k, held) in states.iter().enumerate() {
            for replayed in &states {
                let mut copy = held.clone();
                refresh(&mut copy, replayed.clone());
                for c in &changes {
                    apply(&mut copy, c);
                }
                assert_eq!(
                    copy, server,
                    "held after {k}, replayed at {}",
                    replayed.state_id
                );
            }
        }
    }
}
