#!/usr/bin/env python3
"""Reference latents of DeepCache's official helper on the tiny pipeline.

Runs PyPI ``DeepCache`` 0.1.1 (``DeepCache.DeepCacheSDHelper``, identical to
horseee/DeepCache ``DeepCache/extension/deepcache.py``) with diffusers 0.42.1 on
``tests/fixtures/tiny-sd`` for several (scheduler, steps, cache_interval, cache_branch_id)
cases and writes ``tests/fixtures/reference/deepcache.safetensors``: the initial latents
``init`` (already scaled by the scheduler's initial σ) and the final latents of every case
(``case{i}``), with the cases in ``deepcache.json``. ``tests/method_references.rs`` runs
the same cases through ``adiff generate --method deepcache:...`` and compares.

The pipeline is reloaded for every case: the helper's ``disable()`` does not unwrap the
whole-block wrappers it installed, so a second ``enable()`` on the same pipeline would wrap
them twice.

    python tools/reference/make_deepcache_reference.py   # CPU, float32, a few seconds
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from DeepCache import DeepCacheSDHelper
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
OUT = REPO / "tests" / "fixtures" / "reference"

PROMPT = "a red circle at the top left"
NEGATIVE = "blurry"
GUIDANCE = 7.5
SEED = 7
# (scheduler, steps, cache_interval, cache_branch_id): every branch of the tiny UNet's two
# blocks (ids 0–5), intervals 2–4, both schedulers.
CASES = [
    ("ddim", 10, 3, 0),
    ("ddim", 10, 2, 1),
    ("ddim", 12, 3, 2),
    ("ddim", 10, 2, 3),
    ("ddim", 10, 4, 4),
    ("ddim", 10, 3, 5),
    ("euler", 10, 3, 0),
    ("euler", 10, 2, 2),
]
SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}


def pipeline(scheduler: str) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        str(MODEL_DIR), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def main() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    tensors = {}
    cases = []
    for i, (scheduler, steps, interval, branch) in enumerate(CASES):
        pipe = pipeline(scheduler)
        pipe.scheduler.set_timesteps(steps)
        # diffusers scales the latents it is given by the initial σ (prepare_latents);
        # adiff's --init-latents take them scaled.
        tensors[f"init_{scheduler}"] = (noise * pipe.scheduler.init_noise_sigma).contiguous()
        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=branch)
        helper.enable()
        out = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            latents=noise.clone(),
            output_type="latent",
        ).images
        helper.disable()
        tensors[f"case{i}"] = out.contiguous()
        cases.append(
            {
                "tensor": f"case{i}",
                "init": f"init_{scheduler}",
                "scheduler": scheduler,
                "steps": steps,
                "cache_interval": interval,
                "cache_branch_id": branch,
            }
        )
        print(f"case {i}: {scheduler} {steps} steps, interval {interval}, branch {branch}: |x| max {out.abs().max():.4f}")
    save_file(tensors, str(OUT / "deepcache.safetensors"))
    meta = {
        "generator": "tools/reference/make_deepcache_reference.py",
        "deepcache": "DeepCache 0.1.1 (PyPI), DeepCacheSDHelper",
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "guidance_scale": GUIDANCE,
        "cases": cases,
    }
    (OUT / "deepcache.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
