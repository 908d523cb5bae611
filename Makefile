# kxdp's plain entry points. `make test` is what CI runs (through .ci/run).
#
# The cargo target directory lives outside the clone so repeated CI runs on one machine reuse
# the build; override CARGO_TARGET_DIR to put it elsewhere.
CARGO_TARGET_DIR ?= $(HOME)/.cache/kxdp/target
export CARGO_TARGET_DIR

# Tools scripts/install-deps.sh unpacks rather than installs (promtool), in the same folder it
# uses: KXDP_TOOLS, exported so that the script and the tests agree on it.
KXDP_TOOLS ?= $(HOME)/.cache/kxdp/tools
export KXDP_TOOLS
export PATH := $(KXDP_TOOLS):$(PATH)

# Short criterion runs, enough for the figures to show in CI's log.
QUICK_BENCH := --warm-up-time 0.3 --measurement-time 1

.PHONY: deps test lint unit fuzz bench bench-quick bench-table bench-offload perf-forward perf-control perf-veth perf-takeover perf soak demo walkthrough

deps:
	@scripts/install-deps.sh

lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: deps
	cargo test --workspace --locked

test: lint unit

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, on the stable toolchain without a
# sanitizer): each target for FUZZ_SECONDS, from its seeds (tests/fuzz/corpus) and what earlier
# runs found (kept under the target directory); a crash fails the run and its input is left in
# $(CARGO_TARGET_DIR)/fuzz/artifacts/<target>.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := parse wire pipeline xdp manifest conntrack cni handover
fuzz: deps
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
	cd tests/fuzz && cargo fuzz build -s none --fuzz-dir .
	@for t in $(FUZZ_TARGETS); do \
		dir="$(CARGO_TARGET_DIR)/fuzz"; mkdir -p "$$dir/corpus/$$t" "$$dir/artifacts/$$t"; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		(cd tests/fuzz && cargo fuzz run -s none --fuzz-dir . $$t "$$dir/corpus/$$t" corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix="$$dir/artifacts/$$t/") > "$$dir/$$t.log" 2>&1; rc=$$?; \
		grep -E "DONE|number_of_executed_units" "$$dir/$$t.log"; \
		if [ $$rc -ne 0 ]; then tail -n 60 "$$dir/$$t.log"; exit $$rc; fi; \
	done

bench: deps
	cargo bench -p kxdp-benches --bench pipeline --locked

bench-quick: deps
	cargo bench -p kxdp-benches --bench pipeline --locked -- $(QUICK_BENCH)

# Software segmentation, coalescing and the checksum (tso/*, gro/*, checksum/*), apart from
# the pipeline's table.
bench-offload: deps
	cargo bench -p kxdp-benches --bench offload --locked

# The README's table (ns/packet and Mpps per case) from the last bench run.
bench-table:
	@perf/bench-table.sh "$(CARGO_TARGET_DIR)/criterion"

# Packets per second through kxdp (ClusterIP DNAT + VXLAN encap) next to a bare AF_XDP
# forwarder, on veths in namespaces, in one run (root). FORWARD_ARGS="--seconds 1 --runs 1"
# for a short run; see perf/src/bin/forward.rs for the flags.
perf-forward: deps
	cargo run --release --locked -p kxdp-perf --bin forward -- $(FORWARD_ARGS)

# The control side at scale (10k services, 100k endpoints): first snapshot and single-change
# latency, in process and through kube and the loopback API server. CONTROL_ARGS to resize.
perf-control: deps
	cargo run --release --locked -p kxdp-perf --bin control_scale -- $(CONTROL_ARGS)

# How soon a pod attached by `kxdp-cni` (as a runtime calls it) is served by the agent (root):
# ADD's return to served and to the pod's first packet through the dataplane, p50/p99/max
# over VETH_ARGS="--runs N" pods (default 20).
perf-veth: deps
	cargo build --release --locked -p kxdp-agent --bin kxdp
	cargo build --release --locked -p kxdp-cni --bin kxdp-cni
	cargo run --release --locked -p kxdp-perf --bin veth_served -- $(VETH_ARGS)

# How long pods go without service while node-a's agent is replaced (root): a takeover by a
# new agent and a restart after SIGKILL, TAKEOVER_ARGS="--rounds N --pods N" (more pods, more
# sockets to close and bind). KXDP_BIN picks the agent build.
perf-takeover: deps
	cargo build --release --locked -p kxdp-agent --bin kxdp
	cargo build --release --locked -p kxdp-cni --bin kxdp-cni
	cargo run --release --locked -p kxdp-perf --bin takeover -- $(TAKEOVER_ARGS)

# kxdp against the kernel path (flannel VXLAN + kube-proxy nftables), side by side in one run,
# with the veth path's ceilings (root): packets per second, CPU per packet, iperf3, latency.
# PERF_ARGS=--long for the long profile. Writes perf/results/report.md, report.svg and the raw
# samples (samples.json).
perf: deps
	cargo build --release --locked -p kxdp-agent --bin kxdp
	cargo run --release --locked -p kxdp-perf --bin compare -- --out perf/results $(PERF_ARGS)

# The agents under steady load at half of saturation, with pods and services changing every
# few seconds (root): resident memory, file descriptors, UMEM chunks and conntrack watched on
# both agents, verdicts in the report. The short profile by default (3 minutes); for the hour:
# SOAK_ARGS="--minutes 60 --out perf/results". See perf/src/bin/soak.rs for the flags.
SOAK_ARGS ?=
soak: deps
	cargo build --release --locked -p kxdp-agent --bin kxdp
	cargo build --release --locked -p kxdp-cni --bin kxdp-cni
	cargo run --release --locked -p kxdp-perf --bin soak -- $(SOAK_ARGS)

# The main job (root): two kxdp nodes in namespaces, `kxdp agent` on each, four pods attached
# by `kxdp-cni` as a container runtime attaches them, real traffic through pods and services,
# the results table, then everything torn down.
demo: deps
	cargo build --release --locked -p kxdp-agent --bin kxdp
	cargo build --release --locked -p kxdp-cni --bin kxdp-cni
	cargo run --release --locked -p kxdp-tests --bin demo

# One packet of every path through the pure pipeline on the fixture node (no root needed).
walkthrough: deps
	cargo run --release --locked -p kxdp-testkit --example walkthrough
