//! Generates the message types and gRPC stubs from `chat.proto`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so building needs no
//! system package. Client stubs are generated only with the `client`
//! feature, without tonic's transport, so that they build for wasm too (the
//! web app runs them over tonic-web-wasm-client). The server generates its
//! own stubs (see `server/build.rs`), so that it can send pre-encoded
//! messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the env yet.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=chat.proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC server reflection (grpcurl, buf curl).
        .file_descriptor_set_path(out_dir.join("chat_descriptor.bin"))
        .build_server(false)
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_transport(false)
        .compile_protos(&["chat.proto"], &["."])?;
    Ok(())
}
