//! Cluster mode: chat servers sharing a three-node NATS JetStream cluster
//! (`--nats`), which keeps the chat going when a node dies. The cluster is
//! real `nats-server` processes on loopback ports (`common/nats.rs`;
//! `scripts/install --tests` installs the binary).

#[path = "common/nats.rs"]
mod nats;

use std::time::Duration;

use nats::{NODES, NatsCluster, READY_TIMEOUT};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// The harness itself: three nodes that clients reach, a stream with three
/// replicas that keeps a leader when a node is killed, and the node back in
/// the cluster after a restart.
#[tokio::test]
async fn nats_cluster_harness_survives_a_killed_node() {
    let mut cluster = NatsCluster::start().await;

    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), NODES, "{urls}");
    for (i, url) in urls.split(',').enumerate() {
        assert_eq!(url, cluster.url(i));
        // A NATS server greets every client with INFO, naming itself.
        let addr = url.strip_prefix("nats://").expect("a nats:// URL");
        let stream = TcpStream::connect(addr).await.expect("connect to a node");
        let mut info = String::new();
        BufReader::new(stream)
            .read_line(&mut info)
            .await
            .expect("INFO from the node");
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(
            info.contains(&format!("\"server_name\":\"{}\"", cluster.name(i))),
            "{info}"
        );
    }

    let created = cluster
        .jetstream_api(
            1,
            "STREAM.CREATE.harness",
            &json!({"name": "harness", "subjects": ["harness.>"], "num_replicas": 3}),
        )
        .await;
    assert!(created.get("error").is_none(), "{created}");
    eventually(async || cluster.stream_leader("harness").await.is_some()).await;

    cluster.kill(0);
    assert!(!cluster.is_running(0));
    assert!(
        cluster.get(0, "/healthz").await.is_none(),
        "node 0 still answers"
    );
    // The survivors agree on a meta leader, and the stream has a leader
    // among them.
    cluster.ready().await;
    eventually(
        async || matches!(cluster.stream_leader("harness").await, Some(leader) if leader != 0),
    )
    .await;

    cluster.restart(0).await;
    let (status, body) = cluster.get(0, "/healthz").await.expect("node 0 answers");
    assert_eq!(status, 200, "{body}");
    let leader = cluster.meta_leader().await.expect("a meta leader");
    let jsz = cluster.monitoring(leader, "/jsz").await.expect("/jsz");
    assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
    let peers = jsz["meta_cluster"]["replicas"]
        .as_array()
        .expect("the meta leader lists its peers");
    assert_eq!(peers.len(), NODES - 1, "{jsz}");
    assert!(peers.iter().all(|p| p["current"] == true), "{jsz}");
    // Node 0 has its copy of the stream back from its store.
    let jsz = cluster
        .monitoring(0, "/jsz?accounts=true&streams=true")
        .await
        .expect("/jsz");
    assert_eq!(jsz["streams"], 1, "{jsz}");
}

/// Polls `condition` until it holds, failing the test after [`READY_TIMEOUT`].
async fn eventually(mut condition: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(READY_TIMEOUT, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("timed out waiting for the NATS cluster");
}
