#!/usr/bin/env python3
"""Peak memory of loading a full-size single-file SD 1.5 checkpoint: adiff against diffusers.

Builds a Stable Diffusion 1.5-shaped pipeline with random weights (diffusers' default
UNet2DConditionModel, the SD VAE, CLIP ViT-L/14's text encoder: 1.07 G parameters), writes
it as one f16 original-layout file (2.1 GB, as ``v1-5-pruned-emaonly-fp16.safetensors``)
with ``make_single_file_checkpoints.py``'s writer, and its diffusers folder (for
``from_single_file``'s config, offline). Then, each in a fresh process, on the CPU in f32:

- ``adiff generate --weights FILE --steps 1 --width 64 --height 64`` (load, encode, one
  step, decode);
- diffusers ``StableDiffusionPipeline.from_single_file(FILE, config=FOLDER)`` and the same
  one-step 64×64 call.

It prints each process's peak resident memory, the f32 weights' size, and the ratios.

    python tools/measure_single_file_load.py target/release/adiff [WORKDIR]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "reference"))


def build(work: Path) -> tuple[Path, Path, int]:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import make_single_file_checkpoints as m

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5's layout
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                      hidden_act="quick_gelu"))
    params = sum(p.numel() for mod in (unet, vae, te) for p in mod.parameters())
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=m.write_tokenizer(work / "tok", "<|endoftext|>"),
                                   unet=unet, scheduler=DDIMScheduler.from_config(m.SCHEDULERS["sd1"]),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for part in (unet, vae, te):
        m.round_to(part.eval(), torch.float16)
    folder = work / "pipeline"
    pipe.save_pretrained(str(folder), safe_serialization=True, variant=None)
    file = work / "sd15-random-fp16.safetensors"
    m.write_single_file("sd1", pipe, file)
    return file, folder, params


def peak_rss_mb(cmd: list[str]) -> float:
    """Run ``cmd`` in a fresh wrapper process and return its peak RSS in MB."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    kb, code = out.stdout.split()[-2:]
    assert code == "0", (cmd, out.stdout, out.stderr)
    return int(kb) / 1024


def main() -> None:
    adiff = Path(sys.argv[1]).resolve()
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="adiff-load-"))
    work.mkdir(parents=True, exist_ok=True)
    file, folder, params = build(work)
    weights_mb = params * 4 / 2**20
    adiff_mb = peak_rss_mb([str(adiff), "generate", "--cpu", "--weights", str(file), "--prompt", "a lighthouse",
                            "--steps", "1", "--width", "64", "--height", "64", "--out", str(work / "a.png")])
    script = (
        "import sys, torch; from diffusers import StableDiffusionPipeline;"
        "torch.set_num_threads(2);"
        "p = StableDiffusionPipeline.from_single_file(sys.argv[1], config=sys.argv[2], local_files_only=True,"
        " torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False);"
        "p(prompt='a lighthouse', num_inference_steps=1, height=64, width=64)"
    )
    diffusers_mb = peak_rss_mb([sys.executable, "-c", script, str(file), str(folder)])
    size_mb = file.stat().st_size / 2**20
    print(f"checkpoint {file.name}: {size_mb:.0f} MB on disk (f16), {params / 1e9:.3f} G parameters, "
          f"{weights_mb:.0f} MB as f32")
    print(f"adiff     peak RSS {adiff_mb:.0f} MB = {adiff_mb / weights_mb:.2f} x the f32 weights")
    print(f"diffusers peak RSS {diffusers_mb:.0f} MB = {diffusers_mb / weights_mb:.2f} x the f32 weights")
    print(f"adiff / diffusers: {adiff_mb / diffusers_mb:.2f}")


if __name__ == "__main__":
    main()
