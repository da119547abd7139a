#!/usr/bin/env python3
"""Reference latents of T-GATE's official pipeline on the tiny pipeline.

Runs PyPI ``tgate`` 1.0.0 (``tgate.TgateSDLoader`` → ``pipe.tgate(...)``, identical to
HaozheLiu-ST/T-GATE ``tgate/SD.py`` and ``tgate/tgate_utils.py``) with diffusers on
``tests/fixtures/tiny-sd`` for several (scheduler, steps, gate_step, sp_interval,
fi_interval, warm_up) cases and writes ``tests/fixtures/reference/tgate.safetensors``: the
initial latents ``init_<scheduler>`` (scaled by the scheduler's initial σ, as adiff's
``--init-latents`` take them) and the final latents of every case (``case{i}``), with the
cases in ``tgate.json``. ``tests/method_references.rs`` runs the same cases through
``adiff generate --method tgate:...`` and compares.

    python tools/reference/make_tgate_reference.py   # CPU, float32, a few seconds
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.torch import save_file
from tgate import TgateSDLoader

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
OUT = REPO / "tests" / "fixtures" / "reference"

PROMPT = "a red circle at the top left"
NEGATIVE = "blurry"
GUIDANCE = 7.5
SEED = 7
# (scheduler, steps, gate_step, sp_interval, fi_interval, warm_up)
CASES = [
    ("ddim", 12, 6, 2, 1, 1),
    ("ddim", 12, 8, 3, 2, 2),
    ("ddim", 10, 4, 5, 1, 0),
    ("ddim", 10, 10, 5, 1, 2),
    ("euler", 12, 6, 2, 2, 1),
]
SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}


def main() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    tensors = {}
    cases = []
    for i, (scheduler, steps, gate, sp, fi, warm) in enumerate(CASES):
        pipe = StableDiffusionPipeline.from_pretrained(
            str(MODEL_DIR), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        )
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
        pipe.scheduler.set_timesteps(steps)
        tensors[f"init_{scheduler}"] = (noise * pipe.scheduler.init_noise_sigma).contiguous()
        pipe = TgateSDLoader(pipe)
        out = pipe.tgate(
            PROMPT,
            negative_prompt=NEGATIVE,
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            latents=noise.clone(),
            output_type="latent",
            gate_step=gate,
            sp_interval=sp,
            fi_interval=fi,
            warm_up=warm,
        ).images
        tensors[f"case{i}"] = out.contiguous()
        cases.append(
            {
                "tensor": f"case{i}",
                "init": f"init_{scheduler}",
                "scheduler": scheduler,
                "steps": steps,
                "gate_step": gate,
                "sp_interval": sp,
                "fi_interval": fi,
                "warm_up": warm,
            }
        )
        print(f"case {i}: {scheduler} {steps} steps, gate {gate}, sp {sp}, fi {fi}, warm {warm}: |x| max {out.abs().max():.4f}")
    save_file(tensors, str(OUT / "tgate.safetensors"))
    meta = {
        "generator": "tools/reference/make_tgate_reference.py",
        "tgate": "tgate 1.0.0 (PyPI), TgateSDLoader",
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "guidance_scale": GUIDANCE,
        "cases": cases,
    }
    (OUT / "tgate.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
