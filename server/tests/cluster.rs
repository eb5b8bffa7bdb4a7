//! Cluster mode: chat servers sharing a three-node NATS JetStream cluster
//! (`--nats`), which keeps the chat going when a node dies. The cluster is
//! real `nats-server` processes on loopback ports (`common/nats.rs`;
//! `scripts/install --tests` installs the binary).

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::time::Duration;

use chat_proto::{
    ChatEvent, ChatMessage, CreateRoomRequest, Event, JoinReply, JoinRequest, ListRoomsRequest,
    SubscribeRequest, TypingRequest,
};
use chat_server::Config;
use common::{
    NativeClient, TestServer, chat, http1_request, next_chat_event, next_event_message,
    next_message, open_chat_stream, subscribe, unthrottled, with_session, within,
};
use nats::{NODES, NatsCluster, READY_TIMEOUT};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tonic::{Code, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

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

/// A chat server in cluster mode on `cluster` (posting rate limit off: these
/// tests send quickly from few names).
async fn replica(cluster: &NatsCluster) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("chat_server=debug")
        .with_test_writer()
        .try_init();
    let config = Config {
        nats: Some(cluster.urls()),
        ..unthrottled(Config::with_addr("127.0.0.1:0"))
    };
    TestServer::start_with(config).await
}

async fn replicas(cluster: &NatsCluster) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(replica(cluster).await);
    }
    servers
}

fn with_nonce(username: &str, message: &str, nonce: &str) -> ChatMessage {
    ChatMessage {
        nonce: nonce.into(),
        ..chat(username, message)
    }
}

/// Subscribes after `after_id` (0: recent history), past `Ready`.
async fn subscribe_after(client: &mut NativeClient, after_id: u64) -> Streaming<ChatEvent> {
    common::subscribe_after(client, after_id).await.1
}

/// Sends `message` through `server`.
async fn sent(server: &TestServer, message: ChatMessage) -> chat_proto::SendReply {
    within(server.native().await.send(message))
        .await
        .expect("sent")
        .into_inner()
}

#[tokio::test]
async fn a_message_sent_through_any_replica_reaches_every_replica_once_with_one_id() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let mut streams = Vec::new();
    for server in &servers {
        streams.push(subscribe(&mut server.native().await, "reader").await);
    }
    let mut sent = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let reply = within(server.native().await.send(chat("ada", &format!("via {i}"))))
            .await
            .expect("sent")
            .into_inner();
        sent.push(reply.id);
    }
    assert_eq!(sent, [1, 2, 3], "ids come from the room's one stream");
    for stream in &mut streams {
        for (i, id) in sent.iter().enumerate() {
            let message = next_event_message(stream).await;
            assert_eq!(
                (message.id, message.message.as_str()),
                (*id, format!("via {i}").as_str())
            );
        }
    }
    // Once: nothing more arrives.
    for stream in &mut streams {
        let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(
            !matches!(
                more,
                Ok(Ok(Some(ChatEvent {
                    event: Some(Event::Message(_))
                })))
            ),
            "{more:?}"
        );
    }
}

#[tokio::test]
async fn a_send_retried_on_another_replica_is_stored_once() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let mut stream = subscribe(&mut servers[2].native().await, "reader").await;
    let first = sent(&servers[0], with_nonce("ada", "once", "n-1")).await;
    // The reply was lost, say: the client sends the same message elsewhere.
    let again = sent(&servers[1], with_nonce("ada", "once", "n-1")).await;
    assert_eq!(
        (again.id, again.timestamp),
        (first.id, first.timestamp),
        "the retry is told the first copy's id and time"
    );
    // Someone else's nonce is their own.
    let other = sent(&servers[1], with_nonce("bob", "once", "n-1")).await;
    assert_eq!(other.id, first.id + 1);

    assert_eq!(next_event_message(&mut stream).await.id, first.id);
    assert_eq!(next_event_message(&mut stream).await.id, other.id);
    let history = subscribe_after(&mut servers[1].native().await, 0).await;
    let ids = ids_until(history, other.id).await;
    assert_eq!(ids, [first.id, other.id], "stored once");
}

