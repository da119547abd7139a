#!/usr/bin/env bash
# The GPU measurement, on a machine with an NVIDIA GPU (driver >= 580), PyTorch and
# transformers, and no Rust, no network: carry target/cuda-release/adiff (tools/cuda/build.sh)
# and a diffusers wheel in target/wheels (pip download --no-deps -d target/wheels
# diffusers==0.42.1). Under 8 minutes on an H100/H200. Prints one Markdown table:
#  1. the committed tiny reference run on CUDA in f32 and f16 against diffusers' latents;
#  2. one CFG UNet call, f16: SD 1.5 size at 512x512 and SDXL size at 1024x1024, adiff vs
#     diffusers on the same GPU and random weights, outputs compared;
#  3. adiff compare (baseline vs adaptive, 50 DDIM steps) at 512x512 on a random-weight
#     SD 1.5-size pipeline: wall times, noise-predictor calls, peak GPU memory;
#  4. one guided AnimateDiff call, f16: SD 1.5 + a motion adapter of v1-5-2's config, 16
#     frames at 256x256, adiff vs diffusers' UNetMotionModel, outputs compared.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${WORK:-/tmp/adiff-device-check}
mkdir -p "$work"
py=${PYTHON:-python3}
run=tools/cuda/run.sh
log() { echo "[$(date +%T)] $*" >&2; }

if ! "$py" -c 'import diffusers' 2>/dev/null; then
    whl=$(ls target/wheels/diffusers-*.whl 2>/dev/null | head -1)
    [ -n "$whl" ] || { echo "error: diffusers is not installed and target/wheels has no wheel" >&2; exit 1; }
    "$py" -m pip install --quiet --no-deps --no-index --target "$work/py" "$whl"
    export PYTHONPATH="$work/py${PYTHONPATH:+:$PYTHONPATH}"
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
log "GPU: $gpu"

# Peak GPU memory of a command: nvidia-smi sampled every 50 ms, minus the idle level.
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
with_gpu_peak() { # OUTFILE CMD... ; writes the peak MiB above idle to OUTFILE.peak
    local out=$1; shift
    local idle; idle=$(gpu_used)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$out.samples" &
    local smi=$!
    "$@" >"$out"
    local rc=$?
    kill "$smi" 2>/dev/null || true
    wait "$smi" 2>/dev/null || true
    sort -n "$out.samples" | tail -1 | awk -v i="$idle" '{print $1 - i}' >"$out.peak"
    return $rc
}

log "1/4 tiny reference on CUDA"
"$py" tools/cuda/reference_check.py "$work/ref" f32 "$run" >"$work/ref-f32.jsonl" || true
"$py" tools/cuda/reference_check.py "$work/ref" f16 "$run" >"$work/ref-f16.jsonl" || true

log "2/4 UNet calls, f16"
unet_rows=()
for spec in "sd15 512" "sdxl 1024"; do
    set -- $spec
    fam=$1 size=$2 dir="$work/unet-$1"
    [ -f "$dir/config.json" ] || "$py" tools/perf/unet_torch.py make "$dir" --family "$fam" --dtype f16 --sizes "$size"
    a=$("$run" unet-call --unet "$dir" --size "$size" --calls 10 --dtype f16 --out "$dir/adiff-$size.safetensors" || echo '{"error": "adiff failed"}')
    t=$("$py" tools/perf/unet_torch.py run "$dir" "$size" --calls 10 --device cuda --dtype f16)
    g=$("$py" tools/perf/unet_torch.py agree "$dir/adiff-$size.safetensors" "$dir/torch-$size-f16.safetensors" || echo '{"rel": null}')
    unet_rows+=("$fam|$a|$t|$g")
done

log "3/4 adiff compare at 512x512 (random SD 1.5-size pipeline)"
pipe="$work/sd15-pipe"
[ -f "$pipe/unet/config.json" ] || "$py" tools/perf/unet_torch.py pipeline "$pipe"
with_gpu_peak "$work/compare.log" "$run" compare --weights "$pipe" --prompt "a lighthouse on a cliff at dusk" \
    --steps 50 --scheduler ddim --width 512 --height 512 --out "$work/compare.png" --trace "$work/compare.json" \
    || log "compare failed (see $work/compare.log)"

