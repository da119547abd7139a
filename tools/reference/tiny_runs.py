"""What the method reference scripts share: the tiny pipeline with a chosen scheduler, the
prompt and seed every case uses, and the loop that runs the cases and writes
``tests/fixtures/reference/<name>.{safetensors,json}``.

Each case gets a freshly loaded pipeline (DeepCache's ``disable()`` leaves its wrappers in
place, and T-GATE's loader wraps the pipeline it is given). The initial latents are stored
scaled by the scheduler's initial σ, as adiff's ``--init-latents`` take them (diffusers
scales the latents it is given in ``prepare_latents``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
OUT = REPO / "tests" / "fixtures" / "reference"

PROMPT = "a red circle at the top left"
NEGATIVE = "blurry"
GUIDANCE = 7.5
SEED = 7
SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler}


def pipeline(scheduler: str) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        str(MODEL_DIR), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def run_cases(
    name: str,
    method: tuple[str, str],
    cases: list[dict],
    run: Callable[[StableDiffusionPipeline, dict, dict], torch.Tensor],
) -> None:
    """Run every case (``scheduler``, ``steps`` and the method's own settings) through
    ``run(pipe, case, call)``, where ``call`` holds the pipeline-call arguments every case
    shares, and write the final latents and the cases under ``name``. ``method`` is the
    (key, description) the JSON names the official code by."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    tensors = {}
    listed = []
    for i, case in enumerate(cases):
        scheduler, steps = case["scheduler"], case["steps"]
        pipe = pipeline(scheduler)
        pipe.scheduler.set_timesteps(steps)
        tensors[f"init_{scheduler}"] = (noise * pipe.scheduler.init_noise_sigma).contiguous()
        call = dict(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            latents=noise.clone(),
            output_type="latent",
        )
        out = run(pipe, case, call)
        tensors[f"case{i}"] = out.contiguous()
        listed.append({"tensor": f"case{i}", "init": f"init_{scheduler}", **case})
        print(f"case {i}: {case}: |x| max {out.abs().max():.4f}")
    save_file(tensors, str(OUT / f"{name}.safetensors"))
    meta = {
        "generator": f"tools/reference/make_{name}_reference.py",
        method[0]: method[1],
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "guidance_scale": GUIDANCE,
        "cases": listed,
    }
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
