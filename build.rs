//! Compiles `proto/headscale/v1/*.proto` with protox (pure Rust, no system
//! `protoc`), generates the tonic client and server for `headscale.v1` (and for
//! headway's own `proto/headway/v1`), and
//! writes the encoded descriptor set (options and comments kept) that the
//! REST gateway and the OpenAPI document are built from (`src/api`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file("headscale/v1/headscale.proto")?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("headscale_v1.descriptors"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    // headway's own calls: generated apart, so the REST gateway's descriptors
    // stay Headscale's.
    let mut own = protox::Compiler::new(["proto"])?;
    own.include_imports(true)
        .open_file("headway/v1/admin.proto")?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(own.file_descriptor_set())?;
    Ok(())
}
