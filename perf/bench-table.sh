#!/usr/bin/env bash
# Print the pipeline benches as a markdown table (ns/packet and Mpps on one core) from
# criterion's estimates. Usage: perf/bench-table.sh [criterion-dir]
set -euo pipefail
dir=${1:-${CARGO_TARGET_DIR:-target}/criterion}
[[ -d $dir ]] || { echo "no criterion results in $dir; run: make bench" >&2; exit 1; }
python3 - "$dir" <<'PY'
import json, os, sys
root = sys.argv[1]
rows = []
for dirpath, _, files in os.walk(root):
    if "estimates.json" in files and os.path.basename(dirpath) == "new":
        bench = os.path.relpath(os.path.dirname(dirpath), root)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        name = meta.get("full_id", bench)
        # The offload benches (make bench-offload) count segments and bytes, not packets.
        if name.split("/")[0] in ("tso", "gro", "checksum"):
            continue
        thr = (meta.get("throughput") or {}).get("Elements", 1)
        ns = est["median"]["point_estimate"] / thr
        rows.append((name, ns))
print("| bench (batch of 64) | ns/packet | Mpps/core |")
print("|---|---:|---:|")
for name, ns in sorted(rows):
    print(f"| {name} | {ns:.1f} | {1e3 / ns:.2f} |")
PY
