#!/usr/bin/env bash
# One SD 1.5 UNet classifier-free-guidance call (batch 2), adiff vs PyTorch + diffusers, on
# the same random weights and inputs, on this machine's CPU with all cores on both sides:
# one table of time and peak resident memory, and a check that both computed the same
# output (relative L2 difference ≤ 1e-3). A benchmark, not a test: run it by hand.
#
#   tools/perf/unet_vs_torch.sh [SIZES...]      default: 256 512
#
# Env: CALLS (timed calls per side after one warm-up, default 2), PERF_DIR (default
# target/perf). The venv (PyTorch + diffusers from PyPI, ~3 GB), the 3.4 GB weights and the
# outputs live under PERF_DIR; nothing is written outside target/.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256 512)
calls=${CALLS:-2}
perf=${PERF_DIR:-target/perf}
venv="$perf/venv"
data="$perf/sd15-unet"
mkdir -p "$perf"

# shellcheck source=tools/perf/torch_env.sh
source tools/perf/torch_env.sh
ensure_torch_venv "$venv"
cargo build --release --locked --quiet
adiff=target/release/adiff
ensure_sd15_unet "$venv/bin/python" "$data"

rows=()
for size in "${sizes[@]}"; do
    echo "size $size: adiff" >&2
    a=$("$adiff" unet-call --cpu --unet "$data" --size "$size" --calls "$calls" --out "$data/adiff-$size.safetensors")
    echo "size $size: PyTorch" >&2
    t=$("$venv/bin/python" tools/perf/unet_torch.py run "$data" "$size" --calls "$calls")
    g=$("$venv/bin/python" tools/perf/unet_torch.py agree "$data/adiff-$size.safetensors" "$data/torch-$size.safetensors")
    rows+=("$a|$t|$g")
done

"$venv/bin/python" - "$(nproc)" "${rows[@]}" <<'PY'
import json, sys
cores = sys.argv[1]
print(f"SD 1.5 UNet, one CFG call (batch 2), f32, CPU ({cores} cores, all used by both sides)")
print()
print("| image | adiff ms | PyTorch ms | time ratio | adiff peak RSS | PyTorch peak RSS | memory ratio | outputs differ (rel. L2) |")
print("|---|---|---|---|---|---|---|---|")
bad = False
for row in sys.argv[2:]:
    a, t, g = (json.loads(x) for x in row.split("|"))
    gb = lambda b: f"{b / 1e9:.2f} GB"
    ok = g["rel"] is not None and g["rel"] <= 1e-3
    bad |= not ok
    print(f"| {a['size']}×{a['size']} | {a['ms']:.0f} | {t['ms']:.0f} | {a['ms'] / t['ms']:.2f}× "
          f"| {gb(a['peak_rss_bytes'])} | {gb(t['peak_rss_bytes'])} "
          f"| {a['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}× | {g['rel']:.1e}{'' if ok else ' (over 1e-3!)'} |")
print()
print(f"torch {t['torch']}, {t['threads']} threads; adiff {a['threads']} threads")
sys.exit(1 if bad else 0)
PY
