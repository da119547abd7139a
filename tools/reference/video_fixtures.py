"""What the video reference scripts share (make_video_reference.py, make_animatediff_reference.py):
strict-JSON output, seeded noise, safetensors writing, the perturbation that makes every
parameter non-trivial, and the scheduler summary recorded in meta.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def finite_json(v):
    """`v` with non-finite floats as strings ("-inf"): strict JSON readers refuse
    Python's Infinity / NaN literals (diffusers' DPM config holds lambda_min_clipped=-inf)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_json(x) for x in v]
    return v


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def save_st(path: Path, tensors: dict):
    from safetensors.torch import save_file

    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.dtype not in (torch.int64, torch.uint8):
            v = v.to(torch.float32)
        out[k] = v.contiguous()
    save_file(out, str(path))


def describe_st(path: Path):
    from safetensors import safe_open

    names = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}
    with safe_open(str(path), "pt") as f:
        return {k: {"shape": list(f.get_tensor(k).shape), "dtype": names[f.get_tensor(k).dtype]} for k in sorted(f.keys())}


def perturb_(model: torch.nn.Module, seed: int):
    """Make every parameter non-trivial, in a fixed (named_parameters) order: all-zero tensors
    (the layers diffusers zero-initialises, the norm biases) get fresh values, all-one norm
    weights 1 + 0.1 N(0, 1), everything else 0.1 N(0, 1) times its spread. Buffers (position
    tables) are left alone."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if torch.count_nonzero(p) == 0:
                if p.ndim >= 2:
                    fan_in = p[0].numel()
                    p.copy_(noise * (0.5 / fan_in**0.5))
                else:
                    p.copy_(0.05 * noise)
            elif p.ndim == 1 and torch.all(p == 1):
                p.copy_(1.0 + 0.1 * noise)
            else:
                scale = max(float(p.std()) if p.numel() > 1 else 0.0, 0.02)
                p.add_(0.1 * scale * noise)
        for name, p in model.named_parameters():
            assert torch.count_nonzero(p) == p.numel(), name
            assert torch.isfinite(p).all(), name


def scheduler_summary(s):
    cfg = dict(s.config)
    out = {
        "class": type(s).__name__,
        "init_noise_sigma": float(s.init_noise_sigma),
        "timesteps": [float(t) for t in s.timesteps],
        "order": getattr(s, "order", 1),
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "config_keys_defaulted": sorted(cfg.get("_use_default_values", [])),
    }
    if type(s).__name__ != "DDIMScheduler" and getattr(s, "sigmas", None) is not None:
        out["sigmas"] = [float(x) for x in s.sigmas]
    return out


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())
