//! Reply, edit, delete and react in cluster mode: three replicas on one
//! three-node NATS cluster. Changes made through one replica reach every
//! replica's streams in one order and replay in their current state
//! everywhere; changes to one message made at once through different
//! replicas are all judged and kept; a retried edit is stored once
//! cluster-wide; and a deleted message's text is gone from every node's
//! store, with its tombstone served in its place.

use chat_proto::{ChangeKind, ChatEvent, EditRequest, Event};
use chat_testkit::nats::NatsCluster;
use tonic::Streaming;

use crate::changes::{delete, edit, join, on_disk, react, replayed, say};
use crate::cluster::{replica, replicas};
use crate::common::{PATIENCE, next_chat_event, subscribe_after, with_session, within};

/// The next `count` events' ids and what they are (message or change kind).
async fn next_ids(events: &mut Streaming<ChatEvent>, count: usize) -> Vec<(u64, i32)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match next_chat_event(events).await {
            Event::Message(message) => seen.push((message.id, -1)),
            Event::Change(change) => seen.push((change.id, change.kind)),
            _ => {}
        }
    }
    seen
}

#[tokio::test]
async fn changes_through_any_replica_reach_every_replica_in_one_order() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut ada = servers[0].web();
    let ada_token = join(&mut ada, "Ada").await;
    let mut live = Vec::new();
    for server in &servers {
        live.push(subscribe_after(&mut server.web(), 0).await.1);
    }

    let id = say(&mut ada, &ada_token, "helo").await;
    // Ada's session works on every replica; Bob, Cy and Dee react through
    // three replicas at once to the same message.
    let mut reactions = Vec::new();
    let mut tokens = Vec::new();
    for (i, name) in ["Bob", "Cy", "Dee"].into_iter().enumerate() {
        let mut client = servers[i].web();
        let token = join(&mut client, name).await;
        tokens.push(token.clone());
        reactions.push(tokio::spawn(async move {
            within(client.react(with_session(react(id, "👍"), &token)))
                .await
                .map(|reply| reply.into_inner().id)
        }));
    }
    let mut reaction_ids = Vec::new();
    for reaction in reactions {
        reaction_ids.push(reaction.await.expect("joined").expect("reacted"));
    }
    reaction_ids.sort_unstable();
    assert_eq!(
        reaction_ids,
        vec![id + 1, id + 2, id + 3],
        "each stored once"
    );
    let mut on_other = servers[2].web();
    let edited = within(on_other.edit(with_session(edit(id, "hello"), &ada_token)))
        .await
        .expect("edited on another replica")
        .into_inner();
    assert_eq!(edited.id, id + 4);

    let reacted = ChangeKind::ChangeReact as i32;
    let expected = vec![
        (id, -1),
        (id + 1, reacted),
        (id + 2, reacted),
        (id + 3, reacted),
        (id + 4, ChangeKind::ChangeEdit as i32),
    ];
    for events in &mut live {
        assert_eq!(next_ids(events, 5).await, expected, "one order everywhere");
    }
    // Every replica replays the message as it stands now: the copy itself,
    // not only once the changes after it are applied.
    for server in &servers {
        let (_, mut fresh) = subscribe_after(&mut server.web(), 0).await;
        let Event::Message(copy) = next_chat_event(&mut fresh).await else {
            panic!("expected the message first");
        };
        assert_eq!(
            (copy.id, copy.message.as_str(), copy.state_id),
            (id, "hello", edited.id)
        );
    }
    for server in &servers {
        let messages = replayed(&mut server.web(), 0).await;
        let now = messages.iter().find(|m| m.id == id).expect("the message");
        assert_eq!(now.message, "hello");
        assert_eq!(now.edited_at, edited.timestamp);
        assert_eq!(now.reactions.len(), 1);
        assert_eq!(now.reactions[0].count, 3);
    }
    // The rules hold across replicas: Bob's second 👍 stores nothing, on
    // whichever replica it lands.
    let mut bob_elsewhere = servers[1].web();
    let again = within(bob_elsewhere.react(with_session(react(id, "👍"), &tokens[0])))
        .await
        .expect("reacting twice is fine")
        .into_inner();
    assert_eq!(again.id, 0, "nothing stored");
}

