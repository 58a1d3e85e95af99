//! Compiles every `.proto` under `proto/` with protox (pure Rust, no `protoc` binary needed) and
//! generates tonic servers and clients. The encoded descriptor set is written for gRPC reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection describes what faultd serves: leave out the containerd client protos.
    let mut served = fds.clone();
    served
        .file
        .retain(|f| !f.package().starts_with("containerd."));
    std::fs::write(
        out.join("faultd_descriptor.bin"),
        prost::Message::encode_to_vec(&served),
    )?;
    tonic_prost_build::configure()
        // pb.Netem accepts both wire encodings of time/jitter (see src/proto/compat.rs).
        .extern_path(".pb.Netem", "crate::proto::compat::Netem")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

fn collect(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
    Ok(())
}
