#!/usr/bin/env bash
# Start the real desktop app under Xvfb, drive it with xdotool like a user (type a prompt,
# Ctrl+Enter, change δ, switch views, export), and write the screenshots that README shows
# into screenshots/.
#
#   tools/screenshots.sh                 # screenshots (tiny random-weight pipeline, 128×128)
#   tools/screenshots.sh --frame-times   # also measure UI frame times during a heavier run
#   tools/screenshots.sh --frame-times-only
#   tools/screenshots.sh --checkpoint-only   # only 09: a single-file checkpoint with LoRAs
#   tools/screenshots.sh --clip-only     # only 11: the built-in model's clips in the player
#
# Needs Xvfb, xdotool and ImageMagick's `import`:
#   apt-get install -y xvfb xdotool imagemagick x11-utils
# Screenshots use the built-in shapes model (assets/models/shapes, 32×32) unless
# ADIFF_SCREENSHOT_MODEL names another diffusers folder (with ADIFF_SCREENSHOT_PROMPT and
# ADIFF_SCREENSHOT_SIZE). The frame-time run uses the tiny random-weight test pipeline
# (tests/fixtures/tiny-sd) at 256×256, a heavier load: its images are noise, by design.
#
# Mouse positions below are for the app's 1600×1000 window at UI scale 1.0 (the settings
# file written below); they are checked by looking at the screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."

FRAME_TIMES=0
SHOTS=1
CHECKPOINT=1
CLIP=1
case "${1:-}" in
--frame-times) FRAME_TIMES=1 ;;
--frame-times-only) FRAME_TIMES=1 SHOTS=0 CHECKPOINT=0 CLIP=0 ;;
--checkpoint-only) SHOTS=0 CLIP=0 ;;
--clip-only) SHOTS=0 CHECKPOINT=0 ;;
"") ;;
*)
    echo "usage: $0 [--frame-times | --frame-times-only | --checkpoint-only | --clip-only]" >&2
    exit 2
    ;;
esac
OUT=${OUT:-screenshots}
MODEL=${ADIFF_SCREENSHOT_MODEL:-$PWD/assets/models/shapes}
PROMPT=${ADIFF_SCREENSHOT_PROMPT:-a large red circle at the top left and a small blue square in the center on a gray background}
SIZE=${ADIFF_SCREENSHOT_SIZE:-32}
FT_MODEL=$PWD/tests/fixtures/tiny-sd
DISPLAY_NUM=${DISPLAY_NUM:-97}

for tool in Xvfb xdotool import xdpyinfo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing $tool: apt-get install -y xvfb xdotool imagemagick x11-utils" >&2
        exit 1
    fi
done

