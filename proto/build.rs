//! Generates the message types and gRPC stubs from `chat.proto`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so building needs no
//! system package. Client stubs are always generated without tonic's
//! transport (the wasm app brings its own); server stubs only with the
//! `server` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the env yet.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=chat.proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC server reflection (grpcurl, buf curl).
        .file_descriptor_set_path(out_dir.join("chat_descriptor.bin"))
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .build_transport(false)
        .compile_protos(&["chat.proto"], &["."])?;
    Ok(())
}
