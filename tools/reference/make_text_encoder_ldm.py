#!/usr/bin/env python3
"""Text-encoder weights in the original layouts, and what diffusers makes of them.

Writes ``tests/fixtures/single-file/text_encoders_ldm.safetensors``: a tiny SD 1.x text
encoder under ``cond_stage_model.transformer.*`` and a tiny SD 2.x OpenCLIP one under
``cond_stage_model.model.*`` (fused ``attn.in_proj_weight``/``in_proj_bias``, ``ln_1``,
``c_fc``, ``positional_embedding``, …; random values, 2 layers, width 32), and
``text_encoders_diffusers.safetensors``: what diffusers' ``convert_ldm_clip_checkpoint`` and
``convert_open_clip_checkpoint`` give for them (prefixed ``sd1.`` / ``sd2.``).
``model::ldm_text`` tests rename the first file and read every tensor of the second from it.

    python tools/reference/make_text_encoder_ldm.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "single-file"
W, LAYERS, VOCAB, POS = 32, 2, 64, 16


def main() -> None:
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731

    clip = CLIPTextModel(CLIPTextConfig(hidden_size=W, intermediate_size=4 * W, num_hidden_layers=LAYERS,
                                        num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=POS))
    sd1 = {"cond_stage_model.transformer." + k: rnd(*v.shape) for k, v in clip.state_dict().items()}

    p = "cond_stage_model.model."
    sd2 = {p + "token_embedding.weight": rnd(VOCAB, W), p + "positional_embedding": rnd(POS, W),
           p + "ln_final.weight": rnd(W), p + "ln_final.bias": rnd(W), p + "text_projection": rnd(W, W)}
    for i in range(LAYERS):
        r = f"{p}transformer.resblocks.{i}."
        sd2.update({r + "ln_1.weight": rnd(W), r + "ln_1.bias": rnd(W), r + "ln_2.weight": rnd(W),
                    r + "ln_2.bias": rnd(W), r + "attn.in_proj_weight": rnd(3 * W, W),
                    r + "attn.in_proj_bias": rnd(3 * W), r + "attn.out_proj.weight": rnd(W, W),
                    r + "attn.out_proj.bias": rnd(W), r + "mlp.c_fc.weight": rnd(4 * W, W),
                    r + "mlp.c_fc.bias": rnd(4 * W), r + "mlp.c_proj.weight": rnd(W, 4 * W),
                    r + "mlp.c_proj.bias": rnd(W)})

    out1 = convert_ldm_clip_checkpoint(sd1)
    out2 = convert_open_clip_checkpoint(clip, sd2)
    out2.pop("text_projection.weight", None)  # transposed: not a relabelling; SDXL's pooled path
    save_file({**sd1, **sd2}, OUT / "text_encoders_ldm.safetensors")
    diffusers = {"sd1." + k: v.contiguous() for k, v in out1.items()}
    diffusers.update({"sd2." + k: v.contiguous() for k, v in out2.items()})
    save_file(diffusers, OUT / "text_encoders_diffusers.safetensors")
    print(f"sd1 {len(out1)} tensors, sd2 {len(out2)} tensors")


if __name__ == "__main__":
    main()
