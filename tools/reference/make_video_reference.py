#!/usr/bin/env python3
"""Build a tiny random-weight ModelScope text-to-video pipeline and record video reference tensors.

Deterministic (fixed seeds, float32, CPU, ``torch.use_deterministic_algorithms(True)``, 2 threads):

* ``tests/fixtures/tiny-modelscope/``   diffusers-format ``TextToVideoSDPipeline`` folder: a tiny
  ``UNet3DConditionModel`` (diffusers' own test config, every parameter perturbed so that the
  zero-initialised temporal layers are live), the ``text_encoder/``, ``tokenizer/`` and ``vae/`` of
  ``tests/fixtures/tiny-sd/`` copied byte for byte, and ModelScope's DDIM ``scheduler_config.json``.
* ``tests/fixtures/reference/video/``  init latents, final latents of diffusers' ``TextToVideoSDPipeline``
  with DDIM / Euler / DPM-Solver++(2M), one direct UNet3D call, the official AdaptiveDiffusion video
  pipeline's mask and final latents (``official_video_pipeline.py``, a verbatim extract), ``meta.json``.

Needs ``tests/fixtures/tiny-sd/`` (``make_reference.py``). No network access. See README.md next to this file.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from video_fixtures import describe_st, finite_json, perturb_, randn, rel, save_st, scheduler_summary

# What perturb_ does, as recorded in meta.json.
PERTURBATION = """Make every parameter non-trivial, in a fixed (named_parameters) order:

    * all-zero tensors (diffusers zero-initialises TemporalConvLayer.conv4's last Conv3d, and the
      norm biases): weights -> 0.5 / sqrt(fan_in) * N(0, 1), biases -> 0.05 * N(0, 1);
    * all-one 1-D tensors (norm weights): 1 + 0.1 * N(0, 1);
    * everything else: p += 0.1 * N(0, 1) * max(p.std(), 0.02).
    """

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]
SD_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-modelscope"
REF_DIR = REPO / "tests" / "fixtures" / "reference" / "video"

# ----------------------------------------------------------------------------------------------
# Parameters (all recorded in meta.json)
# ----------------------------------------------------------------------------------------------
SEED_UNET = 20  # torch.manual_seed before UNet3DConditionModel(...)
SEED_PERTURB = 21  # generator of the parameter perturbation
SEED_NOISE = 22  # init latents
SEED_UNET_SAMPLE = 23  # sample of the direct UNet call

PROMPT = "a red circle moving left"
NEGATIVE_PROMPT = ""  # same ids as the pipeline default (None -> "")
GUIDANCE_SCALE = 9.0
NUM_FRAMES = 8
HEIGHT = WIDTH = 64  # tiny-sd VAE downsamples by 8 -> 8x8 latents
LATENT_SIZE = 8
STEPS = 10
UNET_TIMESTEP = 500.0

ADAPTIVE_STEPS = 30
ADAPTIVE_DELTA = 0.01  # official default `threshold`
ADAPTIVE_MAX_SKIPS = 4  # official default `max_skip_steps`
FALLBACK_DELTAS = [0.02, 0.05, 0.1, 0.2, 0.5]  # tried in order if DELTA skips nothing
# Chosen with --search-deltas: masks that mix skipped and computed (not forced) steps, far from the threshold.
ADAPTIVE_EXTRA_DELTAS = [0.0011, 0.005]  # -> official_adaptive_ddim_{0,1}.safetensors
SEARCH_GRID = [round(float(x), 6) for x in np.geomspace(5e-4, 2e-2, 24)]

# diffusers' tests/pipelines/text_to_video_synthesis/test_text_to_video.py get_dummy_components(), except
# cross_attention_dim (= tiny-sd text encoder hidden size) and sample_size (8 latent pixels = 64 px).
UNET_CONFIG = dict(
    block_out_channels=(8, 8),
    layers_per_block=1,
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=2,
)

# ali-vilab/text-to-video-ms-1.7b scheduler/scheduler_config.json (as that repository ships it; it predates
# the `timestep_spacing` key, so diffusers' default "leading" applies).
MODELSCOPE_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.15.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# name -> (diffusers class, extra from_config kwargs, file stem)
SCHEDULERS = [
    ("ddim", "DDIMScheduler", {}, "ddim"),
    ("euler", "EulerDiscreteScheduler", {}, "euler"),
    ("dpm++", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "dpmpp"),
]


# ----------------------------------------------------------------------------------------------


def zero_temporal_copy(unet):
    """A copy with the temporal layers' last projections zeroed: TemporalConvLayer.conv4's Conv3d (zero in
    diffusers' initialisation) and TransformerTemporalModel.proj_out (not zero-initialised in diffusers 0.42.1)."""
    import copy

    from diffusers.models.resnet import TemporalConvLayer
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    u = copy.deepcopy(unet)
    with torch.no_grad():
        for m in u.modules():
            if isinstance(m, TemporalConvLayer):
                m.conv4[-1].weight.zero_()
                m.conv4[-1].bias.zero_()
            elif isinstance(m, TransformerTemporalModel):
                m.proj_out.weight.zero_()
                m.proj_out.bias.zero_()
    return u


@torch.no_grad()
def official(pipe, base_scheduler_config, noise, threshold, steps):
    """Run the official adaptive TextToVideoSDPipeline (DDIM) on pipe's components, state reset first.

    Returns (final latents, computed flag per step, decision records, step latents)."""
    from diffusers import DDIMScheduler

    from official_video_pipeline import TextToVideoSDPipeline as OfficialAdaptivePipeline

    op = OfficialAdaptivePipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=DDIMScheduler.from_config(base_scheduler_config),
        threshold=threshold,
        max_skip_steps=ADAPTIVE_MAX_SKIPS,
    )
    op.set_progress_bar_config(disable=True)
    op.reset_cache()
    calls = []
    hook = op.unet.register_forward_hook(lambda m, i, o: calls.append(1))
    step_latents = []
    try:
        final = op(
            PROMPT,
            negative_prompt=NEGATIVE_PROMPT,
            height=HEIGHT,
            width=WIDTH,
            num_frames=NUM_FRAMES,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE_SCALE,
            latents=noise.clone(),
            output_type="latent",
            callback=lambda i, t, l: step_latents.append(l.clone()),
            callback_steps=1,
        ).frames
    finally:
        hook.remove()
    decisions = [bool(m) for m in op.mask]  # decision k (after step k+3) says whether step k+4 computes
    computed = [True] * min(4, steps) + decisions[: max(steps - 4, 0)]
    assert len(computed) == steps and sum(computed) == len(calls), (computed, len(calls))
    d = [float(x) for x in op.diff_list]  # d[j] = mean|x_{j+1} - x_j| (x_j = latents after step j)
    records = []
    for k in range(len(decisions)):
        cur, prev, pp = d[k + 2], d[k + 1], d[k]
        third = abs((cur + pp) / 2 - prev)
        forced = k >= 5 and not any(decisions[max(k - ADAPTIVE_MAX_SKIPS, 0) : k])
        records.append(
            {
                "after_step": k + 3,
                "decides_step": k + 4,
                "cur": cur,
                "prev": prev,
                "pp": pp,
                "third_order": third,
                "threshold": prev * threshold,
                "forced": forced,
                "compute_next": decisions[k],
            }
        )
    return final, computed, records, torch.stack(step_latents)


