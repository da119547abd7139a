#!/usr/bin/env python3
"""PyTorch + diffusers side of a video UNet comparison (one CFG call, batch 2), adiff vs PyTorch.

  make-modelscope DIR [--size 256] [--frames 16] [--seed 0]
                write a UNet3DConditionModel with ali-vilab/text-to-video-ms-1.7b's config and
                random weights (diffusers folder: config.json + diffusion_pytorch_model.safetensors,
                f32) and DIR/inputs-SIZE-FRAMES.safetensors: sample (2,4,F,H/8,W/8),
                timestep (1,) = 500, encoder_hidden_states (2,77,1024)
  make-animatediff DIR --sd15 SD15_UNET_DIR [--size 256] [--frames 16] [--seed 0]
                write a MotionAdapter with guoyww/animatediff-motion-adapter-v1-5-2's config and
                random weights to DIR/motion_adapter/ (safetensors, f32) and
                DIR/inputs-SIZE-FRAMES.safetensors: sample (2,4,F,H/8,W/8), timestep (1,) = 500,
                encoder_hidden_states (2,77,768); the SD 1.5 UNet is the one
                `unet_torch.py make` wrote (checked to exist)
  run DIR --family modelscope|animatediff [--sd15 PATH] --size 256 --frames 16 --calls 1
                load the UNet as users do (from_pretrained, safetensors; AnimateDiff:
                UNetMotionModel.from_unet2d(SD 1.5 UNet, motion adapter)), run one warm-up CFG
                call and N timed ones, write DIR/torch-FAMILY-SIZE-FRAMES.safetensors (tensor
                `out`, (2,4,F,H/8,W/8)) and print one JSON line: ms per call, peak RSS
  agree A B     relative L2 difference of tensor `out` in two files, one JSON line

Weights: diffusers' default init, then the layers it zero-initialises so that a fresh block is
the identity (ModelScope's temporal conv4[-1], AnimateDiff's motion proj_out) get
p += 0.02 * randn so that the temporal layers compute something.
"""
import argparse
import gc
import json
import os
import resource
import sys
import time

# ali-vilab/text-to-video-ms-1.7b unet/config.json
MODELSCOPE_UNET = {
    "_class_name": "UNet3DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                         "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                       "CrossAttnUpBlock3D"],
}

