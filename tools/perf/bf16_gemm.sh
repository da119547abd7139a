#!/usr/bin/env bash
# GFLOP/s of each bf16 product path this CPU can run (src/model/kernels/bf16: AMX,
# AVX512-bf16, portable) against the f32 `gemm` product, at SD 1.5 linear and convolution
# sizes (M×N×K, with M the tokens or pixels of a batch-2 CFG call): with the activations
# rounded per call, the product alone in both output layouts, the rounding alone, and whole
# layers on tensors. A measurement, not a test: run by hand.
#
#   tools/perf/bf16_gemm.sh
#
# Env: PROFILE (cargo profile, default release). With PROFILE=dev the crate itself is built
# at opt-level 3 (its dependencies already are optimised), which reuses a debug build.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${PROFILE:-release}
if [ "$profile" = dev ]; then
    export CARGO_PROFILE_DEV_OPT_LEVEL=3
fi
date -u +%F
grep -m1 'model name' /proc/cpuinfo || true
cargo test --locked --profile "$profile" --lib model::kernels::bf16::tests::gflops \
    -- --ignored --nocapture --exact