cargo build --bin adiff
BIN=$PWD/target/debug/adiff
mkdir -p "$OUT"
tmp=$(mktemp -d)
APP=""
Xvfb ":$DISPLAY_NUM" -screen 0 1600x1000x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
XVFB=$!
cleanup() {
    [[ -n "$APP" ]] && kill "$APP" 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
export DISPLAY=":$DISPLAY_NUM"
for _ in $(seq 100); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done

# write_settings SIZE STEPS MODEL CUSTOM_SIZE(true|false): the app's settings for one session.
write_settings() {
    cat >"$tmp/settings.json" <<EOF
{"prompt": "", "model": {"kind": "builtin", "value": "$3"}, "scheduler": "ddim",
 "steps": $2, "guidance": 7.5, "seed": 42, "custom_size": $4, "width": $1, "height": $1,
 "delta": 0.01, "max_skips": 4, "force_cpu": true, "view": "side_by_side",
 "export_dir": "$tmp/exports", "ui_scale": 1.0, "auto_rerun": true}
EOF
}

# start_app [extra env...]: launch and wait for the window.
start_app() {
    env XDG_DATA_HOME="$tmp/data" ADIFF_SETTINGS="$tmp/settings.json" "$@" "$BIN" gui \
        >"$tmp/app.log" 2>&1 &
    APP=$!
    WID=$(xdotool search --sync --name "Adaptive Diffusion")
    xdotool windowfocus --sync "$WID" || true
    sleep 1.5
}

# wait_title WORD [SECONDS]: until the window title says [WORD].
wait_title() {
    local deadline=$((SECONDS + ${2:-300}))
    until xdotool getwindowname "$WID" | grep -q "\[$1\]"; do
        if ((SECONDS > deadline)); then
            echo "timed out waiting for [$1]; title: $(xdotool getwindowname "$WID")" >&2
            cat "$tmp/app.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

shot() {
    sleep 0.4 # let the last event's frame reach the screen
    import -window root "$OUT/$1.png"
    echo "wrote $OUT/$1.png"
}

click() { xdotool mousemove --sync "$1" "$2" click 1; sleep 0.3; }

if ((SHOTS)); then
write_settings "$SIZE" 50 "$MODEL" false
start_app

# 1. Type the prompt (click into the prompt field first).
click 184 75
xdotool type --delay 25 "$PROMPT"
shot 01-prompt

# 2. Ctrl+Enter: both pipelines run, live previews and curves stream in.
xdotool key ctrl+Return
wait_title running 60
sleep 2.5
shot 02-running

# 3. Both done: images, numbers, PSNR/SSIM, curves with skip markers.
wait_title done 300
shot 03-done

# 4. δ = 0.05 typed into the δ field: only the adaptive side re-runs (baseline cached).
click 135 735
xdotool key ctrl+a
xdotool type --delay 40 "0.05"
xdotool key Return
sleep 0.6
wait_title done 300
shot 04-delta-rerun

# 5. Difference view (Ctrl+2), then back (Ctrl+1).
xdotool key ctrl+2
shot 05-difference
xdotool key ctrl+1

# 6. Export the comparison PNG (button in the Export section) and keep a copy.
click 84 900
for _ in $(seq 100); do
    f=$(ls "$tmp"/exports/*-compare.png 2>/dev/null | head -n 1 || true)
    [[ -n "$f" ]] && break
    sleep 0.2
done
[[ -n "$f" ]] || { echo "the export did not appear" >&2; exit 1; }
cp "$f" "$OUT/06-export-composite.png"
echo "wrote $OUT/06-export-composite.png (exported by the app)"

# 7. F12: the frame-time overlay.
xdotool key F12
shot 07-frame-overlay
xdotool key F12

# 10. A small window (1280×720): the panel keeps its width, results and curves use the rest.
xdotool windowsize "$WID" 1280 720
sleep 2
import -window "$WID" "$OUT/10-small-window-1280x720.png"
echo "wrote $OUT/10-small-window-1280x720.png"
# Back to full size before quitting: the app keeps its window size for the next start.
xdotool windowsize "$WID" 1600 1000
sleep 1
xdotool key ctrl+q
wait "$APP" || true
APP=""
fi

if ((CHECKPOINT)); then
    # 9. Model → Local file…: the tiny single-file SD 1.x checkpoint with two LoRAs in the
    # list (one ticked at 0.8, one unticked), run; the model line says "1 LoRA".
    SF=$PWD/tests/fixtures/single-file
    cat >"$tmp/settings.json" <<EOF
{"prompt": "a lighthouse on a cliff at sunset",
 "model": {"kind": "local_file", "value": "$SF/tiny-sd1.safetensors"},
 "loras": [{"path": "$SF/lora-sd1-kohya.safetensors", "scale": 0.8, "enabled": true},
           {"path": "$SF/lora-sd1-peft.safetensors", "scale": 1.0, "enabled": false}],
 "scheduler": "ddim", "steps": 25, "guidance": 7.5, "seed": 42, "custom_size": true,
 "width": 128, "height": 128, "force_cpu": true, "view": "side_by_side",
 "export_dir": "$tmp/exports", "ui_scale": 1.0, "auto_rerun": true}
EOF
    start_app
    xdotool key ctrl+Return
    wait_title done 300
    shot 09-own-checkpoint
    xdotool key ctrl+q
    wait "$APP" || true
    APP=""
fi

if ((CLIP)); then
    # 11. The built-in model with "Make a clip" ticked, 8 frames: both clips play side by
    # side in sync, the per-frame PSNR strip under them; stepped a few frames on.
    cat >"$tmp/settings.json" <<EOF
{"prompt": "", "model": {"kind": "builtin", "value": "$MODEL"}, "scheduler": "ddim",
 "steps": 50, "guidance": 7.5, "seed": 42, "custom_size": false, "width": 32, "height": 32,
 "delta": 0.01, "max_skips": 4, "force_cpu": true, "view": "side_by_side", "frames": 8,
 "clip": true, "export_dir": "$tmp/exports", "ui_scale": 1.0, "auto_rerun": true}
EOF
    start_app
    click 184 75
    xdotool type --delay 25 "${ADIFF_SCREENSHOT_CLIP_PROMPT:-a red circle moving right on a black background}"
    xdotool key ctrl+Return
    wait_title done 600
    sleep 1
    click 1400 624 # the results area beside the summary line (nothing focusable) takes the keys
    sleep 1 # presses sent while the click's focus change settles are lost
    # Six frames on from the first (the player starts paused), a key every 150 ms so that
    # each lands in its own frame.
    xdotool key --delay 150 Right Right Right Right Right Right
    sleep 1
    shot 11-clip-player
    xdotool key ctrl+q
    wait "$APP" || true
    APP=""
fi

if ((FRAME_TIMES)); then
    # A heavier run: 256×256, 30 steps (about 0.8 s per step on a 2-core CPU), with
    # continuous repaints while it runs; the app writes the frame-time summary on exit.
    write_settings 256 30 "$FT_MODEL" true
    start_app ADIFF_FRAME_STATS="$OUT/frame-times.json" ${ADIFF_VSYNC:+ADIFF_VSYNC=$ADIFF_VSYNC}
    click 184 75
    xdotool type --delay 25 "frame-time measurement run"
    sleep 3 # idle frames for comparison
    xdotool key ctrl+Return
    wait_title running 60
    sleep 30 # past the model's load and warm-up (a debug build): steps stream in
    shot 08-frame-times-running
    wait_title done 900
    xdotool key ctrl+q
    wait "$APP" || true
    APP=""
    echo "wrote $OUT/frame-times.json:"
    cat "$OUT/frame-times.json"
fi
