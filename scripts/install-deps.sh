#!/usr/bin/env bash
# Install what kxdp's build and tests need on Debian, idempotently: only missing packages are
# installed, and nothing is installed when everything is present.
set -euo pipefail

# iproute2, iputils-ping, ethtool, python3, iperf3: the namespace testbed and its clients.
# clang, llvm, libelf-dev, zlib1g-dev, libbpf-dev: the XDP program and libbpf (xdp-progs).
# m4: libxdp, which the AF_XDP crate builds from source.
# procps (kill), util-linux (setpriv, prlimit): stopping agents, and the preflight tests.
# nftables, netsniff-ng (trafgen): the perf harness's kernel baseline and its generator.
# man-db, groff-base: `man -l` renders `kxdp man`'s page with groff's warnings on (agent/tests/cli.rs).
# podman: a real CNI client (libcni) for the plugin (cni/tests/podman.rs); it brings crun and conmon.
#   Its package ships a bridge network in /etc/cni/net.d: dpkg is told to leave /etc/cni alone, as
#   kxdp never touches the machine's CNI configuration (its tests use folders they create).
# (zsh and fish are optional: where installed, the completion test loads their scripts too.)
packages=(build-essential pkg-config iproute2 iputils-ping ethtool python3 iperf3 clang llvm libelf-dev zlib1g-dev libbpf-dev m4 procps util-linux nftables netsniff-ng man-db groff-base podman)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "kxdp: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "kxdp: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Options::=--path-exclude=/etc/cni -o 'DPkg::Options::=--path-exclude=/etc/cni/*' \
        "${missing[@]}"
fi

# promtool, for the format test of the agent's /metrics, comes from Debian's prometheus package,
# unpacked into kxdp's cache rather than installed: installing the package would also create a
# Prometheus server and, on a host with systemd, start it. The Makefile puts the folder on PATH.
tools="${KXDP_TOOLS:-$HOME/.cache/kxdp/tools}"
if ! command -v promtool >/dev/null && [[ ! -x "$tools/promtool" ]]; then
    echo "kxdp: unpacking promtool from Debian's prometheus package into $tools"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download -qq prometheus 2>/dev/null); then
        [[ $(id -u) -eq 0 ]] && DEBIAN_FRONTEND=noninteractive apt-get update -qq
        (cd "$work" && apt-get download -qq prometheus)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    install -D -m 0755 "$work/root/usr/bin/promtool" "$tools/promtool"
fi

for tool in cargo rustc; do
    command -v "$tool" >/dev/null || { echo "kxdp: $tool not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
done
for sub in fmt clippy; do
    cargo "$sub" --version >/dev/null 2>&1 || { echo "kxdp: cargo $sub not found; run: rustup component add ${sub/fmt/rustfmt}" >&2; exit 1; }
done