# guoyww/animatediff-motion-adapter-v1-5-2 config.json
ANIMATEDIFF_ADAPTER = {
    "block_out_channels": [320, 640, 1280, 1280],
    "motion_layers_per_block": 2,
    "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 8,
    "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}

TIMESTEP = 500.0


def peak_rss_bytes():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def perturb(model, select, seed):
    """p += 0.02 * randn for the parameters `select(name)` picks; returns how many, and how
    many of them were all zero before."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = zero = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if select(name):
                zero += int(not p.any())
                p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))
                n += 1
    return n, zero


def write_inputs(dir, size, frames, ctx_dim, seed):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    lat = size // 8
    inputs = {
        "sample": torch.randn(2, 4, frames, lat, lat, generator=g),
        "timestep": torch.tensor([TIMESTEP], dtype=torch.float32),
        "encoder_hidden_states": torch.randn(2, 77, ctx_dim, generator=g),
    }
    path = os.path.join(dir, f"inputs-{size}-{frames}.safetensors")
    save_file(inputs, path)
    print(f"wrote {path}", file=sys.stderr)


def save_model(model, dir):
    model.save_pretrained(dir, safe_serialization=True, max_shard_size="100GB")
    print(f"wrote {dir}", file=sys.stderr)


def make_modelscope(args):
    import torch
    from diffusers import UNet3DConditionModel

    os.makedirs(args.dir, exist_ok=True)
    if args.skip_model and os.path.exists(os.path.join(args.dir, "config.json")):
        print(f"keeping the model in {args.dir}", file=sys.stderr)
    else:
        torch.manual_seed(args.seed)
        unet = UNet3DConditionModel.from_config(dict(MODELSCOPE_UNET, **json.loads(args.config)))
        n, zero = perturb(unet, lambda name: ".conv4.3." in name, args.seed + 2)
        params = sum(p.numel() for p in unet.parameters())
        print(f"{params / 1e9:.3f}B params; perturbed {n} conv4[-1] tensors ({zero} were zero)",
              file=sys.stderr)
        save_model(unet.float(), args.dir)
        del unet
        gc.collect()
    write_inputs(args.dir, args.size, args.frames, 1024, args.seed + 1)


def make_animatediff(args):
    import torch
    from diffusers import MotionAdapter

    if not os.path.exists(os.path.join(args.sd15, "config.json")):
        sys.exit(f"no SD 1.5 UNet at {args.sd15} (make it with tools/perf/unet_torch.py make)")
    os.makedirs(args.dir, exist_ok=True)
    torch.manual_seed(args.seed)
    adapter = MotionAdapter.from_config(dict(ANIMATEDIFF_ADAPTER, **json.loads(args.config)))
    n, zero = perturb(adapter, lambda name: ".proj_out." in name, args.seed + 2)
    params = sum(p.numel() for p in adapter.parameters())
    print(f"{params / 1e6:.1f}M params; perturbed {n} proj_out tensors ({zero} were zero)",
          file=sys.stderr)
    save_model(adapter.float(), os.path.join(args.dir, "motion_adapter"))
    del adapter
    gc.collect()
    with open(os.path.join(args.sd15, "config.json")) as f:
        ctx_dim = json.load(f)["cross_attention_dim"]
    write_inputs(args.dir, args.size, args.frames, ctx_dim, args.seed + 1)


def run(args):
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "f16": torch.float16}[args.dtype]
    dev = torch.device(args.device)
    inputs = load_file(os.path.join(args.dir, f"inputs-{args.size}-{args.frames}.safetensors"))
    x = inputs["sample"].to(dev, dtype)
    t = inputs["timestep"].float().to(dev)
    ehs = inputs["encoder_hidden_states"].to(dev, dtype)
    b, _, f, h, w = x.shape
    assert f == args.frames and h == args.size // 8 == w, x.shape

    t0 = time.perf_counter()
    if args.family == "modelscope":
        from diffusers import UNet3DConditionModel

        unet = UNet3DConditionModel.from_pretrained(args.dir, torch_dtype=dtype)
    else:
        from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

        if not args.sd15:
            sys.exit("--family animatediff needs --sd15 PATH")
        unet2d = UNet2DConditionModel.from_pretrained(args.sd15, torch_dtype=dtype)
        adapter = MotionAdapter.from_pretrained(
            os.path.join(args.dir, "motion_adapter"), torch_dtype=dtype)
        unet = UNetMotionModel.from_unet2d(unet2d, adapter).to(dtype)
        del unet2d, adapter
        gc.collect()
        # As AnimateDiffPipeline does: the text states once per frame.
        ehs = ehs.repeat_interleave(f, dim=0)
    unet.eval().to(dev)
    assert all(p.dtype == dtype for p in unet.parameters())
    load_ms = (time.perf_counter() - t0) * 1e3
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    calls_ms = []
    with torch.inference_mode():
        call = lambda: unet(x, t, encoder_hidden_states=ehs).sample
        out = call()  # warm-up
        sync()
        for _ in range(args.calls):
            t1 = time.perf_counter()
            out = call()
            sync()
            calls_ms.append((time.perf_counter() - t1) * 1e3)
    assert out.shape == x.shape, (out.shape, x.shape)
    suffix = "" if args.dtype == "f32" else f"-{args.dtype}"
    name = f"torch-{args.family}-{args.size}-{args.frames}{suffix}.safetensors"
    save_file({"out": out.float().contiguous().cpu()}, os.path.join(args.dir, name))
    print(json.dumps({
        "side": "torch",
        "family": args.family,
        "size": args.size,
        "frames": args.frames,
        "ms": sum(calls_ms) / len(calls_ms),
        "calls_ms": calls_ms,
        "load_ms": load_ms,
        "peak_rss_bytes": peak_rss_bytes(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


def agree(args):
    from safetensors.torch import load_file

    a = load_file(args.a)["out"].double()
    b = load_file(args.b)["out"].double()
    if a.shape != b.shape:
        print(json.dumps({"rel": None, "error": f"shapes {list(a.shape)} vs {list(b.shape)}"}))
        sys.exit(1)
    rel = float((a - b).norm() / b.norm())
    max_abs = float((a - b).abs().max())
    print(json.dumps({"rel": rel, "max_abs": max_abs, "ref_abs_mean": float(b.abs().mean())}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("make-modelscope", "make-animatediff"):
        m = sub.add_parser(cmd)
        m.add_argument("dir")
        if cmd == "make-animatediff":
            m.add_argument("--sd15", required=True, help="SD 1.5 UNet folder (unet_torch.py make)")
        else:
            m.add_argument("--skip-model", action="store_true",
                           help="keep an existing model in DIR, only write the inputs")
        m.add_argument("--size", type=int, default=256)
        m.add_argument("--frames", type=int, default=16)
        m.add_argument("--seed", type=int, default=0)
        m.add_argument("--config", default="{}",
                       help="JSON overrides of the published config (small test models only)")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--family", choices=["modelscope", "animatediff"], required=True)
    r.add_argument("--sd15", help="SD 1.5 UNet folder (animatediff)")
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--frames", type=int, default=16)
    r.add_argument("--calls", type=int, default=1)
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--device", default="cpu", help="cpu or cuda")
    r.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    a = sub.add_parser("agree", help="relative L2 difference of two outputs (tensor 'out')")
    a.add_argument("a")
    a.add_argument("b")
    args = p.parse_args()
    {"make-modelscope": make_modelscope, "make-animatediff": make_animatediff, "run": run,
     "agree": agree}[args.cmd](args)


if __name__ == "__main__":
    main()
