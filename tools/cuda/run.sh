#!/usr/bin/env bash
# Start the CUDA build of adiff (target/cuda-release/adiff, made by tools/cuda/build.sh)
# with the libraries it links:
#  - the NVIDIA driver's libcuda.so.1 when the system has one, else the build's stub
#    (adiff then runs on the CPU and says so on stderr);
#  - CUDA 13 libnvrtc / libcurand / libcublas / libcublasLt from the build's wheels
#    (+ libcudart) (target/cuda-toolchain) or, on a machine without them, from the NVIDIA wheels that
#    PyTorch installed into python3's site-packages.
#   tools/cuda/run.sh generate --model shapes --prompt "a red circle" --out x.png
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${ADIFF_CUDA_BIN:-$root/target/cuda-release/adiff}
[ -x "$bin" ] || { echo "error: $bin does not exist: build it with tools/cuda/build.sh" >&2; exit 1; }

dirs=()
need=(libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13 libcudart.so.13)
for py in "$root/target/cuda-toolchain/venv/bin/python" python3; do
    command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
    for base in $("$py" -c 'import nvidia, sys; print(" ".join(nvidia.__path__))' 2>/dev/null); do
        for lib in "${need[@]}"; do
            found=$(find "$base" -maxdepth 3 -name "$lib" 2>/dev/null | head -1)
            [ -n "$found" ] && dirs+=("$(dirname "$found")")
        done
    done
    [ ${#dirs[@]} -gt 0 ] && break
done
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    stub="$root/target/cuda-toolchain/link"
    if [ -e "$stub/libcuda.so.1" ]; then
        dirs+=("$stub")
    else
        echo "error: no NVIDIA driver (libcuda.so.1) on this machine and no stub in $stub" >&2
        exit 1
    fi
fi
path=$(printf '%s\n' "${dirs[@]}" | awk '!seen[$0]++' | paste -sd:)
export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$bin" "$@"
