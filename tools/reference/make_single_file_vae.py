#!/usr/bin/env python3
"""A VAE file in the original (LDM) layout, checked with diffusers' own single-file loader.

Standalone VAE files such as ``vae-ft-mse-840000-ema-pruned.safetensors`` keep the
CompVis/stable-diffusion names (``encoder.down.0.block.1.nin_shortcut``,
``decoder.up.3.upsample.conv``, ``encoder.mid.attn_1.q`` as 1×1 convolutions, …). This
script writes the tiny pipeline's VAE (``tests/fixtures/tiny-sd/vae``) in that layout to
``tests/fixtures/single-file/tiny-vae-ldm.safetensors`` and then lets diffusers judge it:
``AutoencoderKL.from_single_file(file, config=<the folder>)`` must give back every tensor of
the folder's VAE exactly, and the same decode of the reference latents. ``model::ldm_vae``
tests read the file and compare with ``tests/fixtures/reference/vae.safetensors``.

    python tools/reference/make_single_file_vae.py   # CPU, a second
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
VAE_DIR = REPO / "tests" / "fixtures" / "tiny-sd" / "vae"
OUT = REPO / "tests" / "fixtures" / "single-file" / "tiny-vae-ldm.safetensors"

ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_name(name: str, up_blocks: int) -> str:
    """The original-layout name of a diffusers AutoencoderKL tensor name."""
    n = name
    n = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", r"down.\1.block.\2.", n)
    n = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", n)

    def up(m: re.Match, kind: str) -> str:
        i = up_blocks - 1 - int(m.group(1))
        return f"up.{i}.{kind}"

    n = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: up(m, f"block.{m.group(2)}."), n)
    n = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: up(m, "upsample."), n)
    n = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", n)
    m = re.match(r"(.*)mid_block\.attentions\.0\.(.*)\.(weight|bias)$", n)
    if m:
        n = f"{m.group(1)}mid.attn_1.{ATTN[m.group(2)]}.{m.group(3)}"
    n = n.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    return n


def main() -> None:
    folder = load_file(VAE_DIR / "diffusion_pytorch_model.safetensors")
    up_blocks = 1 + max(int(k.split(".")[2]) for k in folder if k.startswith("decoder.up_blocks."))
    ldm = {}
    for name, t in folder.items():
        new = ldm_name(name, up_blocks)
        if ".mid.attn_1." in new and new.endswith(".weight") and not new.split(".")[-2] == "norm":
            t = t.reshape(*t.shape, 1, 1)  # the original stores them as 1×1 convolutions
        assert new not in ldm, new
        ldm[new] = t.contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm, OUT)

    # diffusers' own loader is the judge.
    ref = AutoencoderKL.from_pretrained(VAE_DIR).eval()
    single = AutoencoderKL.from_single_file(str(OUT), config=str(VAE_DIR)).eval()
    got = single.state_dict()
    want = ref.state_dict()
    assert set(got) == set(want), set(got) ^ set(want)
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in want)
    assert worst == 0.0, worst
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (single.decode(z).sample - ref.decode(z).sample).abs().max().item()
    assert diff == 0.0, diff
    print(f"{OUT}: {len(ldm)} tensors; from_single_file gives the folder's VAE exactly")


if __name__ == "__main__":
    main()
