#!/usr/bin/env python3
"""Build a tiny random-weight AnimateDiff motion adapter for tiny-sd and record AnimateDiff reference tensors.

Deterministic (fixed seeds, float32, CPU, ``torch.use_deterministic_algorithms(True)``, 2 threads):

* ``tests/fixtures/tiny-animatediff/motion_adapter/``  diffusers ``MotionAdapter`` folder (``save_pretrained``,
  safetensors, f32) sized for ``tests/fixtures/tiny-sd/unet`` (same ``block_out_channels`` and layers per
  block, v2 style with a mid-block motion module); every parameter perturbed so that the zero-initialised
  ``proj_out`` of the motion modules is live.
* ``tests/fixtures/tiny-animatediff/mm_tiny_v2.safetensors``  the same weights in the ORIGINAL AnimateDiff key
  layout (that of ``mm_sd_v15_v2``), written by inverting diffusers' converter, ``pos_encoder.pe`` buffers
  included; checked with ``MotionAdapter.from_single_file``.
* ``tests/fixtures/reference/animatediff/``  init latents, final latents of diffusers' ``AnimateDiffPipeline``
  (tiny-sd components + the adapter) with DDIM / Euler / DPM-Solver++(2M), one direct ``UNetMotionModel``
  call, ``meta.json``.

Needs ``tests/fixtures/tiny-sd/`` (``make_reference.py``). No network access. See README.md next to this file.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from video_fixtures import describe_st, finite_json, perturb_, randn, rel, save_st, scheduler_summary

# What perturb_ does, as recorded in meta.json.
PERTURBATION = """Make every parameter non-trivial, in a fixed (named_parameters) order:

    * all-zero tensors (the norm biases; AnimateDiff zero-initialises the motion modules' proj_out,
      diffusers 0.42.1's MotionAdapter does not): weights -> 0.5 / sqrt(fan_in) * N(0, 1), biases -> 0.05 * N(0, 1);
    * all-one 1-D tensors (norm weights): 1 + 0.1 * N(0, 1);
    * everything else: p += 0.1 * N(0, 1) * max(p.std(), 0.02).
    Buffers (the sinusoidal pos_embed.pe) are left alone.
    """

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]
SD_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-animatediff"
ADAPTER_DIR = MODEL_DIR / "motion_adapter"
ORIGINAL_FILE = MODEL_DIR / "mm_tiny_v2.safetensors"
REF_DIR = REPO / "tests" / "fixtures" / "reference" / "animatediff"

# ----------------------------------------------------------------------------------------------
# Parameters (all recorded in meta.json)
# ----------------------------------------------------------------------------------------------
SEED_ADAPTER = 30  # torch.manual_seed before MotionAdapter(...)
SEED_PERTURB = 31  # generator of the parameter perturbation
SEED_NOISE = 32  # init latents
SEED_UNET_SAMPLE = 33  # sample of the direct UNet call
SEED_MODULE_INPUT = 34  # input of the single motion-module check

PROMPT = "a red circle moving left"
NEGATIVE_PROMPT = ""  # same ids as the pipeline default (None -> "")
GUIDANCE_SCALE = 7.5
NUM_FRAMES = 8
HEIGHT = WIDTH = 64  # tiny-sd: sample_size 8 x vae_scale_factor 8
LATENT_SIZE = 8
STEPS = 10
UNET_TIMESTEP = 500.0

# diffusers' tests/pipelines/animatediff/test_animatediff.py get_dummy_components() MotionAdapter, sized for the
# tiny-sd UNet: block_out_channels and motion_layers_per_block are the UNet's (from_unet2d requires it),
# motion_norm_num_groups the UNet's (32, also mm_sd_v15_v2's), 2 heads, v2 style (mid-block module, 32 positions).
ADAPTER_CONFIG_EXTRA = dict(
    motion_transformer_layers_per_block=1,
    motion_mid_block_layers_per_block=1,
    motion_transformer_layers_per_mid_block=1,
    motion_num_attention_heads=2,
    motion_max_seq_length=32,
    use_motion_mid_block=True,
    conv_in_channels=None,
)

# What the AnimateDiff authors recommend (diffusers' AnimateDiff docs: DDIMScheduler.from_pretrained(sd15,
# subfolder="scheduler", clip_sample=False, timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)),
# applied to tiny-sd's scheduler config (SD 1.5's, verbatim).
SCHEDULER_OVERRIDES = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="linear",
    clip_sample=False,
    timestep_spacing="linspace",
    steps_offset=1,
)

# name -> (diffusers class, extra from_config kwargs, file stem)
SCHEDULERS = [
    ("ddim", "DDIMScheduler", {}, "ddim"),
    ("euler", "EulerDiscreteScheduler", {}, "euler"),
    ("dpm++", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "dpmpp"),
]


# ----------------------------------------------------------------------------------------------


def animatediff_pe(max_len: int, d_model: int) -> torch.Tensor:
    """AnimateDiff's PositionalEncoding buffer (animatediff/models/motion_module.py), [1, max_len, d_model]:
    pe[0, p, 2i] = sin(p * exp(-2i ln(10000) / d)), pe[0, p, 2i+1] = cos(same)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(1, max_len, d_model)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


# diffusers -> original, applied in this order to a diffusers key (inverse of convert_motion_module)
TO_ORIGINAL = [
    (r"\.motion_modules\.(\d+)\.", r".motion_modules.\1.temporal_transformer."),
    (r"\.attn1\.", ".attention_blocks.0."),
    (r"\.attn2\.", ".attention_blocks.1."),
    (r"\.norm1\.", ".norms.0."),
    (r"\.norm2\.", ".norms.1."),
    (r"\.norm3\.", ".ff_norm."),
]
POS_EMBED_RE = re.compile(r"^(.*\.transformer_blocks\.\d+)\.pos_embed\.pe$")


def to_original_layout(sd: dict) -> tuple[dict, dict]:
    """diffusers MotionAdapter state_dict -> AnimateDiff (mm_sd_v15_v2) layout, and the key map used.

    `...transformer_blocks.K.pos_embed.pe` (one buffer per block in diffusers) becomes the two buffers
    `...transformer_blocks.K.attention_blocks.{0,1}.pos_encoder.pe` (one per attention in AnimateDiff)."""
    out, mapping = {}, {}
    for k, v in sd.items():
        m = POS_EMBED_RE.match(k)
        if m:
            base = m.group(1)
            for pat, rep in TO_ORIGINAL[:1]:
                base = re.sub(pat, rep, base)
            names = [f"{base}.attention_blocks.{j}.pos_encoder.pe" for j in (0, 1)]
            for n in names:
                out[n] = v.clone()
            mapping[k] = names
            continue
        n = k
        for pat, rep in TO_ORIGINAL:
            n = re.sub(pat, rep, n)
        assert n not in out, n
        out[n] = v.clone()
        mapping[k] = n
    return out, mapping


class PerFrameGroupNorm(torch.nn.Module):
    """AnimateDiff's own motion-module norm: the GroupNorm runs on (B*F, C, H, W), i.e. per frame.
    Takes diffusers' (B, C, F, H, W) input and the same weights."""

    def __init__(self, gn: torch.nn.GroupNorm):
        super().__init__()
        self.gn = gn

    def forward(self, x):
        b, c, f, h, w = x.shape
        y = self.gn(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def manual_motion_module(mm, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Plain-torch restatement of diffusers 0.42.1's AnimateDiffTransformer3D.forward (the structure described in
    meta.json). x: (B*F, C, H, W), frames of one video consecutive."""
    import torch.nn.functional as F

    bf, c, h, w = x.shape
    b = bf // num_frames
    residual = x
    y = x.reshape(b, num_frames, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, F, H, W)
    y = F.group_norm(y, mm.norm.num_groups, mm.norm.weight, mm.norm.bias, mm.norm.eps)  # stats over C/G x F x H x W
    y = y.permute(0, 3, 4, 2, 1).reshape(b * h * w, num_frames, c)  # (B*H*W, F, C)
    y = F.linear(y, mm.proj_in.weight, mm.proj_in.bias)
    for blk in mm.transformer_blocks:
        pe = blk.pos_embed.pe[:, :num_frames]
        for norm, attn in ((blk.norm1, blk.attn1), (blk.norm2, blk.attn2)):
            n = F.layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps) + pe
            heads = attn.heads
            q, k, v = (F.linear(n, lin.weight, lin.bias) for lin in (attn.to_q, attn.to_k, attn.to_v))
            split = lambda t: t.reshape(t.shape[0], num_frames, heads, -1).transpose(1, 2)  # noqa: E731
            q, k, v = split(q), split(k), split(v)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
            a = a.transpose(1, 2).reshape(y.shape[0], num_frames, -1)
            y = F.linear(a, attn.to_out[0].weight, attn.to_out[0].bias) + y
        n = F.layer_norm(y, (y.shape[-1],), blk.norm3.weight, blk.norm3.bias, blk.norm3.eps)
        hid, gate = F.linear(n, blk.ff.net[0].proj.weight, blk.ff.net[0].proj.bias).chunk(2, dim=-1)
        y = F.linear(hid * F.gelu(gate), blk.ff.net[2].weight, blk.ff.net[2].bias) + y
    y = F.linear(y, mm.proj_out.weight, mm.proj_out.bias)
    y = y.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)
    return y + residual


def config_dict(c):
    """A model config as a dict, `_use_default_values` sorted (diffusers builds it from a set)."""
    d = dict(c)
    if "_use_default_values" in d:
        d["_use_default_values"] = sorted(d["_use_default_values"])
    return d


def max_abs_sd_diff(a: dict, b: dict):
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:10]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ----------------------------------------------------------------------------------------------
def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    import diffusers
    import safetensors
    import tokenizers
    import transformers
    from diffusers import (
        AnimateDiffPipeline,
        AutoencoderKL,
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        MotionAdapter,
        UNet2DConditionModel,
        UNetMotionModel,
    )
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_DEFAULT_PIPELINE_PATHS,
        convert_animatediff_checkpoint_to_diffusers,
        infer_diffusers_model_type,
    )
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    classes = {
        "DDIMScheduler": DDIMScheduler,
        "EulerDiscreteScheduler": EulerDiscreteScheduler,
        "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    }

    unet_cfg = json.loads((SD_DIR / "unet" / "config.json").read_text())
    vae_cfg = json.loads((SD_DIR / "vae" / "config.json").read_text())
    vae_scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    assert unet_cfg["sample_size"] * vae_scale == HEIGHT and HEIGHT // vae_scale == LATENT_SIZE
    adapter_config = dict(
        block_out_channels=tuple(unet_cfg["block_out_channels"]),
        motion_layers_per_block=unet_cfg["layers_per_block"],
        motion_norm_num_groups=unet_cfg["norm_num_groups"],
        **ADAPTER_CONFIG_EXTRA,
    )
    assert NUM_FRAMES <= adapter_config["motion_max_seq_length"]

    for d in (MODEL_DIR, REF_DIR):
        if d.exists():
            shutil.rmtree(d)
    MODEL_DIR.mkdir(parents=True)
    REF_DIR.mkdir(parents=True)

    # ------------------------------------------------------------------ motion adapter (diffusers layout)
    torch.manual_seed(SEED_ADAPTER)
    adapter = MotionAdapter(**adapter_config).eval()
    zero_init = [n for n, p in adapter.named_parameters() if torch.count_nonzero(p) == 0]
    # diffusers 0.42.1 does not zero-initialise proj_out (AnimateDiff's own VanillaTemporalModule does); only the
    # norm biases start at zero. Perturbing everything keeps the fixture independent of that.
    assert all(n.endswith(".bias") and "norm" in n for n in zero_init), zero_init
    perturb_(adapter, SEED_PERTURB)
    adapter.save_pretrained(str(ADAPTER_DIR), safe_serialization=True)
    adapter_sd = {k: v.clone() for k, v in adapter.state_dict().items()}
    buffers = sorted(n for n, _ in adapter.named_buffers())
    assert all(n.endswith(".pos_embed.pe") for n in buffers), buffers
    saved = load_file(str(ADAPTER_DIR / "diffusion_pytorch_model.safetensors"))
    assert set(saved) == set(adapter_sd) and all(torch.equal(saved[k], adapter_sd[k]) for k in saved)
    assert all(v.dtype == torch.float32 for v in saved.values())
    pe_in_diffusers_file = [k for k in saved if k.endswith("pos_embed.pe")]
    for k in buffers:
        assert torch.equal(adapter_sd[k], animatediff_pe(adapter_config["motion_max_seq_length"], adapter_sd[k].shape[-1])), k
    reloaded = MotionAdapter.from_pretrained(str(ADAPTER_DIR))
    assert max_abs_sd_diff(reloaded.state_dict(), adapter_sd) == 0.0

    # ------------------------------------------------------------------ original AnimateDiff layout
    original_sd, key_map = to_original_layout(adapter_sd)
    save_st(ORIGINAL_FILE, original_sd)
    original_loaded = load_file(str(ORIGINAL_FILE))
    # diffusers' own converter (the one from_single_file uses; same code as scripts/convert_animatediff_motion_module_to_diffusers.py)
    back = convert_animatediff_checkpoint_to_diffusers(dict(original_loaded))
    no_pe = {k: v for k, v in adapter_sd.items() if not k.endswith(".pos_embed.pe")}
    converter_roundtrip_max_abs = max_abs_sd_diff(back, no_pe)
    assert converter_roundtrip_max_abs == 0.0
    model_type = infer_diffusers_model_type(original_loaded)
    assert model_type == "animatediff_v2", model_type
    from_single = MotionAdapter.from_single_file(str(ORIGINAL_FILE), config=str(ADAPTER_DIR), local_files_only=True)
    from_single_sd = from_single.state_dict()
    from_single_max_abs = max_abs_sd_diff(from_single_sd, adapter_sd)
    assert from_single_max_abs == 0.0, from_single_max_abs
    try:  # without config= diffusers fetches the Hub config of the inferred model type
        MotionAdapter.from_single_file(str(ORIGINAL_FILE), local_files_only=True)
        no_config_result = "loaded (config found in the local HF cache)"
    except Exception as e:  # noqa: BLE001
        no_config_result = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    renamed = {k: v for k, v in key_map.items() if isinstance(v, str)}
    key_mapping_meta = {
        "rules_diffusers_to_original": [
            "X.motion_modules.M.* -> X.motion_modules.M.temporal_transformer.*",
            ".attn1. -> .attention_blocks.0.",
            ".attn2. -> .attention_blocks.1.",
            ".norm1. -> .norms.0.",
            ".norm2. -> .norms.1.",
            ".norm3. -> .ff_norm.",
            "transformer_blocks.K.pos_embed.pe (diffusers: one buffer per block) -> "
            "transformer_blocks.K.attention_blocks.0.pos_encoder.pe and ...attention_blocks.1.pos_encoder.pe (same values)",
            "unchanged: .norm. (GroupNorm), proj_in, proj_out, to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2",
        ],
        "rules_original_to_diffusers (diffusers' convert_animatediff_checkpoint_to_diffusers)": [
            "drop every key containing 'pos_encoder'",
            "replace .norms.0 -> .norm1, .norms.1 -> .norm2, .ff_norm -> .norm3, .attention_blocks.0 -> .attn1, "
            ".attention_blocks.1 -> .attn2, .temporal_transformer -> '' (in this order)",
            "pos_embed.pe is not loaded from the file: MotionAdapter recomputes it in __init__ (persistent buffer)",
        ],
        "num_keys_diffusers": len(adapter_sd),
        "num_keys_original": len(original_sd),
        "dropped_by_converter": sorted(k for k in original_sd if "pos_encoder" in k),
        "diffusers_pos_embed_buffers": sorted(pe_in_diffusers_file),
        "renamed_diffusers_to_original": renamed,
    }

    # ------------------------------------------------------------------ pipeline from tiny-sd + adapter
    unet2d = UNet2DConditionModel.from_pretrained(str(SD_DIR / "unet"))
    vae = AutoencoderKL.from_pretrained(str(SD_DIR / "vae"))
    text_encoder = CLIPTextModel.from_pretrained(str(SD_DIR / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(str(SD_DIR / "tokenizer"))
    sd15_sched = json.loads((SD_DIR / "scheduler" / "scheduler_config.json").read_text())
    base_sched_cfg = {k: v for k, v in sd15_sched.items() if not k.startswith("_")}
    base_sched_cfg.update(SCHEDULER_OVERRIDES)
    adapter = MotionAdapter.from_pretrained(str(ADAPTER_DIR))
    pipe = AnimateDiffPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet2d,
        motion_adapter=adapter,
        scheduler=DDIMScheduler.from_config(base_sched_cfg),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")
    unet = pipe.unet
    assert isinstance(unet, UNetMotionModel) and pipe.vae_scale_factor == vae_scale
    base_scheduler_config = pipe.scheduler.config
    # the motion UNet holds exactly tiny-sd's 2D weights and the adapter's motion weights
    u_sd = unet.state_dict()
    u2_sd = unet2d.state_dict()
    for k, v in u2_sd.items():
        assert torch.equal(u_sd[k], v), k
    motion_keys = [k for k in u_sd if "motion_modules" in k]
    assert sorted(motion_keys) == sorted(adapter_sd), (len(motion_keys), len(adapter_sd))
    for k in motion_keys:
        assert torch.equal(u_sd[k], adapter_sd[k]), k
    assert set(u_sd) == set(u2_sd) | set(motion_keys)
    motion_modules = [(n, m) for n, m in unet.named_modules() if isinstance(m, AnimateDiffTransformer3D)]

    token_ids = pipe.tokenizer(
        PROMPT, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    ).input_ids
    neg_ids = pipe.tokenizer(
        NEGATIVE_PROMPT, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    ).input_ids

    # ------------------------------------------------------------------ one motion module, restated by hand
    with torch.no_grad():
        name0, mm0 = [(n, m) for n, m in motion_modules if n.startswith("up_blocks.0")][0]
        c0 = mm0.in_channels
        x0 = randn((2 * NUM_FRAMES, c0, 4, 4), SEED_MODULE_INPUT)
        ref0 = mm0(x0, num_frames=NUM_FRAMES)
        man0 = manual_motion_module(mm0, x0, NUM_FRAMES)
        manual_max_abs = float((ref0 - man0).abs().max())
        assert manual_max_abs < 1e-5, manual_max_abs

    # ------------------------------------------------------------------ one UNet call
    with torch.no_grad():
        pe_, ne_ = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, NEGATIVE_PROMPT)
        prompt_embeds = torch.cat([ne_, pe_])  # [uncond; cond], as the pipeline batches CFG
        ehs = prompt_embeds.repeat_interleave(NUM_FRAMES, dim=0)  # what AnimateDiffPipeline passes: [2*F, 77, 32]
        sample = randn((2, 4, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE), SEED_UNET_SAMPLE)
        t = torch.tensor([UNET_TIMESTEP], dtype=torch.float32)
        call = lambda u, s: u(s, UNET_TIMESTEP, encoder_hidden_states=ehs, return_dict=False)[0]  # noqa: E731
        out = call(unet, sample)
        out_t = unet(sample, t, encoder_hidden_states=ehs, return_dict=False)[0]
        assert torch.equal(out, out_t)
        # the motion modules must matter: zero their proj_out (identity modules, as diffusers initialises them)
        u_zero = copy.deepcopy(unet)
        for _, m in u_zero.named_modules():
            if isinstance(m, AnimateDiffTransformer3D):
                m.proj_out.weight.zero_()
                m.proj_out.bias.zero_()
        out_zero = call(u_zero, sample)
        # with the motion modules identities, the UNet is tiny-sd's UNet2D applied per frame
        frames = sample.permute(0, 2, 1, 3, 4).reshape(2 * NUM_FRAMES, 4, LATENT_SIZE, LATENT_SIZE)
        out_2d = unet2d(frames, UNET_TIMESTEP, encoder_hidden_states=ehs, return_dict=False)[0]
        out_2d = out_2d.reshape(2, NUM_FRAMES, 4, LATENT_SIZE, LATENT_SIZE).permute(0, 2, 1, 3, 4)
        zero_vs_unet2d = float((out_zero - out_2d).abs().max())
        assert zero_vs_unet2d < 1e-4, zero_vs_unet2d
        # frames must interact
        s2 = sample.clone()
        s2[:, :, 0] += 1.0
        out2 = call(unet, s2)
        # original AnimateDiff normalises per frame: how much that would change this UNet's output
        u_pf = copy.deepcopy(unet)
        for _, m in u_pf.named_modules():
            if isinstance(m, AnimateDiffTransformer3D):
                m.norm = PerFrameGroupNorm(m.norm)
        out_pf = call(u_pf, sample)
        # the UNet does not mix the two CFG halves: batch 1 alone gives the same
        out_b1 = unet(sample[1:], UNET_TIMESTEP, encoder_hidden_states=ehs[NUM_FRAMES:], return_dict=False)[0]
    assert out.shape == sample.shape and torch.isfinite(out).all()
    stats = {
        "unet_out_std": float(out.std()),
        "unet_rel_change_if_motion_proj_out_zeroed": rel(out_zero, out),
        "unet_with_motion_proj_out_zeroed_vs_unet2d_per_frame_max_abs": zero_vs_unet2d,
        "unet_last_frame_rel_change_when_frame0_input_changes": rel(out2[:, :, -1], out[:, :, -1]),
        "unet_rel_change_if_motion_groupnorm_per_frame_like_original_animatediff": rel(out_pf, out),
        "unet_cond_half_alone_vs_batched_max_abs": float((out_b1 - out[1:]).abs().max()),
        "manual_motion_module_vs_diffusers_max_abs": manual_max_abs,
        "manual_motion_module_checked_on": f"{name0}, input [{2 * NUM_FRAMES}, {c0}, 4, 4], num_frames {NUM_FRAMES}",
    }
    assert 0.2 <= stats["unet_out_std"] <= 5.0, stats
    assert stats["unet_rel_change_if_motion_proj_out_zeroed"] > 0.05, stats
    assert stats["unet_last_frame_rel_change_when_frame0_input_changes"] > 1e-3, stats
    save_st(
        REF_DIR / "unet_call.safetensors",
        {"sample": sample, "timestep": t, "encoder_hidden_states": prompt_embeds, "out": out},
    )

    # ------------------------------------------------------------------ pipeline runs
    noise = randn((1, 4, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE), SEED_NOISE)
    save_st(REF_DIR / "init_latents.safetensors", {"latents": noise})

    runs = {}
    for name, cls_name, extra, stem in SCHEDULERS:
        pipe.scheduler = classes[cls_name].from_config(base_scheduler_config, **extra)
        # prepare_latents multiplies the given latents by init_noise_sigma (after set_timesteps, as __call__ does)
        pipe.scheduler.set_timesteps(STEPS)
        prepared = pipe.prepare_latents(1, 4, NUM_FRAMES, HEIGHT, WIDTH, torch.float32, torch.device("cpu"), None, noise.clone())
        assert torch.equal(prepared, noise * pipe.scheduler.init_noise_sigma), name
        steps_seen = []

        def cb(p, step_idx, t, kw):
            steps_seen.append(kw["latents"].clone())
            return {}

        with torch.no_grad():
            final = pipe(
                prompt=PROMPT,
                negative_prompt=NEGATIVE_PROMPT,
                num_frames=NUM_FRAMES,
                height=HEIGHT,
                width=WIDTH,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE_SCALE,
                latents=noise.clone(),
                output_type="latent",
                callback_on_step_end=cb,
                callback_on_step_end_tensor_inputs=["latents"],
            ).frames
        assert final.shape == noise.shape and torch.isfinite(final).all(), (name, final.shape)
        assert len(steps_seen) == STEPS and torch.equal(steps_seen[-1], final)
        save_st(
            REF_DIR / f"final_{stem}.safetensors",
            {"latents": final, "step_latents": torch.stack(steps_seen)},
        )
        runs[name] = {
            "file": f"final_{stem}.safetensors",
            "scheduler": scheduler_summary(pipe.scheduler),
            "prepare_latents_is_latents_times_init_noise_sigma": True,
            "final_std": float(final.std()),
        }
        for k in ("algorithm_type", "solver_order", "solver_type", "lower_order_final", "final_sigmas_type", "euler_at_final"):
            if k in pipe.scheduler.config:
                runs[name][k] = pipe.scheduler.config[k]
        print(f"{name}: final std {float(final.std()):.4f}", flush=True)

    # ------------------------------------------------------------------ meta.json
    files = {p.name: describe_st(p) for p in sorted(REF_DIR.glob("*.safetensors"))}
    sizes = {
        str(p.relative_to(REPO)): p.stat().st_size
        for d in (MODEL_DIR, REF_DIR)
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }
    layout = {
        "unet": "UNetMotionModel.from_unet2d(tiny-sd UNet2DConditionModel, motion_adapter) (done by AnimateDiffPipeline.__init__): "
        "input sample (B, C, F, H, W) -> permute(0, 2, 1, 3, 4).reshape(B*F, C, H, W) (frames of a video consecutive, "
        "batch-major); time embedding computed per batch item then repeat_interleave(F); encoder_hidden_states must "
        "already be (B*F, 77, D) (the pipeline does prompt_embeds.repeat_interleave(F, dim=0) on [uncond; cond]); all 2D "
        "layers (conv_in, resnets, spatial transformers, down/upsamplers, conv_out) run per frame with tiny-sd's weights; "
        "output reshaped back to (B, C, F, H, W).",
        "motion_module_positions": "down blocks: after each (resnet, spatial attention) pair in CrossAttnDownBlockMotion, "
        "after each resnet in DownBlockMotion, before the downsampler (layers_per_block modules per down block; their "
        "outputs are the skip connections); mid block (UNetMidBlockCrossAttnMotion, v2): resnet0 -> attention -> "
        "motion module -> resnet1; up blocks: after each (resnet, attention) pair / each resnet, before the upsampler "
        "(layers_per_block + 1 modules per up block). Tiny: 2 down + 1 mid + 4 up = 7 modules; SD 1.5 v2: 8 + 1 + 12 = 21.",
        "motion_module_names": [n for n, _ in motion_modules],
        "motion_module_forward": [
            "x: (B*F, C, H, W); residual = x",
            "h = x.reshape(B, F, C, H, W).permute(0, 2, 1, 3, 4)  -> (B, C, F, H, W)",
            "h = GroupNorm(groups=motion_norm_num_groups, eps=1e-6, affine)(h): on the 5-D tensor, so mean/var per "
            "(batch item, group) over C/G x F x H x W, i.e. OVER ALL FRAMES of the clip (original AnimateDiff runs the "
            "same GroupNorm on (B*F, C, H, W), i.e. per frame; see stats.unet_rel_change_if_motion_groupnorm_per_frame_like_original_animatediff)",
            "h = h.permute(0, 3, 4, 2, 1).reshape(B*H*W, F, C)  (one sequence of F tokens per pixel)",
            "h = proj_in(h)  Linear(C, C)  (inner dim = heads * (C // heads) = C)",
            "per transformer block (1): "
            "n = LayerNorm norm1(h) (eps 1e-5) + pe[:, :F]; h = attn1(n) + h; "
            "n = LayerNorm norm2(h) + pe[:, :F]; h = attn2(n) + h  (attn2 is self-attention too: double_self_attention, "
            "no encoder_hidden_states reach the motion modules); "
            "h = ff(LayerNorm norm3(h)) + h, ff = GEGLU: net.0.proj Linear(C, 8C) -> split [a, g] -> a * gelu(g) (erf gelu) -> net.2 Linear(4C, C)",
            "attention: q, k, v = to_q/to_k/to_v(n) (no bias), heads = motion_num_attention_heads, head dim C/heads, "
            "softmax(q k^T / sqrt(head dim)) v over the F frames, to_out.0 Linear(C, C) with bias; q, k AND v all see "
            "the position-encoded n; the residual h does not",
            "h = proj_out(h)  Linear(C, C); reshape (B, H, W, F, C) -> permute(0, 3, 4, 1, 2) -> (B*F, C, H, W)",
            "return h + residual",
        ],
        "positional_encoding": {
            "type": "sinusoidal (diffusers SinusoidalPositionalEmbedding == AnimateDiff PositionalEncoding)",
            "buffer": "pe [1, motion_max_seq_length, C], persistent buffer (saved in the diffusers safetensors as "
            "...transformer_blocks.0.pos_embed.pe; in the original layout once per attention as "
            "...attention_blocks.{0,1}.pos_encoder.pe)",
            "formula": "pe[0, p, 2i] = sin(p * exp(-(2i) * ln(10000) / C)), pe[0, p, 2i+1] = cos(p * exp(-(2i) * ln(10000) / C)), "
            "p = frame index 0..max_seq_length-1, C = channels of the module",
            "where": "added to the OUTPUT of norm1 and of norm2 (the LayerNorms before attn1 and attn2), sliced to the "
            "first F positions: not to the residual stream, not before norm3/ff; same pe for both attentions",
            "checked": "pe equals animatediff_pe(32, C) exactly for every module",
        },
    }
    meta = {
        "description": "Reference data for AnimateDiff on the tiny SD pipeline tests/fixtures/tiny-sd + the motion adapter "
        "tests/fixtures/tiny-animatediff/motion_adapter (generated by tools/reference/make_animatediff_reference.py). "
        "Latents are [B, C, F, H, W] = [1, 4, frames, 8, 8]. init_latents.latents is the UNSCALED noise passed as "
        "`latents=`; AnimateDiffPipeline.prepare_latents multiplies it by scheduler.init_noise_sigma (checked, "
        "recorded per scheduler). final_*.latents = AnimateDiffPipeline(..., output_type='latent').frames (no VAE, no "
        "scaling_factor division); step_latents[i] = latents after step i (callback_on_step_end), [steps, 1, 4, F, 8, 8]. "
        "unet_call: UNetMotionModel(sample [2, 4, F, 8, 8], timestep 500, encoder_hidden_states = "
        "unet_call.encoder_hidden_states.repeat_interleave(F, dim=0)) -> out [2, 4, F, 8, 8]; the stored "
        "encoder_hidden_states is [uncond; cond] [2, 77, 32], the UNet received [2*F, 77, 32].",
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
            "adapter_init": SEED_ADAPTER,
            "adapter_perturb": SEED_PERTURB,
            "init_latents": SEED_NOISE,
            "unet_call_sample": SEED_UNET_SAMPLE,
            "motion_module_check_input": SEED_MODULE_INPUT,
        },
        "pipeline_call": "AnimateDiffPipeline(vae, text_encoder, tokenizer, unet=UNet2DConditionModel(tiny-sd), "
        "motion_adapter, scheduler)(prompt=..., negative_prompt='', num_frames=8, height=64, width=64, "
        "num_inference_steps=10, guidance_scale=7.5, latents=init_latents, output_type='latent', "
        "callback_on_step_end=cb, callback_on_step_end_tensor_inputs=['latents']).frames",
        "motion_adapter_config": config_dict(adapter.config),
        "motion_adapter_zero_initialised_parameters": zero_init,
        "motion_adapter_perturbation": PERTURBATION.strip(),
        "unet_motion_config": config_dict(unet.config),
        "unet2d_config_file": unet_cfg,
        "scheduler_config": {
            "base": "tests/fixtures/tiny-sd/scheduler/scheduler_config.json (SD 1.5's) with overrides",
            "overrides": SCHEDULER_OVERRIDES,
            "ddim_config": {k: v for k, v in dict(base_scheduler_config).items() if not k.startswith("_")},
        },
        "runs": runs,
        "unet_call": {
            "file": "unet_call.safetensors",
            "timestep": UNET_TIMESTEP,
            "encoder_hidden_states": "encode_prompt(prompt, negative_prompt) -> cat([negative, prompt]) = [uncond; cond], "
            "[2, 77, 32]; passed to the UNet as .repeat_interleave(8, dim=0) = [16, 77, 32]",
            "sample": "seeded randn, [2, 4, F, 8, 8]",
            "stats": stats,
        },
        "original_layout": {
            "file": str(ORIGINAL_FILE.relative_to(REPO)),
            "layout": "AnimateDiff mm_sd_v15_v2: {down_blocks.N,up_blocks.N,mid_block}.motion_modules.M.temporal_transformer."
            "{norm,proj_in,proj_out,transformer_blocks.0.{attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0,pos_encoder.pe},"
            "norms.{0,1},ff.net.0.proj,ff.net.2,ff_norm}}",
            "key_mapping": key_mapping_meta,
            "diffusers_converter_roundtrip_max_abs": converter_roundtrip_max_abs,
            "infer_diffusers_model_type": model_type,
            "hub_config_it_would_fetch_without_config": DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type],
            "from_single_file_call": "MotionAdapter.from_single_file('tests/fixtures/tiny-animatediff/mm_tiny_v2.safetensors', "
            "config='tests/fixtures/tiny-animatediff/motion_adapter', local_files_only=True)",
            "from_single_file_state_dict_max_abs_diff": from_single_max_abs,
            "from_single_file_same_keys": True,
            "from_single_file_without_config_offline": no_config_result,
            "not_inferable_from_weights": "motion_num_attention_heads (here 2; mm_sd_v15_v2: 8) and motion_norm_num_groups "
            "(here 32, as mm_sd_v15_v2); motion_max_seq_length = pe.shape[1]; use_motion_mid_block = presence of mid_block.*",
        },
        "layout": layout,
        "files": files,
        "file_sizes_bytes": sizes,
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
    total = sum(sizes.values())
    print(f"tiny-animatediff + reference/animatediff: {total} bytes; stats {json.dumps(stats, indent=1)}")


if __name__ == "__main__":
    main()
