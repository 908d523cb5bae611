//! Compile the XDP programs with clang through libbpf-cargo into `$OUT_DIR/<name>.bpf.o`, which
//! the library embeds and loads with libbpf-rs: the steering program (`kxdp`) and the perf
//! harness's generator and sink (`perf`).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const OBJECTS: [&str; 2] = ["kxdp", "perf"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // `clang -target bpf` does not know the host's multiarch include directory (asm/ headers).
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for name in OBJECTS {
        let src = format!("src/bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang_args([multiarch.as_str(), "-Isrc/bpf", "-Wall", "-Werror"])
            .build()
            .unwrap_or_else(|e| {
                panic!("compiling {src} failed (needs clang and libbpf headers: scripts/install-deps.sh): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=src/bpf/kxdp.h");
}
