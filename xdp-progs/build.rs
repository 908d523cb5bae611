//! Compile the XDP steering program with clang through libbpf-cargo into
//! `$OUT_DIR/kxdp.bpf.o`, which the library embeds and loads with libbpf-rs. (The perf
//! harness's programs are built by `perf/build.rs` the same way.)

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "src/bpf/kxdp.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // `clang -target bpf` does not know the host's multiarch include directory (asm/ headers).
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    SkeletonBuilder::new()
        .source(SOURCE)
        .obj(out.join("kxdp.bpf.o"))
        .clang_args([multiarch.as_str(), "-Isrc/bpf", "-Wall", "-Werror"])
        .build()
        .unwrap_or_else(|e| {
            panic!("compiling {SOURCE} failed (needs clang and libbpf headers: scripts/install-deps.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=src/bpf/kxdp.h");
}
