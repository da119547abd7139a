#!/usr/bin/env python3
"""Original-layout (LDM) UNet names → diffusers names, as diffusers itself maps them.

Builds UNets with Stable Diffusion's block layouts (SD 1.x / 2.x: 4 blocks, 2 layers, the
last down / first up block without attention; SDXL: 3 blocks, the first without attention,
10/2 transformer layers cut to 2 here) at tiny widths, writes each state dict under the
original names (the inverse written here), and then lets diffusers'
``single_file_utils.convert_ldm_unet_checkpoint`` map it back: every tensor must land on
its own name (each tensor is made unique first), so the map below is diffusers' own.
``model::ldm_unet`` tests compare their renaming with it. Names do not depend on widths.

    python tools/reference/make_unet_keymap.py   # tests/fixtures/single-file/unet_keymap.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "single-file" / "unet_keymap.json"

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_name(name: str, layers: int, up_attn: list[bool]) -> str:
    p = name.split(".")
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    head = ".".join(p[:2]) if len(p) > 2 else p[0]
    if head in top:
        return top[head] + "." + ".".join(p[2:] if len(p) > 2 else p[1:])

    def resnet(rest):
        return ".".join([RESNET.get(rest[0], rest[0])] + rest[1:])

    if p[0] == "down_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "downsamplers":
            return f"input_blocks.{(i + 1) * (layers + 1)}.0.op." + ".".join(p[5:])
        j = int(p[3])
        n = i * (layers + 1) + j + 1
        return f"input_blocks.{n}.0." + resnet(p[4:]) if kind == "resnets" else f"input_blocks.{n}.1." + ".".join(p[4:])
    if p[0] == "mid_block":
        j = int(p[2])
        return f"middle_block.{2 * j}." + resnet(p[3:]) if p[1] == "resnets" else "middle_block.1." + ".".join(p[3:])
    if p[0] == "up_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "upsamplers":
            k = 2 if up_attn[i] else 1
            return f"output_blocks.{i * (layers + 1) + layers}.{k}." + ".".join(p[4:])
        j = int(p[3])
        n = i * (layers + 1) + j
        return f"output_blocks.{n}.0." + resnet(p[4:]) if kind == "resnets" else f"output_blocks.{n}.1." + ".".join(p[4:])
    raise ValueError(name)


def layout(name: str, **cfg) -> dict:
    unet = UNet2DConditionModel(**cfg)
    sd = {k: torch.full((1,), float(i)) for i, k in enumerate(unet.state_dict())}
    up_attn = ["CrossAttn" in t for t in cfg["up_block_types"]]
    ldm = {"model.diffusion_model." + ldm_name(k, cfg["layers_per_block"], up_attn): v for k, v in sd.items()}
    assert len(ldm) == len(sd), "two names collide"
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:10]
    by_value = {float(v): k for k, v in back.items()}
    pairs = []
    for ldm_key, v in ldm.items():
        diffusers_key = by_value[float(v)]
        pairs.append([ldm_key[len("model.diffusion_model."):], diffusers_key])
    print(f"{name}: {len(pairs)} names, diffusers maps every one back to its own tensor")
    return {"layers_per_block": cfg["layers_per_block"], "names": sorted(pairs)}


def main() -> None:
    sd = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=32,
              attention_head_dim=8, norm_num_groups=8, sample_size=8,
              down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    sd2 = dict(sd, use_linear_projection=True, attention_head_dim=(2, 4, 8, 8))
    xl = dict(block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=32,
              attention_head_dim=(2, 4, 8), norm_num_groups=8, sample_size=8,
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
              transformer_layers_per_block=(1, 2, 2), use_linear_projection=True,
              addition_embed_type="text_time", addition_time_embed_dim=8,
              projection_class_embeddings_input_dim=32 + 6 * 8)
    out = {"source": "diffusers 0.42.1 single_file_utils.convert_ldm_unet_checkpoint",
           "sd1": layout("sd1", **sd), "sd2": layout("sd2", **sd2), "sdxl": layout("sdxl", **xl)}
    OUT.write_text(json.dumps(out, indent=0) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
