#!/usr/bin/env python3
"""A full-size single-file checkpoint through adiff and through diffusers, side by side.

Builds a pipeline with the real block layout and widths of SD 1.5 or SDXL base 1.0 and
random weights (made in f32, kept in f16), writes it as one f16 original-layout file (with
``make_single_file_checkpoints.py``'s writer) plus the folder of configs and tokenizers
diffusers' ``from_single_file`` needs offline, and then, each in a fresh process on the CPU
in f32, runs one guided DDIM / Euler step at 64×64 from the same initial latents:

- ``adiff generate --weights FILE --init-latents … --latents-out …``;
- ``Pipeline.from_single_file(FILE, config=FOLDER)`` with the same latents.

It prints the largest difference of the final latents relative to their largest value,
and each process's peak resident memory against the weights' f32 size.

    python tools/check_full_size_single_file.py sdxl target/release/adiff [WORKDIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "reference"))

PROMPT = "a lighthouse on a cliff at sunset"
STEPS = 1
GUIDANCE = 5.0


def build(family: str, work: Path) -> tuple[Path, Path, int]:
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    import make_single_file_checkpoints as m

    torch.manual_seed(0)
    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu")
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        scaling_factor=0.13025 if family == "sdxl" else 0.18215)
    if family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280))
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=CLIPTextModel(clip_l), text_encoder_2=te2,
            tokenizer=m.write_tokenizer(work / "tok1", "<|endoftext|>"), tokenizer_2=m.write_tokenizer(work / "tok2", "!"),
            unet=unet, scheduler=EulerDiscreteScheduler.from_config(m.SCHEDULERS["sdxl"]))
    else:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5's layout
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=CLIPTextModel(clip_l), tokenizer=m.write_tokenizer(work / "tok", "<|endoftext|>"),
            unet=unet, scheduler=DDIMScheduler.from_config(m.SCHEDULERS["sd1"]), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    params = 0
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval().half()  # the file's dtype; also halves the builder's memory
            params += sum(p.numel() for p in part.parameters())
    folder = work / "config"
    # Configs and tokenizers only: from_single_file takes the weights from the file.
    pipe.save_config(str(folder))
    for name, part in pipe.components.items():
        if part is None:
            continue
        if hasattr(part, "save_config"):
            part.save_config(str(folder / name))
        elif hasattr(part, "config"):
            part.config.save_pretrained(str(folder / name))
        else:
            part.save_pretrained(str(folder / name))
    file = work / f"{family}-random-fp16.safetensors"
    m.write_single_file(family, pipe, file)
    return file, folder, params


def timed_rss(cmd: list[str]) -> float:
    """Run ``cmd`` in a fresh wrapper process; its peak RSS in MiB."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    kb, code = out.stdout.split()[-2:]
    assert code == "0", (cmd, out.stdout[-2000:], out.stderr[-4000:])
    return int(kb) / 1024


DIFFUSERS_RUN = r"""
import sys, torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file
family, file, folder, init, out, prompt, steps, guidance = sys.argv[1:9]
torch.set_num_threads(2)
cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
kw = {} if family == "sdxl" else dict(safety_checker=None, requires_safety_checker=False)
pipe = cls.from_single_file(file, config=folder, local_files_only=True, torch_dtype=torch.float32, **kw)
sched = EulerDiscreteScheduler if family == "sdxl" else DDIMScheduler
pipe.scheduler = sched.from_config(pipe.scheduler.config)
pipe.scheduler.set_timesteps(int(steps))
x = load_file(init)["latents"] / pipe.scheduler.init_noise_sigma
with torch.no_grad():
    lat = pipe(prompt=prompt, height=64, width=64, num_inference_steps=int(steps),
               guidance_scale=float(guidance), latents=x, output_type="latent").images
save_file({"latents": lat.contiguous()}, out)
"""


def main() -> None:
    if sys.argv[1] == "--build":
        # In its own process, so that none of the builder's memory stays while the
        # measured processes run.
        file, folder, params = build(sys.argv[2], Path(sys.argv[3]))
        (Path(sys.argv[3]) / "built.json").write_text(json.dumps({"parameters": params}))
        return
    import torch
    from safetensors.torch import load_file, save_file

    family, adiff = sys.argv[1], Path(sys.argv[2]).resolve()
    work = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp(prefix=f"adiff-{family}-"))
    work.mkdir(parents=True, exist_ok=True)
    file, folder = work / f"{family}-random-fp16.safetensors", work / "config"
    if not (work / "built.json").exists():
        subprocess.run([sys.executable, __file__, "--build", family, str(work)], check=True)
    params = json.loads((work / "built.json").read_text())["parameters"]
    sigma = 1.0
    if family == "sdxl":
        from diffusers import EulerDiscreteScheduler
        import make_single_file_checkpoints as m
        s = EulerDiscreteScheduler.from_config(m.SCHEDULERS["sdxl"])
        s.set_timesteps(STEPS)
        sigma = float(s.init_noise_sigma)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    init = work / "init.safetensors"
    save_file({"latents": (noise * sigma).contiguous()}, str(init))
    scheduler = "euler" if family == "sdxl" else "ddim"
    ours, theirs = work / "adiff.safetensors", work / "diffusers.safetensors"
    adiff_mb = timed_rss([str(adiff), "generate", "--cpu", "--weights", str(file), "--prompt", PROMPT,
                          "--steps", str(STEPS), "--guidance", str(GUIDANCE), "--scheduler", scheduler,
                          "--init-latents", str(init), "--latents-out", str(ours), "--out", str(work / "a.png")])
    diffusers_mb = timed_rss([sys.executable, "-c", DIFFUSERS_RUN, family, str(file), str(folder), str(init),
                              str(theirs), PROMPT, str(STEPS), str(GUIDANCE)])
    a, b = load_file(str(ours))["latents"], load_file(str(theirs))["latents"]
    rel = ((a - b).abs().max() / b.abs().max()).item()
    weights_mb = params * 4 / 2**20
    print(json.dumps({
        "family": family, "file": file.name, "file_mib": round(file.stat().st_size / 2**20),
        "parameters": params, "f32_weights_mib": round(weights_mb),
        "final_latents_max_rel_diff": rel,
        "adiff_peak_rss_mib": round(adiff_mb), "diffusers_peak_rss_mib": round(diffusers_mb),
        "adiff_over_weights": round(adiff_mb / weights_mb, 2),
        "diffusers_over_weights": round(diffusers_mb / weights_mb, 2),
        "adiff_over_diffusers": round(adiff_mb / diffusers_mb, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
