//! Compile the perf harness's XDP programs (`src/bpf/perf.bpf.c`: the generator, the sink and
//! the redirector) with clang through libbpf-cargo into `$OUT_DIR/perf.bpf.o`, which
//! `src/programs.rs` embeds and loads with libbpf-rs, as `xdp-progs/build.rs` does for the
//! steering program.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "src/bpf/perf.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // `clang -target bpf` does not know the host's multiarch include directory (asm/ headers).
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    SkeletonBuilder::new()
        .source(SOURCE)
        .obj(out.join("perf.bpf.o"))
        .clang_args([multiarch.as_str(), "-Wall", "-Werror"])
        .build()
        .unwrap_or_else(|e| {
            panic!("compiling {SOURCE} failed (needs clang and libbpf headers: scripts/install-deps.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SOURCE}");
}
