#!/usr/bin/env python3
"""Run adiff on the committed tiny reference pipeline (tests/fixtures/tiny-sd) from the
reference runs' own initial latents and compare the final latents with diffusers'
(tests/fixtures/reference/baseline_*.safetensors, made by tools/reference/make_reference.py).

  reference_check.py WORKDIR DTYPE ADIFF [ADIFF ARGS...]
    e.g.  reference_check.py /tmp/rc f32 tools/cuda/run.sh
          reference_check.py /tmp/rc f32 target/release/adiff --cpu

Prints one JSON line per scheduler: max |adiff - diffusers| / max |diffusers| of the final
latents, and whether it is within the tolerance for the dtype. f32: 1e-3. f16: 1e-2 — f16
rounds every UNet activation to 11 significant bits; the same f16 run on the CPU differs from
diffusers' f32 latents by 3.5e-3 (DDIM), 4.1e-3 (Euler), 3.7e-3 (DPM++) (measured
2026-12-02 with `reference_check.py DIR f16 target/release/adiff --cpu`), and 1e-2 leaves
room for GPU kernels' other summation order while still catching a wrong computation
(those differ by O(1)).
"""
import json
import os
import subprocess
import sys

from safetensors.torch import load_file, save_file

TOL = {"f32": 1e-3, "f16": 1e-2}


def main():
    work, dtype, adiff = sys.argv[1], sys.argv[2], sys.argv[3:]
    extra = []
    if adiff and adiff[-1] == "--cpu":  # an option of generate, not of the program
        extra = [adiff.pop()]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    fixtures = os.path.join(root, "tests", "fixtures")
    manifest = json.load(open(os.path.join(fixtures, "reference", "manifest.json")))
    gen = manifest["generation"]
    os.makedirs(work, exist_ok=True)
    bad = False
    for run in manifest["baseline"]:
        ref = load_file(os.path.join(fixtures, "reference", run["file"]))
        init = os.path.join(work, f"init-{run['scheduler']}.safetensors")
        out = os.path.join(work, f"final-{run['scheduler']}-{dtype}.safetensors")
        save_file({"latents": ref["init_latents"].contiguous()}, init)
        cmd = adiff + [
            "generate", "--mode", "baseline",
            "--weights", os.path.join(fixtures, "tiny-sd"),
            "--prompt", gen["prompt"], "--negative", gen["negative_prompt"],
            "--guidance", str(gen["guidance_scale"]), "--steps", str(run["steps"]),
            "--scheduler", run["scheduler"], "--width", str(gen["width"]),
            "--height", str(gen["height"]), "--init-latents", init, "--dtype", dtype,
            "--latents-out", out, "--out", os.path.join(work, f"{run['scheduler']}-{dtype}.png"),
        ] + extra
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(json.dumps({"scheduler": run["scheduler"], "dtype": dtype, "error": p.stderr.strip()[-500:]}))
            bad = True
            continue
        got = load_file(out)["latents"].double()
        want = ref["final_latents"].double()
        rel = float((got - want).abs().max() / want.abs().max())
        ok = rel <= TOL[dtype]
        bad |= not ok
        print(json.dumps({"scheduler": run["scheduler"], "dtype": dtype, "rel": rel,
                          "tolerance": TOL[dtype], "ok": ok, "stderr": p.stderr.strip()[-300:]}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