log "4/4 AnimateDiff call, f16 (SD 1.5 + motion adapter v1-5-2 sizes, 16 frames, 256x256)"
ad="$work/animatediff"
[ -f "$ad/inputs-256-16.safetensors" ] || "$py" tools/perf/video_torch.py make-animatediff "$ad" --sd15 "$work/unet-sd15" --size 256 --frames 16
a=$("$run" unet-call --unet "$work/unet-sd15" --motion "$ad/motion_adapter" --inputs "$ad/inputs-256-16.safetensors" --calls 10 --dtype f16 --out "$ad/adiff-256-16.safetensors" || echo '{"error": "adiff failed"}')
t=$("$py" tools/perf/video_torch.py run "$ad" --family animatediff --sd15 "$work/unet-sd15" --size 256 --frames 16 --calls 10 --device cuda --dtype f16 || echo '{"error": "diffusers failed"}')
g=$("$py" tools/perf/video_torch.py agree "$ad/adiff-256-16.safetensors" "$ad/torch-animatediff-256-16-f16.safetensors" || echo '{"rel": null}')
unet_rows+=("animatediff|$a|$t|$g")

"$py" - "$gpu" "$work" "${unet_rows[@]}" <<'PY'
import json, sys
gpu, work, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"GPU: {gpu}\n")
print("| tiny reference (10 steps) | dtype | max rel. diff to diffusers | tolerance | ok |")
print("|---|---|---|---|---|")
for dt in ("f32", "f16"):
    for line in open(f"{work}/ref-{dt}.jsonl"):
        r = json.loads(line)
        if "error" in r:
            print(f"| {r['scheduler']} | {dt} | error: {r['error'][:120]} | | no |")
        else:
            print(f"| {r['scheduler']} | {dt} | {r['rel']:.2e} | {r['tolerance']:g} | {'yes' if r['ok'] else 'NO'} |")
print()
print("| UNet CFG call, f16 | adiff ms | diffusers ms | ratio | outputs differ (rel. L2) | share of the physical limit |")
print("|---|---|---|---|---|---|")
for row in rows:
    fam, a, t, g = row.split("|")
    a, t, g = json.loads(a), json.loads(t), json.loads(g)
    if "ms" not in a or "ms" not in t:
        print(f"| {fam} | {a.get('ms', 'failed')} | {t.get('ms', 'failed')} | | | |")
        continue
    # ~1.6 ms: SD 1.5's ~1.6 TFLOP per 512x512 CFG call at ~1 PFLOP/s dense f16.
    limit = f"{100 * 1.6 / a['ms']:.0f} % of ~1.6 ms" if fam == "sd15" else ""
    rel = "n/a" if g.get("rel") is None else f"{g['rel']:.1e}"
    name = {"sd15": "SD 1.5, 512×512", "sdxl": "SDXL, 1024×1024",
            "animatediff": "AnimateDiff (SD 1.5 + v1-5-2), 16 frames 256×256"}[fam]
    print(f"| {name} | {a['ms']:.1f} | {t['ms']:.1f} | {a['ms'] / t['ms']:.2f}× | {rel} | {limit} |")
print()
try:
    tr = json.load(open(f"{work}/compare.json"))
    peak = open(f"{work}/compare.log.peak").read().strip()
    print("| adiff compare, 512×512, 50 DDIM steps | wall ms | noise-predictor calls |")
    print("|---|---|---|")
    for side in ("baseline", "adaptive"):
        s = tr[side]["trace"] if "trace" in tr[side] else tr[side]
        print(f"| {side} | {s['elapsed_ms']:.0f} | {s['unet_calls']} |")
    print(f"\npeak GPU memory during compare (above idle): {peak} MiB")
except Exception as e:  # a failed compare is reported, not hidden
    print(f"compare: no result ({e})")
PY