# ----------------------------------------------------------------------------------------------
def save_official(path: Path, delta, final, computed, records, step_latents):
    save_st(path, {"latents": final, "mask": torch.tensor(computed, dtype=torch.uint8), "step_latents": step_latents})
    non_forced = [r for r in records[:-1] if not r["forced"]]  # the last decision is never used
    min_margin = min((abs(r["third_order"] - r["threshold"]) / r["threshold"] for r in non_forced), default=None)
    return {
        "file": path.name,
        "threshold_delta": delta,
        "mask": "".join("C" if c else "S" for c in computed),
        "unet_calls": sum(computed),
        "min_relative_margin_non_forced": min_margin,
        "decisions": records,
    }


def search_deltas(grid):
    """Print the official mask for each delta on the existing folder (writes nothing)."""
    try:
        from diffusers import TextToVideoSDPipeline
    except ImportError:  # pragma: no cover
        from diffusers.pipelines.deprecated.text_to_video_synthesis import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    noise = randn((1, 4, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE), SEED_NOISE)
    for delta in grid:
        _, computed, records, _ = official(pipe, pipe.scheduler.config, noise, delta, ADAPTIVE_STEPS)
        non_forced = [r for r in records[:-1] if not r["forced"]]
        margin = min((abs(r["third_order"] - r["threshold"]) / r["threshold"] for r in non_forced), default=float("nan"))
        mask = "".join("C" if c else "S" for c in computed)
        print(f"delta={delta:<10g} skipped={computed.count(False):2d} margin={margin:.3g} {mask}", flush=True)


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search-deltas", action="store_true", help="print the official mask per delta and exit")
    ap.add_argument("--grid", type=str, default=None, help="comma-separated deltas for --search-deltas")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    import diffusers
    import safetensors
    import tokenizers
    import transformers
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNet3DConditionModel

    try:
        from diffusers import TextToVideoSDPipeline
    except ImportError:  # pragma: no cover
        from diffusers.pipelines.deprecated.text_to_video_synthesis import TextToVideoSDPipeline


    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    classes = {
        "DDIMScheduler": DDIMScheduler,
        "EulerDiscreteScheduler": EulerDiscreteScheduler,
        "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    }

    te_cfg = json.loads((SD_DIR / "text_encoder" / "config.json").read_text())
    assert te_cfg["hidden_size"] == UNET_CONFIG["cross_attention_dim"], te_cfg["hidden_size"]
    vae_cfg = json.loads((SD_DIR / "vae" / "config.json").read_text())
    assert vae_cfg["latent_channels"] == UNET_CONFIG["in_channels"]
    vae_scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    assert HEIGHT // vae_scale == LATENT_SIZE

    if args.search_deltas:
        grid = [float(x) for x in args.grid.split(",")] if args.grid else SEARCH_GRID
        search_deltas(grid)
        return

    for d in (MODEL_DIR, REF_DIR):
        if d.exists():
            shutil.rmtree(d)
    MODEL_DIR.mkdir(parents=True)
    REF_DIR.mkdir(parents=True)

    # ------------------------------------------------------------------ pipeline folder
    torch.manual_seed(SEED_UNET)
    unet = UNet3DConditionModel(**UNET_CONFIG).eval()
    zero_init = [n for n, p in unet.named_parameters() if torch.count_nonzero(p) == 0]
    perturb_(unet, SEED_PERTURB)
    unet.save_pretrained(str(MODEL_DIR / "unet"), safe_serialization=True)
    for sub in ("text_encoder", "tokenizer", "vae"):
        shutil.copytree(SD_DIR / sub, MODEL_DIR / sub)
    (MODEL_DIR / "scheduler").mkdir()
    (MODEL_DIR / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(MODELSCOPE_SCHEDULER_CONFIG, indent=2) + "\n"
    )
    # model_index.json exactly as save_pretrained writes it (components taken from the folder)
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    tmp = REF_DIR / "_tmp_pipe"
    TextToVideoSDPipeline(
        vae=AutoencoderKL.from_pretrained(str(MODEL_DIR / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(MODEL_DIR / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer")),
        unet=unet,
        scheduler=DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG),
    ).save_pretrained(str(tmp), safe_serialization=True)
    shutil.copy(tmp / "model_index.json", MODEL_DIR / "model_index.json")
    shutil.rmtree(tmp)
    original_unet = {k: v.clone() for k, v in unet.state_dict().items()}
    del unet

    # ------------------------------------------------------------------ reload as a user would
    pipe = TextToVideoSDPipeline.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    base_scheduler_config = pipe.scheduler.config
    loaded = pipe.unet.state_dict()
    assert set(loaded) == set(original_unet)
    for k, v in original_unet.items():
        assert torch.equal(loaded[k], v), k
    assert all(v.dtype == torch.float32 for v in loaded.values())

    token_ids = pipe.tokenizer(
        PROMPT, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    ).input_ids
    neg_ids = pipe.tokenizer(
        NEGATIVE_PROMPT, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    ).input_ids

    # ------------------------------------------------------------------ one UNet call
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, NEGATIVE_PROMPT)
        ehs = torch.cat([ne, pe])  # [uncond; cond], as the pipeline batches CFG
        sample = randn((2, 4, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE), SEED_UNET_SAMPLE)
        t = torch.tensor([UNET_TIMESTEP], dtype=torch.float32)
        out = pipe.unet(sample, UNET_TIMESTEP, encoder_hidden_states=ehs, return_dict=False)[0]
        out_t = pipe.unet(sample, t, encoder_hidden_states=ehs, return_dict=False)[0]
        assert torch.equal(out, out_t)
        # the temporal path must matter: compare against the zero-initialised temporal layers
        out_zero_temporal = zero_temporal_copy(pipe.unet)(sample, UNET_TIMESTEP, encoder_hidden_states=ehs, return_dict=False)[0]
        # frames must interact: change frame 0 of the input, look at the last frame of the output
        s2 = sample.clone()
        s2[:, :, 0] += 1.0
        out2 = pipe.unet(s2, UNET_TIMESTEP, encoder_hidden_states=ehs, return_dict=False)[0]
    assert out.shape == sample.shape and torch.isfinite(out).all()
    stats = {
        "unet_out_std": float(out.std()),
        "unet_rel_change_if_temporal_layers_zeroed": rel(out_zero_temporal, out),
        "unet_last_frame_rel_change_when_frame0_input_changes": rel(out2[:, :, -1], out[:, :, -1]),
    }
    assert 0.2 <= stats["unet_out_std"] <= 5.0, stats
    assert stats["unet_rel_change_if_temporal_layers_zeroed"] > 0.05, stats
    assert stats["unet_last_frame_rel_change_when_frame0_input_changes"] > 1e-3, stats
    save_st(
        REF_DIR / "unet_call.safetensors",
        {"sample": sample, "timestep": t, "encoder_hidden_states": ehs, "out": out},
    )

    # ------------------------------------------------------------------ pipeline runs
    noise = randn((1, 4, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE), SEED_NOISE)
    save_st(REF_DIR / "init_latents.safetensors", {"latents": noise})

    def make_scheduler(cls_name, extra):
        return classes[cls_name].from_config(base_scheduler_config, **extra)

    runs = {}
    finals = {}
    for name, cls_name, extra, stem in SCHEDULERS:
        pipe.scheduler = make_scheduler(cls_name, extra)
        steps_seen = []

        def cb(step_idx, t, latents):
            steps_seen.append(latents.clone())

        with torch.no_grad():
            final = pipe(
                PROMPT,
                negative_prompt=NEGATIVE_PROMPT,
                height=HEIGHT,
                width=WIDTH,
                num_frames=NUM_FRAMES,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE_SCALE,
                latents=noise.clone(),
                output_type="latent",
                callback=cb,
                callback_steps=1,
            ).frames
        assert final.shape == noise.shape and torch.isfinite(final).all(), (name, final.shape)
        assert len(steps_seen) == STEPS and torch.equal(steps_seen[-1], final)
        finals[name] = final
        save_st(
            REF_DIR / f"final_{stem}.safetensors",
            {"latents": final, "step_latents": torch.stack(steps_seen)},
        )
        runs[name] = {"file": f"final_{stem}.safetensors", "scheduler": scheduler_summary(pipe.scheduler)}
        for k in ("algorithm_type", "solver_order", "solver_type", "lower_order_final", "final_sigmas_type", "euler_at_final"):
            if k in pipe.scheduler.config:
                runs[name][k] = pipe.scheduler.config[k]

    # sanity: with a negative threshold nothing is skipped and the official pipeline equals diffusers' DDIM run
    f_noskip, c_noskip, _, _ = official(pipe, base_scheduler_config, noise, -1.0, STEPS)
    assert all(c_noskip)
    official_vs_diffusers = float((f_noskip - finals["ddim"]).abs().max())
    assert official_vs_diffusers <= 1e-6, official_vs_diffusers

    tried = []
    for delta in [ADAPTIVE_DELTA] + FALLBACK_DELTAS:
        final, computed, records, step_latents = official(pipe, base_scheduler_config, noise, delta, ADAPTIVE_STEPS)
        mask_str = "".join("C" if c else "S" for c in computed)
        tried.append({"delta": delta, "mask": mask_str})
        print(f"official adaptive DDIM, delta={delta}: {mask_str}")
        if not all(computed):
            break
    # re-run: the same result (the state really is reset)
    final2, computed2, _, _ = official(pipe, base_scheduler_config, noise, delta, ADAPTIVE_STEPS)
    assert torch.equal(final, final2) and computed == computed2
    adaptive_meta = save_official(REF_DIR / "official_adaptive_ddim.safetensors", delta, final, computed, records, step_latents)
    adaptive_meta["deltas_tried"] = tried
    extra_meta = []
    for j, d in enumerate(ADAPTIVE_EXTRA_DELTAS):
        f_j, c_j, r_j, s_j = official(pipe, base_scheduler_config, noise, d, ADAPTIVE_STEPS)
        extra_meta.append(save_official(REF_DIR / f"official_adaptive_ddim_{j}.safetensors", d, f_j, c_j, r_j, s_j))
        print(f"official adaptive DDIM, delta={d}: {extra_meta[-1]['mask']}")

    ts = DDIMScheduler.from_config(base_scheduler_config)
    ts.set_timesteps(ADAPTIVE_STEPS)
    adaptive_timesteps = [float(t) for t in ts.timesteps]

    # ------------------------------------------------------------------ meta.json
    files = {p.name: describe_st(p) for p in sorted(REF_DIR.glob("*.safetensors"))}
    meta = {
        "description": "Reference data for the tiny ModelScope text-to-video pipeline tests/fixtures/tiny-modelscope "
        "(generated by tools/reference/make_video_reference.py). Latents are [B, C, F, H, W] = [1, 4, frames, 8, 8]. "
        "init_latents.latents is the UNSCALED noise passed as `latents=`; the pipeline multiplies it by "
        "scheduler.init_noise_sigma (recorded per scheduler). final_*.latents = TextToVideoSDPipeline(..., "
        "output_type='latent').frames (no VAE, no scaling_factor division); step_latents[i] = latents after step i "
        "(from the pipeline callback), [steps, 1, 4, F, 8, 8].",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "prompt_token_ids": token_ids,
        "negative_token_ids": neg_ids,
        "guidance_scale": GUIDANCE_SCALE,
        "num_inference_steps": STEPS,
        "num_frames": NUM_FRAMES,
        "height": HEIGHT,
        "width": WIDTH,
        "latent_shape": list(noise.shape),
        "eta": 0.0,
        "seeds": {
            "unet_init": SEED_UNET,
            "unet_perturb": SEED_PERTURB,
            "init_latents": SEED_NOISE,
            "unet_call_sample": SEED_UNET_SAMPLE,
        },
        "unet_config": dict(pipe.unet.config),
        "unet_zero_initialised_parameters": zero_init,
        "unet_perturbation": PERTURBATION.strip(),
        "scheduler_config_file": MODELSCOPE_SCHEDULER_CONFIG,
        "runs": runs,
        "unet_call": {
            "file": "unet_call.safetensors",
            "timestep": UNET_TIMESTEP,
            "encoder_hidden_states": "encode_prompt(prompt, negative_prompt) -> cat([negative, prompt]) = [uncond; cond], [2, 77, 32]",
            "sample": "seeded randn, [2, 4, F, 8, 8]",
            "stats": stats,
        },
        "official_adaptive": {
            "source": "UniModal4Reasoning/AdaptiveDiffusion@cc143ad8777af50ae1e45b5997237cdcb0dba648 "
            "examples/AdaptiveDiffusion/acceleration/sparse_pipeline.py TextToVideoSDPipeline (l.3494-4194), "
            "extracted verbatim in tools/reference/official_video_pipeline.py",
            "scheduler": "DDIMScheduler.from_config(folder config)",
            "num_inference_steps": ADAPTIVE_STEPS,
            "timesteps": adaptive_timesteps,
            "max_skip_steps": ADAPTIVE_MAX_SKIPS,
            "mask_legend": "one letter per step: C = UNet computed, S = skipped (cached raw [uncond; cond] output reused, "
            "guidance re-applied); tensor `mask`: 1 computed, 0 skipped (U8). decisions[k] is made after step k+3 "
            "and decides step k+4 (the last one is unused); d values are float32 means printed as f64.",
            "reset_cache_called_before_run": True,
            "official_no_skip_vs_diffusers_ddim_max_abs": official_vs_diffusers,
            "default": adaptive_meta,
            "extra": extra_meta,
        },
        "files": files,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "torch_threads": 2,
        "deterministic_algorithms": True,
    }
    (REF_DIR / "meta.json").write_text(json.dumps(finite_json(meta), indent=1, default=str) + "\n")
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    print(f"tiny-modelscope: {total} bytes; stats {stats}")


if __name__ == "__main__":
    main()