#[tokio::test]
async fn a_retried_edit_is_stored_once_cluster_wide() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut ada = servers[0].web();
    let token = join(&mut ada, "Ada").await;
    let id = say(&mut ada, &token, "first draft").await;
    let request = EditRequest {
        nonce: "edit-nonce-1".into(),
        ..edit(id, "second draft")
    };
    let mut replies = Vec::new();
    for server in &servers {
        let reply = within(server.web().edit(with_session(request.clone(), &token)))
            .await
            .expect("edited")
            .into_inner();
        replies.push(reply);
    }
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "every retry answered with the first: {replies:?}"
    );
    let (ready, _) = subscribe_after(&mut servers[2].web(), 0).await;
    assert_eq!(ready.last_id, id + 1, "stored once");
}

#[tokio::test]
async fn a_deleted_messages_text_is_gone_from_every_node_and_its_tombstone_served() {
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut ada = servers[0].web();
    let token = join(&mut ada, "Ada").await;
    let (original, edited) = ("marker-original-c41d9a", "marker-edited-e82b07");
    let id = say(&mut ada, &token, original).await;
    let edit_id = within(ada.edit(with_session(edit(id, edited), &token)))
        .await
        .expect("edited")
        .into_inner()
        .id;
    say(&mut ada, &token, "a message that stays").await;
    assert!(on_disk(cluster.dir(), original), "stored before");
    assert!(on_disk(cluster.dir(), edited), "stored before");

    let mut elsewhere = servers[1].web();
    let deleted = within(elsewhere.delete(with_session(delete(id), &token)))
        .await
        .expect("deleted through another replica")
        .into_inner();
    // Every replica serves the tombstone and the erased edit in their
    // places, without a gap, to new subscribers and to resumes.
    for server in &servers {
        let messages = replayed(&mut server.web(), 0).await;
        assert_eq!(messages.len(), 2);
        assert!(messages[0].deleted && messages[0].message.is_empty());
        assert_eq!(messages[0].username, "Ada");
        assert_eq!(messages[0].state_id, deleted.id);
        let (_, mut resumed) = subscribe_after(&mut server.web(), id - 1).await;
        let seen = next_ids(&mut resumed, 4).await;
        let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![id, edit_id, edit_id + 1, deleted.id]);
    }

    // Erased from the stream's files on every node (each node applies the
    // erasure when it gets it).
    let streams = stream_dirs(cluster.dir(), "CHAT_general");
    assert_eq!(streams.len(), 3, "one copy of the stream per node");
    eventually(PATIENCE, "the stream's files let go of the text", || {
        streams
            .iter()
            .all(|dir| !on_disk(dir, original) && !on_disk(dir, edited))
    })
    .await;
    assert!(on_disk(cluster.dir(), "a message that stays"));

    // After a restart of everything, a replica that starts reads the
    // room's changes from the streams and the tombstones stay.
    drop(servers);
    cluster.full_restart().await.expect("the cluster restarted");
    let fresh = replica(&cluster).await;
    let messages = replayed(&mut fresh.web(), 0).await;
    assert!(messages[0].deleted, "{messages:?}");
    let again = within(fresh.web().delete(with_session(delete(id), &token)))
        .await
        .expect("deleting twice is fine")
        .into_inner();
    assert_eq!(again, deleted, "nothing new stored");

    // Each node's Raft log lets go of its copy at the node's next snapshot
    // of the stream, which NATS takes every 2 to 3 minutes while the stream
    // changes: wait for it, letting the other cluster tests go on meanwhile.
    drop(fresh);
    cluster.share_turn();
    eventually(
        RAFT_SNAPSHOT,
        "every node's Raft log let go of the text",
        || !on_disk(cluster.dir(), original) && !on_disk(cluster.dir(), edited),
    )
    .await;
    assert!(on_disk(cluster.dir(), "a message that stays"));
}

/// The directories named `name` under `dir` (a stream's store on each node).
fn stream_dirs(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() == name {
                found.push(path);
            } else {
                found.extend(stream_dirs(&path, name));
            }
        }
    }
    found
}

/// NATS snapshots a stream's Raft log on each node on a timer of 2 minutes
/// plus up to 1 (`compactInterval` in its `jetstream_cluster.go`), from the
/// node's start; a clean stop may skip it.
const RAFT_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(240);

/// Waits until `condition` holds, for up to `patience`.
async fn eventually(
    patience: std::time::Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let waited = tokio::time::timeout(patience, async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}
