//! Compiles `proto/headscale/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and generates the tonic client and server for `headscale.v1`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    let files = protox::compile(["headscale/v1/headscale.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