#[tokio::test]
async fn paper_chat_stream_clients_on_different_replicas_talk() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let (ada_out, mut ada_in) = open_chat_stream(&mut servers[0].native().await).await;
    let (bob_out, mut bob_in) = open_chat_stream(&mut servers[1].native().await).await;
    servers[0].wait_for_subscribers(1).await;
    servers[1].wait_for_subscribers(1).await;

    ada_out
        .send(chat("ada", "hello bob"))
        .await
        .expect("queued");
    let heard = next_message(&mut bob_in).await;
    assert_eq!(
        (heard.username.as_str(), heard.message.as_str()),
        ("ada", "hello bob")
    );
    bob_out.send(chat("bob", "hi ada")).await.expect("queued");
    let heard = next_message(&mut ada_in).await;
    assert_eq!(
        (heard.username.as_str(), heard.message.as_str()),
        ("bob", "hi ada")
    );
    // Neither hears their own words back.
    let echo = tokio::time::timeout(Duration::from_millis(300), ada_in.message()).await;
    assert!(echo.is_err(), "ada heard {echo:?}");
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_without_gap_or_duplicate() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let mut sender = servers[0].native().await;
    let mut first = subscribe_after(&mut servers[1].native().await, 0).await;
    for i in 1..=20 {
        within(sender.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    let read = ids_until_count(&mut first, 10).await;
    drop(first);
    // On another replica, from the last id read; more keep coming.
    let mut resumed = subscribe_after(&mut servers[2].native().await, read[9]).await;
    for i in 21..=30 {
        within(sender.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    let rest = ids_until_count(&mut resumed, 20).await;
    let all: Vec<u64> = read.into_iter().chain(rest).collect();
    assert_eq!(all, (1..=30).collect::<Vec<u64>>());
}

#[tokio::test]
async fn killing_a_rooms_stream_leader_pauses_writes_and_loses_nothing() {
    let mut cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let mut stream = subscribe_after(&mut servers[2].native().await, 0).await;
    let mut acked = Vec::new();
    let mut sender = servers[0].native().await;
    for i in 0..5 {
        let reply = within(sender.send(with_nonce("ada", "before", &format!("b{i}"))))
            .await
            .expect("sent");
        acked.push(reply.into_inner().id);
    }
    let leader = cluster
        .stream_leader("CHAT_general")
        .await
        .expect("the room's stream has a leader");
    cluster.kill(leader);
    // Writes pause while a new leader is elected; a client retries with the
    // same nonce, and none is stored twice.
    let started = std::time::Instant::now();
    for i in 0..5 {
        let message = with_nonce("ada", "after", &format!("a{i}"));
        let id = loop {
            match tokio::time::timeout(Duration::from_secs(30), sender.send(message.clone())).await
            {
                Ok(Ok(reply)) => break reply.into_inner().id,
                Ok(Err(status)) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => panic!("a Send hung through the election"),
            }
        };
        acked.push(id);
    }
    eprintln!(
        "writes paused for {:?} after the leader was killed",
        started.elapsed()
    );
    assert_eq!(acked, (1..=10).collect::<Vec<u64>>(), "no hole, no copy");
    // The stream opened before the kill stayed open and has every message.
    let ids = ids_until_count(&mut stream, 10).await;
    assert_eq!(ids, acked);
}

#[tokio::test]
async fn a_replica_without_nats_says_unavailable_and_catches_up_when_it_is_back() {
    let mut cluster = NatsCluster::start().await;
    let server = replica(&cluster).await;
    let mut stream = subscribe_after(&mut server.native().await, 0).await;
    let mut client = server.native().await;
    within(client.send(chat("ada", "before")))
        .await
        .expect("sent");
    for i in 0..NODES {
        cluster.kill(i);
    }
    wait_for_health(&server, 503).await;
    // gRPC health says so too, for the service and for the server.
    wait_for_grpc_health(&server, ServingStatus::NotServing).await;
    // Operators see it too (the gauge follows within a quarter second).
    tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            let metrics = http1_request(server.addr, "GET", "/metrics", &[], Vec::new()).await;
            if String::from_utf8_lossy(&metrics.body).contains("chat_log_available 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("chat_log_available says 0");
    let refused = within(client.send(chat("ada", "while down")))
        .await
        .expect_err("no NATS, no write");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    cluster.restart_all().await;
    wait_for_health(&server, 200).await;
    wait_for_grpc_health(&server, ServingStatus::Serving).await;
    // Writes go through again (after the stream has a leader), and the
    // stream opened before the outage delivers them.
    let reply = loop {
        match within(client.send(with_nonce("ada", "after", "after-1"))).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(reply.id, 2);
    assert_eq!(ids_until_count(&mut stream, 2).await, [1, 2]);
}

#[tokio::test]
async fn history_survives_restarting_everything() {
    let mut cluster = NatsCluster::start().await;
    let server = replica(&cluster).await;
    let mut client = server.native().await;
    for i in 1..=5 {
        within(client.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    server.stop().await;
    for i in 0..NODES {
        cluster.kill(i);
    }
    cluster.restart_all().await;
    let server = replica(&cluster).await;
    let history = subscribe_after(&mut server.native().await, 0).await;
    assert_eq!(ids_until(history, 5).await, [1, 2, 3, 4, 5]);
}

/// Waits until the replica's `/healthz` answers `status`.
async fn wait_for_health(server: &TestServer, status: u16) {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http1_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
        if answer.status == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz stayed {}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until gRPC health reports `wanted` for the server and for
/// `ChatService`.
async fn wait_for_grpc_health(server: &TestServer, wanted: ServingStatus) {
    let mut health = HealthClient::new(common::channel(&server.url()).await);
    for service in ["", "ChatService"] {
        tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .expect("health answers")
                    .into_inner()
                    .status();
                if status == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("gRPC health never said {wanted:?} for {service:?}"));
    }
}

/// The ids of messages on `stream` until (and with) `last`.
async fn ids_until(mut stream: Streaming<ChatEvent>, last: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        ids.push(next_event_message(&mut stream).await.id);
    }
    ids
}

/// The ids of the next `count` messages on `stream` (heartbeats, which a
/// long pause brings, are skipped).
async fn ids_until_count(stream: &mut Streaming<ChatEvent>, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < count {
        match next_chat_event(stream).await {
            Event::Message(message) => ids.push(message.id),
            Event::Heartbeat(_) => {}
            other => panic!("expected a chat message, got {other:?}"),
        }
    }
    ids
}

async fn join(server: &TestServer, name: &str) -> Result<JoinReply, tonic::Status> {
    within(server.native().await.join(JoinRequest {
        username: name.into(),
        token: String::new(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

/// A Subscribe stream of `token`'s session on `url`, past its `Ready`.
async fn subscribe_as(url: &str, token: &str) -> Streaming<ChatEvent> {
    let mut client = chat_proto::ChatServiceClient::new(common::channel(url).await);
    let mut stream = within(client.subscribe(with_session(SubscribeRequest::default(), token)))
        .await
        .expect("subscribe accepted")
        .into_inner();
    match within(stream.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(_)),
        })) => stream,
        other => panic!("expected Ready first, got {other:?}"),
    }
}

/// Waits (up to `patience`) for a people event on `stream` that `wanted`
/// accepts.
async fn people_event(
    stream: &mut Streaming<ChatEvent>,
    patience: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(patience, async {
        loop {
            match stream.message().await {
                Ok(Some(ChatEvent { event: Some(event) })) if wanted(&event) => return event,
                Ok(Some(_)) => {}
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the people event never came")
}

fn shows(event: &Event, name: &str) -> bool {
    matches!(event, Event::Presence(p)
        if p.online.iter().chain(&p.joined).any(|n| n == name))
}

#[tokio::test]
async fn a_name_claimed_on_one_replica_is_refused_on_another_and_its_session_works_everywhere() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let ada = join(&servers[0], "Ada").await.expect("free");
    for (server, clash) in [(&servers[1], "ada"), (&servers[2], " ADA ")] {
        let refused = join(server, clash).await.expect_err("taken elsewhere");
        assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
        assert!(refused.message().contains("Ada"), "{refused:?}");
    }
    // The session is good on every replica: a reconnect through the load
    // balancer may land anywhere.
    let mut elsewhere = servers[2].native().await;
    let sent = within(elsewhere.send(with_session(chat("", "from replica 2"), &ada.token)))
        .await
        .expect("the session is known here too")
        .into_inner();
    assert_eq!(sent.id, 1);
    let again = within(servers[1].native().await.join(JoinRequest {
        username: "Ada".into(),
        token: ada.token.clone(),
    }))
    .await
    .expect("taking the name back with its token")
    .into_inner();
    assert_eq!(
        (again.username.as_str(), again.token.as_str()),
        ("Ada", ada.token.as_str())
    );
}

#[tokio::test]
async fn presence_and_typing_are_seen_across_replicas() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    let ada = join(&servers[0], "Ada").await.expect("free");
    let bob = join(&servers[1], "Bob").await.expect("free");
    let _ada_stream = subscribe_as(&servers[0].url(), &ada.token).await;
    let mut bob_stream = subscribe_as(&servers[1].url(), &bob.token).await;
    people_event(&mut bob_stream, Duration::from_secs(15), |e| {
        shows(e, "Ada")
    })
    .await;

    within(servers[0].native().await.set_typing(with_session(
        TypingRequest {
            typing: true,
            ..Default::default()
        },
        &ada.token,
    )))
    .await
    .expect("typing");
    let typing = people_event(&mut bob_stream, Duration::from_secs(10), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;
    assert!(
        matches!(&typing, Event::Typing(t) if t.username == "Ada" && t.typing),
        "{typing:?}"
    );
    // Ada's message, sent on her replica, ends her typing on Bob's too.
    within(
        servers[0]
            .native()
            .await
            .send(with_session(chat("", "hi"), &ada.token)),
    )
    .await
    .expect("sent");
    let stopped = people_event(&mut bob_stream, Duration::from_secs(10), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;
    assert!(
        matches!(&stopped, Event::Typing(t) if t.username == "Ada" && !t.typing),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn a_killed_replicas_people_leave_the_others_within_30_seconds() {
    let cluster = NatsCluster::start().await;
    let survivor = replica(&cluster).await;
    let doomed = Process::start(&cluster).await;
    let ada = within(
        chat_proto::ChatServiceClient::new(common::channel(&doomed.url()).await).join(
            JoinRequest {
                username: "Ada".into(),
                token: String::new(),
            },
        ),
    )
    .await
    .expect("free")
    .into_inner();
    let _ada_stream = subscribe_as(&doomed.url(), &ada.token).await;
    let bob = join(&survivor, "Bob").await.expect("free");
    let mut bob_stream = subscribe_as(&survivor.url(), &bob.token).await;
    people_event(&mut bob_stream, Duration::from_secs(15), |e| {
        shows(e, "Ada")
    })
    .await;

    let killed = std::time::Instant::now();
    drop(doomed); // kill -9
    people_event(
        &mut bob_stream,
        Duration::from_secs(30),
        |e| matches!(e, Event::Presence(p) if p.left.iter().any(|n| n == "Ada")),
    )
    .await;
    eprintln!(
        "Ada left {:?} after her replica was killed",
        killed.elapsed()
    );
}

/// A `chat-server` process in cluster mode; killed with SIGKILL when
/// dropped, as a crash would.
struct Process {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    async fn start(cluster: &NatsCluster) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .env_clear()
            .env("CHAT_ADDR", addr.to_string())
            .env("CHAT_NATS", cluster.urls())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chat-server");
        let process = Self { child, addr };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let up = tokio::net::TcpStream::connect(addr).await.is_ok()
                && http1_request(addr, "GET", "/healthz", &[], Vec::new())
                    .await
                    .status
                    == 200;
            if up {
                return process;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chat-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_room_created_on_one_replica_is_there_on_every_other() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    within(servers[0].native().await.create_room(CreateRoomRequest {
        name: "ops".into(),
        topic: "the pager".into(),
    }))
    .await
    .expect("created");
    let again = within(servers[1].native().await.create_room(CreateRoomRequest {
        name: "ops".into(),
        topic: String::new(),
    }))
    .await
    .expect_err("one room of that name in the cluster");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let rooms = within(servers[2].native().await.list_rooms(ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .rooms;
    let names: Vec<(&str, &str)> = rooms
        .iter()
        .map(|r| (r.name.as_str(), r.topic.as_str()))
        .collect();
    assert_eq!(names, [("general", ""), ("ops", "the pager")]);

    let mut stream = within(servers[2].native().await.subscribe(SubscribeRequest {
        username: "reader".into(),
        room: "ops".into(),
        ..Default::default()
    }))
    .await
    .expect("the room is known here")
    .into_inner();
    let sent = within(servers[1].native().await.send(ChatMessage {
        room: "ops".into(),
        ..chat("ada", "paged")
    }))
    .await
    .expect("sent")
    .into_inner();
    assert_eq!(sent.id, 1, "the room's own ids");
    let message = loop {
        match next_chat_event(&mut stream).await {
            Event::Message(message) => break message,
            Event::Ready(_) | Event::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        (message.room.as_str(), message.message.as_str()),
        ("ops", "paged")
    );
}

#[tokio::test]
async fn a_paper_client_cannot_speak_as_a_name_joined_on_another_replica() {
    let cluster = NatsCluster::start().await;
    let servers = replicas(&cluster).await;
    join(&servers[0], "Ada").await.expect("free");
    let (out, mut incoming) = open_chat_stream(&mut servers[1].native().await).await;
    out.send(chat("ada", "it's me")).await.expect("queued");
    let refused = within(incoming.message())
        .await
        .expect_err("the name is Ada's");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let anonymous = within(servers[2].native().await.send(chat("ADA", "me too")))
        .await
        .expect_err("nor can an anonymous Send");
    assert_eq!(anonymous.code(), Code::PermissionDenied, "{anonymous:?}");
}
