#!/usr/bin/env bash
# bf16 on the CPU: one SD 1.5 UNet classifier-free-guidance call (batch 2) in adiff bf16,
# adiff f32, PyTorch bf16 and PyTorch f32, on the same random weights (stored in f32) and
# inputs, all cores on every side, each side in its own process: time, peak resident memory,
# and each output's relative L2 difference from its own f32 output. A benchmark, not a test:
# run it by hand.
#
#   tools/perf/bf16_vs_torch.sh [SIZES...]      default: 256 512
#
# Env: CALLS (timed calls per side after one warm-up, default 2), PERF_DIR (default
# target/perf), ADIFF (the binary; default: build target/release/adiff). The venv, the
# 3.4 GB weights and the outputs live under PERF_DIR (shared with unet_vs_torch.sh).
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
if [ -z "${ADIFF:-}" ]; then
    cargo build --release --locked --quiet
    ADIFF=target/release/adiff
fi
ensure_sd15_unet "$venv/bin/python" "$data"
py="$venv/bin/python"
date -u '+%F %H:%M UTC'
grep -m1 'model name' /proc/cpuinfo || true

rows=()
for size in "${sizes[@]}"; do
    for dt in f32 bf16; do
        echo "size $size: adiff $dt" >&2
        a=$("$ADIFF" unet-call --cpu --dtype "$dt" --unet "$data" --size "$size" --calls "$calls" \
            --out "$data/adiff-$size-$dt.safetensors")
        echo "size $size: PyTorch $dt" >&2
        t=$("$py" tools/perf/unet_torch.py run "$data" "$size" --calls "$calls" --dtype "$dt")
        rows+=("$size|$dt|$a|$t")
    done
    ga=$("$py" tools/perf/unet_torch.py agree "$data/adiff-$size-bf16.safetensors" "$data/adiff-$size-f32.safetensors")
    gt=$("$py" tools/perf/unet_torch.py agree "$data/torch-$size-bf16.safetensors" "$data/torch-$size.safetensors")
    gx=$("$py" tools/perf/unet_torch.py agree "$data/adiff-$size-f32.safetensors" "$data/torch-$size.safetensors")
    rows+=("$size|agree|$ga|$gt|$gx")
done

"$py" - "$(nproc)" "${rows[@]}" <<'PY'
import json, sys
cores = sys.argv[1]
print(f"SD 1.5 UNet, one CFG call (batch 2), CPU ({cores} cores, all used by every side)")
print()
print("| image | side | ms | vs adiff f32 | peak RSS | vs adiff f32 | output vs its f32 (rel. L2) |")
print("|---|---|---:|---:|---:|---:|---:|")
by = {}
agree = {}
for row in sys.argv[2:]:
    size, kind, *rest = row.split("|")
    if kind == "agree":
        agree[size] = [json.loads(x) for x in rest]
    else:
        by[(size, kind)] = [json.loads(x) for x in rest]
gb = lambda b: f"{b / 1e9:.2f} GB"
for size in dict.fromkeys(s for s, _ in by):
    a32, t32 = by[(size, "f32")]
    a16, t16 = by[(size, "bf16")]
    ga, gt, gx = agree[size]
    for name, r, diff in [("adiff f32", a32, None), ("adiff bf16", a16, ga["rel"]),
                          ("PyTorch f32", t32, gx["rel"]), ("PyTorch bf16", t16, gt["rel"])]:
        d = "—" if diff is None else f"{diff:.1e}"
        if name == "PyTorch f32":
            d += " (vs adiff f32)"
        print(f"| {size}×{size} | {name} | {r['ms']:.0f} | {r['ms'] / a32['ms']:.2f}× "
              f"| {gb(r['peak_rss_bytes'])} | {r['peak_rss_bytes'] / a32['peak_rss_bytes']:.2f}× | {d} |")
print()
print(f"torch {t32['torch']}, {t32['threads']} threads; adiff {a32['threads']} threads")
PY
