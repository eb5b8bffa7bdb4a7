//! Generates the server side of `ChatService` from a definition that must
//! match `proto/chat.proto` (the integration tests call it through the
//! clients generated from that file, so a mismatch fails them).
//!
//! Why not prost's generated server: a relayed message goes to every
//! subscriber, and with prost's stubs each subscriber's stream would clone
//! and encode it again. Here the streaming methods return
//! `crate::hub::wire::Encoded`, bytes encoded once when the message is published
//! and shared by every stream; requests are still decoded by prost.

use tonic_build::manual::{Builder, Method, Service};

/// The output of streaming methods: bytes encoded once, shared by all.
const ENCODED: &str = "crate::hub::wire::Encoded";
const WIRE_CODEC: &str = "crate::hub::wire::WireCodec";

enum Shape {
    Unary,
    ServerStreaming,
    Bidi,
}

fn method(name: &str, route: &str, input: &str, output: &str, shape: Shape) -> Method {
    let codec = match shape {
        Shape::Unary => "tonic_prost::ProstCodec",
        Shape::ServerStreaming | Shape::Bidi => WIRE_CODEC,
    };
    let builder = Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path(codec);
    match shape {
        Shape::Unary => builder,
        Shape::ServerStreaming => builder.server_streaming(),
        Shape::Bidi => builder.client_streaming().server_streaming(),
    }
    .build()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // No `package` line in chat.proto, so the routes are /ChatService/<Method>.
    let service = Service::builder()
        .name("ChatService")
        .package("")
        .method(method(
            "chat_stream",
            "ChatStream",
            "chat_proto::ChatMessage",
            ENCODED,
            Shape::Bidi,
        ))
        .method(method(
            "subscribe",
            "Subscribe",
            "chat_proto::SubscribeRequest",
            ENCODED,
            Shape::ServerStreaming,
        ))
        .method(method(
            "send",
            "Send",
            "chat_proto::ChatMessage",
            "chat_proto::SendReply",
            Shape::Unary,
        ))
        .method(method(
            "join",
            "Join",
            "chat_proto::JoinRequest",
            "chat_proto::JoinReply",
            Shape::Unary,
        ))
        .method(method(
            "set_typing",
            "SetTyping",
            "chat_proto::TypingRequest",
            "chat_proto::TypingReply",
            Shape::Unary,
        ))
        .method(method(
            "create_room",
            "CreateRoom",
            "chat_proto::CreateRoomRequest",
            "chat_proto::Room",
            Shape::Unary,
        ))
        .method(method(
            "list_rooms",
            "ListRooms",
            "chat_proto::ListRoomsRequest",
            "chat_proto::ListRoomsReply",
            Shape::Unary,
        ))
        .method(method(
            "edit",
            "Edit",
            "chat_proto::EditRequest",
            "chat_proto::ChangeReply",
            Shape::Unary,
        ))
        .method(method(
            "delete",
            "Delete",
            "chat_proto::DeleteRequest",
            "chat_proto::ChangeReply",
            Shape::Unary,
        ))
        .method(method(
            "react",
            "React",
            "chat_proto::ReactRequest",
            "chat_proto::ChangeReply",
            Shape::Unary,
        ))
        .method(method(
            "history",
            "History",
            "chat_proto::HistoryRequest",
            "chat_proto::HistoryReply",
            Shape::Unary,
        ))
        .method(method(
            "search",
            "Search",
            "chat_proto::SearchRequest",
            "chat_proto::SearchReply",
            Shape::Unary,
        ))
        .build();
    // Moderators' calls: all unary, decoded and encoded by prost.
    let moderation = [
        ("mute", "Mute", "MuteRequest", "ModerationReply"),
        ("lift", "Lift", "LiftRequest", "ModerationReply"),
        ("ban", "Ban", "BanRequest", "ModerationReply"),
        (
            "set_slow_mode",
            "SetSlowMode",
            "SlowModeRequest",
            "ModerationReply",
        ),
        ("purge", "Purge", "PurgeRequest", "PurgeReply"),
        ("audit_log", "AuditLog", "AuditRequest", "AuditReply"),
        ("set_topic", "SetTopic", "TopicRequest", "ModerationReply"),
        ("report", "Report", "ReportRequest", "ModerationReply"),
        (
            "list_reports",
            "ListReports",
            "ListReportsRequest",
            "ListReportsReply",
        ),
        (
            "dismiss_report",
            "DismissReport",
            "DismissReportRequest",
            "ModerationReply",
        ),
    ]
    .into_iter()
    .fold(
        Service::builder().name("Moderation").package(""),
        |service, (name, route, input, output)| {
            service.method(method(
                name,
                route,
                &format!("chat_proto::{input}"),
                &format!("chat_proto::{output}"),
                Shape::Unary,
            ))
        },
    )
    .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service, moderation]);
}
