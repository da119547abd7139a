#!/usr/bin/env python3
"""PyTorch + diffusers side of tools/perf/unet_vs_torch.sh.

  make DIR      write an SD 1.5-size UNet with random weights (diffusers folder:
                config.json + diffusion_pytorch_model.safetensors, f32) and DIR/inputs.safetensors
                (latents x (2,4,H/8,W/8), timestep t, encoder states (2,77,768)) for each size
  pipeline DIR  write a whole random-weight pipeline of SD 1.5's size (UNet, VAE, CLIP-L
                text encoder; scheduler and tokenizer files from tests/fixtures/tiny-sd)
  run DIR SIZE  load the UNet as users do (from_pretrained, safetensors), run one warm-up
                CFG call (batch 2) and N timed ones, write DIR/torch-SIZE.safetensors and print
                one JSON line: ms per call, peak RSS
"""
import argparse
import json
import os
import resource
import sys
import time

SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}


SD15_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14), as SD 1.5 ships it.
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)


def randomise(model, seed):
    """Every weight random (no layer left at its zero init), scaled by fan-in."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.02)


def pipeline(args):
    import shutil
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    here = os.path.dirname(os.path.abspath(__file__))
    tiny = os.path.join(here, "..", "..", "tests", "fixtures", "tiny-sd")
    os.makedirs(args.dir, exist_ok=True)
    for part in ("scheduler", "tokenizer"):
        shutil.copytree(os.path.join(tiny, part), os.path.join(args.dir, part), dirs_exist_ok=True)
    shutil.copy(os.path.join(tiny, "model_index.json"), args.dir)
    unet = UNet2DConditionModel.from_config(SD15_UNET)
    randomise(unet, args.seed)
    unet.save_pretrained(os.path.join(args.dir, "unet"), safe_serialization=True)
    del unet
    vae = AutoencoderKL.from_config(SD15_VAE)
    randomise(vae, args.seed + 1)
    # Keep the decoder's output in a sane range: a random VAE otherwise saturates.
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(0.1)
    vae.save_pretrained(os.path.join(args.dir, "vae"), safe_serialization=True)
    del vae
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    randomise(text, args.seed + 2)
    text.save_pretrained(os.path.join(args.dir, "text_encoder"), safe_serialization=True)
    print(f"wrote {args.dir}", file=sys.stderr)


# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
SDXL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}


def peak_rss_bytes():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make(args):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    sdxl = args.family == "sdxl"
    unet = UNet2DConditionModel.from_config(SDXL_UNET if sdxl else SD15_UNET)
    randomise(unet, args.seed)
    if args.dtype == "f16":
        unet = unet.half()
    os.makedirs(args.dir, exist_ok=True)
    unet.save_pretrained(args.dir, safe_serialization=True)
    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = {}
    for size in args.sizes:
        lat = size // 8
        x = torch.randn(1, 4, lat, lat, generator=g)
        inputs[f"x{size}"] = torch.cat([x, x], 0).contiguous()
    inputs["context"] = torch.randn(2, 77, 2048 if sdxl else 768, generator=g)
    inputs["t"] = torch.tensor([981.0])
    if sdxl:
        inputs["text_embeds"] = torch.randn(2, 1280, generator=g)
        inputs["time_ids"] = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * 2)
    save_file(inputs, os.path.join(args.dir, "inputs.safetensors"))
    print(f"wrote {args.dir}", file=sys.stderr)


def run(args):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    inputs = load_file(os.path.join(args.dir, "inputs.safetensors"))
    cast = lambda v: v.to(dev, dtype)
    x = cast(inputs[f"x{args.size}"])
    ctx = cast(inputs["context"])
    t = inputs["t"].reshape(()).to(dev)
    added = None
    if "text_embeds" in inputs:
        added = {"text_embeds": cast(inputs["text_embeds"]), "time_ids": cast(inputs["time_ids"])}
    unet = UNet2DConditionModel.from_pretrained(args.dir, torch_dtype=dtype).to(dev)
    unet.eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        call = lambda: unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        out = call()  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(args.calls):
            out = call()
        sync()
        ms = (time.perf_counter() - t0) * 1e3 / args.calls
    name = f"torch-{args.size}{'' if args.dtype == 'f32' else '-' + args.dtype}.safetensors"
    save_file({"out": out.float().cpu().contiguous()}, os.path.join(args.dir, name))
    print(json.dumps({
        "side": "pytorch",
        "size": args.size,
        "device": args.device,
        "dtype": args.dtype,
        "ms": ms,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
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
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    m.add_argument("--dtype", choices=["f32", "f16"], default="f32", help="stored weights")
    pl = sub.add_parser("pipeline")
    pl.add_argument("dir")
    pl.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("size", type=int)
    r.add_argument("--calls", type=int, default=2)
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                   help="the model's dtype (weights stored in another are converted at load)")
    a = sub.add_parser("agree", help="relative L2 difference of two outputs (tensor 'out')")
    a.add_argument("a")
    a.add_argument("b")
    args = p.parse_args()
    {"make": make, "pipeline": pipeline, "run": run, "agree": agree}[args.cmd](args)


if __name__ == "__main__":
    main()
