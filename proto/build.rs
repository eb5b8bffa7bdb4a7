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
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .build_transport(false)
        .compile_protos(&["chat.proto"], &["."])?;
    Ok(())
}
