#!/usr/bin/env bash
# One guided video UNet call (batch 2 for CFG), adiff vs PyTorch + diffusers on the same
# random weights and inputs, on this machine's CPU with all cores on both sides: ModelScope
# text-to-video (the published UNet3D config of the 1.7B pipeline: 1.41B parameters) and AnimateDiff (SD 1.5's UNet + a
# motion adapter of v1-5-2's config), 16 frames at 256×256 by default. One table of time and
# peak resident memory, and a check that both sides computed the same output (relative L2
# ≤ 1e-3). A benchmark, not a test: run it by hand.
#
#   tools/perf/video_vs_torch.sh [SIZE] [FRAMES]      default: 256 16
#
# Env: CALLS (timed calls per side after one warm-up, default 1), PERF_DIR (default
# target/perf). Needs the venv and the SD 1.5 UNet that tools/perf/unet_vs_torch.sh makes
# (PERF_DIR/venv, PERF_DIR/sd15-unet), or VENV pointing at a Python with torch + diffusers.
# The weights (5.6 GB ModelScope UNet, 1.8 GB motion adapter) and outputs live under PERF_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-256}
frames=${2:-16}
calls=${CALLS:-1}
perf=${PERF_DIR:-target/perf}
venv=${VENV:-$perf/venv}
py="$venv/bin/python"
mkdir -p "$perf"
# shellcheck source=tools/perf/torch_env.sh
source tools/perf/torch_env.sh
ensure_torch_venv "$venv"
cargo build --release --locked --quiet
adiff=target/release/adiff
[ -f "$perf/sd15-unet/config.json" ] || "$py" tools/perf/unet_torch.py make "$perf/sd15-unet" --sizes 256
ms="$perf/modelscope"
ad="$perf/animatediff"
inputs="inputs-$size-$frames.safetensors"
[ -f "$ms/$inputs" ] || "$py" tools/perf/video_torch.py make-modelscope "$ms" --size "$size" --frames "$frames"
[ -f "$ad/$inputs" ] || "$py" tools/perf/video_torch.py make-animatediff "$ad" --sd15 "$perf/sd15-unet" --size "$size" --frames "$frames"

rows=()
for family in modelscope animatediff; do
    if [ "$family" = modelscope ]; then
        dir=$ms
        a=$("$adiff" unet-call --cpu --unet "$ms" --inputs "$ms/$inputs" --calls "$calls" --out "$ms/adiff-$size-$frames.safetensors")
    else
        dir=$ad
        a=$("$adiff" unet-call --cpu --unet "$perf/sd15-unet" --motion "$ad/motion_adapter" --inputs "$ad/$inputs" --calls "$calls" --out "$ad/adiff-$size-$frames.safetensors")
    fi
    echo "$family: adiff done, PyTorch next" >&2
    t=$("$py" tools/perf/video_torch.py run "$dir" --family "$family" --sd15 "$perf/sd15-unet" --size "$size" --frames "$frames" --calls "$calls")
    g=$("$py" tools/perf/video_torch.py agree "$dir/adiff-$size-$frames.safetensors" "$dir/torch-$family-$size-$frames.safetensors")
    rows+=("$family|$a|$t|$g")
done

"$py" - "$(nproc)" "$size" "$frames" "${rows[@]}" <<'PY'
import json, sys
cores, size, frames = sys.argv[1:4]
print(f"One guided video UNet call (batch 2), {frames} frames at {size}×{size}, f32, CPU ({cores} cores, all used by both sides)")
print()
print("| model | adiff ms | PyTorch ms | time ratio | adiff peak RSS | PyTorch peak RSS | memory ratio | outputs differ (rel. L2) |")
print("|---|---|---|---|---|---|---|---|")
for row in sys.argv[4:]:
    fam, a, t, g = row.split("|")
    a, t, g = (json.loads(x) for x in (a, t, g))
    gb = lambda b: f"{b / 1e9:.2f} GB"
    ok = g["rel"] is not None and g["rel"] <= 1e-3
    print(f"| {fam} | {a['ms']:.0f} | {t['ms']:.0f} | {a['ms'] / t['ms']:.2f}× "
          f"| {gb(a['peak_rss_bytes'])} | {gb(t['peak_rss_bytes'])} "
          f"| {a['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}× | {g['rel']:.1e}{'' if ok else ' (over 1e-3!)'} |")
print()
print(f"torch {t['torch']}, {t['threads']} threads; adiff {a['threads']} threads")
PY
