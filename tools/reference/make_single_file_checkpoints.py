#!/usr/bin/env python3
"""Tiny single-file checkpoints (SD 1.x, SD 2.x, SDXL) and LoRAs, judged by diffusers.

For each family this builds a tiny random-weight diffusers pipeline with the family's block
*layout* (SD 1.x / 2.x: 4 down and up blocks, 2 layers per block; SDXL: 3 blocks, the first
without attention, 1/1/2 transformer layers) but tiny widths, text encoders with CLIP's full
49 408-token vocabulary (so adiff's built-in tokenizer serves them), and the family's
published scheduler config. It then writes the pipeline as ONE file in the original (LDM)
layout, as AUTOMATIC1111 / ComfyUI users keep checkpoints:

- ``tiny-sd1.safetensors``  (f16)  ``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.transformer.*`` (plus the ``position_ids`` and DDPM buffers real files
  carry);
- ``tiny-sd2.safetensors``  (f32)  ``cond_stage_model.model.*`` OpenCLIP layout: fused
  ``in_proj`` q/k/v, 24 resblocks of which SD 2.x uses 23 (the penultimate layer);
- ``tiny-sdxl.safetensors`` (bf16) ``conditioner.embedders.0.transformer.*`` (CLIP) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP with its ``text_projection``, stored
  transposed), ``label_emb`` (the added time ids).

diffusers is the judge: ``Pipeline.from_single_file(file, config=<the folder>)`` must give
back every tensor of the folder's pipeline exactly, and the same final latents. Those
latents (DDIM for SD 1.x / 2.x, Euler for SDXL, 4 steps, 64×64, guidance 5) are written to
``single_file_runs.safetensors`` with the initial latents; ``tests/single_file.rs`` runs
``adiff generate --weights FILE`` from the same initial latents and compares.

LoRAs: one random rank-4 LoRA on the SD 1.x UNet (attention and feed-forward) and text
encoder, saved in the diffusers/PEFT format twice (``lora-sd1-peft.safetensors``,
``unet.*.lora_A.weight``, alpha/rank folded into B; ``lora-sd1-peft-alpha.safetensors``,
as trained, alphas in the ``lora_adapter_metadata`` diffusers writes) and in the kohya/A1111
format (``lora-sd1-kohya.safetensors``,
``lora_unet_*.lora_down.weight`` with ``.alpha``); one on SDXL in the kohya format with the
original-layout block names SDXL trainers write (``lora_unet_input_blocks_4_1_*``,
``lora_te1_*``, ``lora_te2_*``). Each is loaded with ``load_lora_weights`` + ``fuse_lora``
(scale 0.8) and run like the checkpoints. LyCORIS: a LoHa and a LoKr on the SD 1.x UNet's
attention, made and merged with PEFT (diffusers does not load them), written under
LyCORIS's names (``lycoris-sd1-loha.safetensors``, ``lycoris-sd1-lokr.safetensors``).

    python tools/reference/make_single_file_checkpoints.py   # CPU, about a minute
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_single_file_vae import ldm_name as vae_ldm_name  # noqa: E402
from make_unet_keymap import ldm_name as unet_ldm_name  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "single-file"
MERGES = REPO / "assets" / "tokenizers" / "clip-bpe-merges.txt"

PROMPT = "a red circle at the top left"
NEGATIVE = "blurry"
GUIDANCE = 5.0
STEPS = 4
SEED = 11
LORA_SCALE = 0.8

BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False,
         "clip_sample": False, "skip_prk_steps": True, "trained_betas": None}
# The published scheduler configs: runwayml/stable-diffusion-v1-5,
# stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0.
SCHEDULERS = {
    "sd1": {"_class_name": "PNDMScheduler", **BETAS, "prediction_type": "epsilon"},
    "sd2": {"_class_name": "DDIMScheduler", **BETAS, "prediction_type": "v_prediction"},
    "sdxl": {"_class_name": "EulerDiscreteScheduler", **BETAS, "prediction_type": "epsilon",
             "interpolation_type": "linear", "sample_max_value": 1.0, "timestep_spacing": "leading",
             "use_karras_sigmas": False},
}
RUN_SCHEDULER = {"sd1": ("ddim", DDIMScheduler), "sd2": ("ddim", DDIMScheduler),
                 "sdxl": ("euler", EulerDiscreteScheduler)}
FILE_DTYPE = {"sd1": torch.float16, "sd2": torch.float32, "sdxl": torch.bfloat16}


def bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path, pad: str) -> CLIPTokenizer:
    merges = [m for m in MERGES.read_text(encoding="utf-8").split("\n") if m]
    symbols = bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad,
                         model_max_length=77)


def clip(hidden: int, layers: int, act: str, projection: int | None = None):
    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=1, vocab_size=49408, max_position_embeddings=77,
                         hidden_act=act, projection_dim=projection or hidden, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=1)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def vae(scaling: float) -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=scaling)


def unet(family: str) -> UNet2DConditionModel:
    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32)
    if family == "sd1":
        return UNet2DConditionModel(**common, block_out_channels=(32, 32, 32, 32), cross_attention_dim=16,
                                    attention_head_dim=8,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    if family == "sd2":
        # SD 2.x: 64-wide heads (at least one), linear projections, upcast attention.
        return UNet2DConditionModel(**common, block_out_channels=(32, 32, 32, 32), cross_attention_dim=16,
                                    attention_head_dim=(1, 1, 1, 1), use_linear_projection=True,
                                    upcast_attention=True,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return UNet2DConditionModel(**common, block_out_channels=(32, 32, 32), cross_attention_dim=16 + 24,
                                attention_head_dim=(1, 1, 1), use_linear_projection=True,
                                transformer_layers_per_block=(1, 1, 2),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=20 + 6 * 8)


def round_to(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Make the f32 weights exactly representable in the file's dtype."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def build(family: str, folder: Path):
    torch.manual_seed({"sd1": 1, "sd2": 2, "sdxl": 3}[family])
    sched = SCHEDULERS[family]
    if family == "sdxl":
        # Two widths, as CLIP-L's 768 and bigG's 1280: diffusers tells the encoders apart by width.
        te1, te2 = clip(16, 2, "quick_gelu"), clip(24, 3, "gelu", projection=20)
        pipe = StableDiffusionXLPipeline(
            vae=vae(0.13025), text_encoder=te1, text_encoder_2=te2,
            tokenizer=write_tokenizer(folder / "tok1", "<|endoftext|>"),
            tokenizer_2=write_tokenizer(folder / "tok2", "!"), unet=unet(family),
            scheduler=EulerDiscreteScheduler.from_config(sched), force_zeros_for_empty_prompt=True)
    else:
        te = clip(16, 2, "quick_gelu") if family == "sd1" else clip(16, 23, "gelu")
        pad = "<|endoftext|>" if family == "sd1" else "!"
        scheduler = DDIMScheduler.from_config(sched)
        pipe = StableDiffusionPipeline(vae=vae(0.18215), text_encoder=te,
                                       tokenizer=write_tokenizer(folder / "tok", pad), unet=unet(family),
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            round_to(part.eval(), FILE_DTYPE[family])
    pipe.save_pretrained(str(folder / "pipeline"), safe_serialization=True)
    # The published scheduler config, class name included (PNDM for SD 1.5).
    (folder / "pipeline" / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    return pipe


def bare(state: dict) -> dict:
    return {k.removeprefix("text_model."): v for k, v in state.items()}


def clip_ldm(model, prefix: str) -> dict:
    return {f"{prefix}text_model.{k}": v for k, v in bare(model.state_dict()).items()}


def open_clip_ldm(model, prefix: str, extra_layer: bool, g: torch.Generator) -> dict:
    s = bare(model.state_dict())
    out = {prefix + "token_embedding.weight": s["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": s["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": s["final_layer_norm.weight"],
           prefix + "ln_final.bias": s["final_layer_norm.bias"]}
    layers = model.config.num_hidden_layers
    w = model.config.hidden_size
    for i in range(layers):
        e, r = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[r + f"ln_1.{p}"] = s[e + f"layer_norm1.{p}"]
            out[r + f"ln_2.{p}"] = s[e + f"layer_norm2.{p}"]
            out[r + f"attn.in_proj_{p}"] = torch.cat([s[e + f"self_attn.{x}_proj.{p}"] for x in "qkv"])
            out[r + f"attn.out_proj.{p}"] = s[e + f"self_attn.out_proj.{p}"]
            out[r + f"mlp.c_fc.{p}"] = s[e + f"mlp.fc1.{p}"]
            out[r + f"mlp.c_proj.{p}"] = s[e + f"mlp.fc2.{p}"]
    if extra_layer:
        # SD 2.x keeps 24 resblocks and a projection it never uses (the penultimate layer's
        # output goes to the UNet): random here, so using them would show.
        r = f"{prefix}transformer.resblocks.{layers}."
        for name, v in list(out.items()):
            if name.startswith(f"{prefix}transformer.resblocks.0."):
                out[r + name[len(f"{prefix}transformer.resblocks.0."):]] = torch.randn(v.shape, generator=g)
        out[prefix + "text_projection"] = torch.randn(w, w, generator=g)
    if "text_projection.weight" in s:
        out[prefix + "text_projection"] = s["text_projection.weight"].T
    return out


def write_single_file(family: str, pipe, path: Path) -> int:
    g = torch.Generator().manual_seed(99)
    cfg = pipe.unet.config
    up_attn = ["CrossAttn" in t for t in cfg.up_block_types]
    out = {"model.diffusion_model." + unet_ldm_name(k, cfg.layers_per_block, up_attn): v
           for k, v in pipe.unet.state_dict().items()}
    up_blocks = len(pipe.vae.config.block_out_channels)
    for k, v in pipe.vae.state_dict().items():
        new = vae_ldm_name(k, up_blocks)
        if ".mid.attn_1." in new and new.endswith(".weight") and new.split(".")[-2] != "norm":
            v = v.reshape(*v.shape, 1, 1)
        out["first_stage_model." + new] = v
    if family == "sd1":
        out.update(clip_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
        # What real SD 1.x files carry besides weights.
        out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
        out["betas"] = betas
        out["alphas_cumprod"] = torch.cumprod(1 - betas, 0)
    elif family == "sd2":
        out.update(open_clip_ldm(pipe.text_encoder, "cond_stage_model.model.", True, g))
    else:
        out.update(clip_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        out.update(open_clip_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model.", False, g))
    dtype = FILE_DTYPE[family]
    out = {k: (v.to(dtype) if v.is_floating_point() and k not in ("betas", "alphas_cumprod") else v).contiguous()
           for k, v in out.items()}
    save_file(out, str(path))
    return len(out)


def same_weights(a, b, family: str) -> None:
    for name, part in a.components.items():
        if not isinstance(part, torch.nn.Module):
            continue
        got, want = bare(b.components[name].state_dict()), bare(part.state_dict())
        got = {k: v for k, v in got.items() if "position_ids" not in k}
        want = {k: v for k, v in want.items() if "position_ids" not in k}
        assert set(got) == set(want), (family, name, sorted(set(got) ^ set(want))[:6])
        unloaded = [k for k, v in got.items() if v.is_meta]
        assert not unloaded, (family, name, unloaded)
        worst = max((got[k].float() - want[k].float()).abs().max().item() for k in want)
        assert worst == 0.0, (family, name, worst)


def run(pipe, family: str, noise: torch.Tensor) -> torch.Tensor:
    name, cls = RUN_SCHEDULER[family]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=STEPS,
                    guidance_scale=GUIDANCE, latents=noise.clone(), output_type="latent").images


def randomize_lora(model: torch.nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def kohya_name(module: str, component: str, ldm: bool, cfg=None) -> str:
    """kohya's key stem for a diffusers module name: ``lora_unet_`` + the module path with
    underscores (SDXL trainers use the original-layout block names), ``lora_te*_`` for text
    encoders (``text_model_`` kept, as kohya writes it)."""
    if component == "unet":
        if ldm:
            up_attn = ["CrossAttn" in t for t in cfg.up_block_types]
            module = unet_ldm_name(module + ".weight", cfg.layers_per_block, up_attn)[: -len(".weight")]
        return "lora_unet_" + module.replace(".", "_")
    te = {"text_encoder": "lora_te", "text_encoder_2": "lora_te2", "text_encoder_1": "lora_te1"}[component]
    if not module.startswith("text_model."):
        module = "text_model." + module
    return f"{te}_" + module.replace(".", "_")


def make_lora(pipe, family: str, g: torch.Generator):
    """A random LoRA on the UNet and text encoder(s), three ways: PEFT tensors with each
    module's alpha / rank folded into B (no alpha stored: diffusers then takes alpha =
    rank), PEFT tensors as trained with the adapter configs diffusers writes into the
    file's ``lora_adapter_metadata`` (alpha 2 on the UNet, 8 on the text encoders, over
    rank 4), and kohya tensors with per-module ``.alpha``."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    # One alpha per component: diffusers 0.42.1 reads a kohya file whose alphas differ between
    # modules with one alpha for all (seen here with to_k at 6 among 2s), so a per-module
    # alpha could not be checked against it. (adiff merges each module with its own alpha.)
    unet_cfg = LoraConfig(r=4, lora_alpha=2, init_lora_weights=False,
                          target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2", "proj_in"])
    te_cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1"])
    encoders = ["text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    parts = {"unet": (pipe.unet, unet_cfg), **{e: (getattr(pipe, e), te_cfg) for e in encoders}}
    folded, raw, kohya, metadata = {}, {}, {}, {}
    for component, (model, cfg) in parts.items():
        inject_adapter_in_model(cfg, model, adapter_name="made")
        randomize_lora(model, g)
        state = get_peft_model_state_dict(model, adapter_name="made")
        for key, value in cfg.to_dict().items():
            metadata[f"{component}.{key}"] = sorted(value) if isinstance(value, set) else value
        for key, v in state.items():
            module, ab = key.rsplit(".lora_", 1)
            # PEFT's rule: an alpha_pattern key matching the module name (or a dotted
            # suffix of it), else lora_alpha; over the rank.
            alpha = next((a for k, a in cfg.alpha_pattern.items() if module == k or module.endswith("." + k)),
                         cfg.lora_alpha)
            scale = alpha / cfg.r
            v = v.detach().clone().contiguous()
            raw[f"{component}.{key}"] = v
            folded[f"{component}.{key}"] = (v * scale if ab.startswith("B") else v).contiguous()
            comp = "text_encoder_1" if (family == "sdxl" and component == "text_encoder") else component
            stem = kohya_name(module, comp, family == "sdxl", pipe.unet.config)
            kohya[f"{stem}.lora_{'up' if ab.startswith('B') else 'down'}.weight"] = v
            kohya[f"{stem}.alpha"] = torch.tensor(float(scale * cfg.r))
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(metadata, indent=2, sort_keys=True, default=str)}
    return folded, (raw, meta), kohya


def make_lycoris(pipe, kind: str, g: torch.Generator) -> dict:
    """A random LyCORIS LoHa or LoKr on the SD 1.x UNet's attention layers, made with PEFT
    and merged into ``pipe`` (PEFT's ``merge``, the reference); returns it under the names
    LyCORIS writes (``lora_unet_<module>.hada_w1_a`` … / ``.lokr_w1``, ``.lokr_w2_a``,
    ``.lokr_w2_b``, with ``.alpha``). LoKr's rank is chosen so that w2 is factored (PEFT and
    LyCORIS then agree on the scale alpha / rank)."""
    from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    if kind == "loha":
        cfg = LoHaConfig(r=4, alpha=3, target_modules=targets, init_weights=False)
    else:
        cfg = LoKrConfig(r=2, alpha=3, target_modules=targets, init_weights=False)
    inject_adapter_in_model(cfg, pipe.unet, adapter_name="made")
    with torch.no_grad():
        for n, p in pipe.unet.named_parameters():
            if "hada_" in n or "lokr_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    state = get_peft_model_state_dict(pipe.unet, adapter_name="made")
    out = {}
    for key, v in state.items():
        module, param = key.rsplit(".", 1)
        stem = kohya_name(module, "unet", False)
        out[f"{stem}.{param}"] = v.detach().clone().contiguous()
        out[f"{stem}.alpha"] = torch.tensor(float(cfg.alpha))
    for layer in pipe.unet.modules():
        if hasattr(layer, "merge") and hasattr(layer, "scaling") and "made" in getattr(layer, "scaling", {}):
            layer.merge(adapter_names=["made"])
    return out


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tensors, cases = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("sd1", "sd2", "sdxl"):
            folder = Path(tmp) / family
            pipe = build(family, folder)
            path = OUT / f"tiny-{family}.safetensors"
            count = write_single_file(family, pipe, path)
            cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
            kw = dict(torch_dtype=torch.float32)
            if family != "sdxl":
                kw.update(safety_checker=None, requires_safety_checker=False)
            folder_pipe = cls.from_pretrained(str(folder / "pipeline"), **kw)
            single = cls.from_single_file(str(path), config=str(folder / "pipeline"), local_files_only=True, **kw)
            same_weights(folder_pipe, single, family)
            noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
            want = run(folder_pipe, family, noise)
            got = run(single, family, noise)
            gap = (got - want).abs().max().item() / want.abs().max().item()
            assert gap < 1e-5, (family, gap)
            tensors[f"init_{family}"] = (noise * single.scheduler.init_noise_sigma).contiguous()
            tensors[family] = got.contiguous()
            sched = RUN_SCHEDULER[family][0]
            cases.append({"file": path.name, "family": family, "scheduler": sched, "init": f"init_{family}",
                          "latents": family, "loras": []})
            print(f"{path.name}: {count} tensors; from_single_file gives the folder's weights exactly, "
                  f"final latents within {gap:.1e} of the folder's")

            lora_files = []
            if family in ("sd1", "sdxl"):
                peft, with_metadata, kohya = make_lora(single, family, torch.Generator().manual_seed(5))
                if family == "sd1":
                    lora_files.append(("lora-sd1-peft.safetensors", peft, None))
                    lora_files.append(("lora-sd1-peft-alpha.safetensors", *with_metadata))
                    lora_files.append(("lora-sd1-kohya.safetensors", kohya, None))
                else:
                    lora_files.append(("lora-sdxl-kohya.safetensors", kohya, None))
            first = None
            for name, state, metadata in lora_files:
                save_file(state, str(OUT / name), metadata=metadata)
                pipe = cls.from_single_file(str(path), config=str(folder / "pipeline"), local_files_only=True, **kw)
                pipe.load_lora_weights(str(OUT), weight_name=name)
                pipe.fuse_lora(lora_scale=LORA_SCALE)
                out = run(pipe, family, noise)
                moved = (out - got).abs().max().item()
                assert moved > 1e-3, (name, moved)  # the LoRA changes the result
                if first is not None:
                    gap = (out - first).abs().max().item() / first.abs().max().item()
                    assert gap < 1e-5, (name, gap)  # every format gives the same LoRA
                first = out if first is None else first
                key = name.removesuffix(".safetensors").replace("-", "_")
                tensors[key] = out.contiguous()
                cases.append({"file": path.name, "family": family, "scheduler": sched, "init": f"init_{family}",
                              "latents": key, "loras": [f"{name}:{LORA_SCALE}"]})
                print(f"{name}: {len(state)} tensors; load_lora_weights + fuse_lora moved the latents by {moved:.3f}")
            if family == "sd1":
                for kind in ("loha", "lokr"):
                    name = f"lycoris-sd1-{kind}.safetensors"
                    pipe = cls.from_single_file(str(path), config=str(folder / "pipeline"), local_files_only=True, **kw)
                    state = make_lycoris(pipe, kind, torch.Generator().manual_seed(8))
                    save_file(state, str(OUT / name))
                    out = run(pipe, family, noise)
                    moved = (out - got).abs().max().item()
                    assert moved > 1e-3, (name, moved)
                    key = name.removesuffix(".safetensors").replace("-", "_")
                    tensors[key] = out.contiguous()
                    cases.append({"file": path.name, "family": family, "scheduler": sched,
                                  "init": f"init_{family}", "latents": key, "loras": [f"{name}:1.0"]})
                    print(f"{name}: {len(state)} tensors; PEFT's merge moved the latents by {moved:.3f}")
    save_file(tensors, str(OUT / "single_file_runs.safetensors"))
    meta = {"generator": "tools/reference/make_single_file_checkpoints.py",
            "diffusers": __import__("diffusers").__version__, "torch": torch.__version__,
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance_scale": GUIDANCE, "steps": STEPS,
            "width": 64, "height": 64, "cases": cases}
    (OUT / "single_file_runs.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
