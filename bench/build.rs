//! Generates the server side of the paper's `ChatService.ChatStream` for the
//! reference server (`src/reference.rs`): tonic's ordinary prost codec,
//! one encode per subscriber, as a plain tonic server would have it.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let chat_stream = Method::builder()
        .name("chat_stream")
        .route_name("ChatStream")
        .input_type("chat_proto::ChatMessage")
        .output_type("chat_proto::ChatMessage")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .server_streaming()
        .build();
    // No `package` line in chat.proto, so the route is /ChatService/ChatStream.
    let service = Service::builder()
        .name("ChatService")
        .package("")
        .method(chat_stream)
        .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
}
