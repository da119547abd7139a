#!/usr/bin/env python3
"""Build a tiny random-weight Stable Diffusion 1.x pipeline and record reference tensors.

Everything is regenerated from scratch, deterministically (fixed seeds, float32, CPU,
``torch.use_deterministic_algorithms(True)``, one thread):

* ``tests/fixtures/tiny-sd/``   diffusers-format pipeline folder (safetensors weights, configs,
  CLIP BPE tokenizer with a truncated merge list, SD 1.5's exact scheduler_config.json).
* ``tests/fixtures/reference/`` safetensors files with reference tensors + ``manifest.json``
  describing every file, tensor and parameter, + ``tokens.json``.

No network access is needed: the BPE merges come from ``bpe_simple_vocab_16e6.txt.gz`` shipped in
the ``open_clip_torch`` PyPI package (MIT).  See README.md next to this file.
"""

from __future__ import annotations

import argparse
import gzip
import html
import importlib.util
import json
import os
import platform
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-sd"
REF_DIR = REPO / "tests" / "fixtures" / "reference"

# ----------------------------------------------------------------------------------------------
# Parameters (everything recorded in manifest.json)
# ----------------------------------------------------------------------------------------------
NUM_MERGES = 1500
MAX_LENGTH = 77

SEED_TEXT_ENCODER = 1
SEED_UNET = 2
SEED_VAE = 3
SEED_UNET_SAMPLE = 10
SEED_VAE_LATENTS = 11
SEED_NOISE = 42  # initial noise for every baseline/adaptive run

PROMPT = "a red circle at the top left"
NEGATIVE_PROMPT = "blurry"
GUIDANCE_SCALE = 7.5
HEIGHT = WIDTH = 64
BASELINE_STEPS = 10
ADAPTIVE_STEPS = 25
MAX_SKIPS = 4
UNET_TIMESTEP = 500

# Chosen with --search-deltas so that the masks mix skipped/computed steps (see README).
ADAPTIVE_DELTAS = {
    "ddim": [0.0025, 0.004, 0.012],
    "euler": [0.025, 0.03, 0.15],
    "dpm++": [0.0025, 0.012, 0.04],
}
SEARCH_GRID = [round(float(x), 6) for x in np.geomspace(1e-3, 3.0, 36)]

# name -> (diffusers class name, file-name stem)
SCHEDULERS = [
    ("ddim", "DDIMScheduler", "ddim"),
    ("euler", "EulerDiscreteScheduler", "euler"),
    ("dpm++", "DPMSolverMultistepScheduler", "dpmpp"),
]

TOKEN_PROMPTS = [
    "a red circle at the top left",
    "A Photo Of An ASTRONAUT riding a horse",
    "hello, world! what's up? (test) [ok] {fine} a-b_c",
    "the year 2024 has 365 days and 12345 numbers",
    "   extra    spaces\tand\nnewlines   ",
    "café déjà vu naïve Zürich",
    "",
    "emoji 🚀 and symbols & < > $ % #",
    "it's they're we've i'm you'll he'd",
    " ".join(
        ["a very long prompt with many words that keeps going"] * 10
    ),  # 100 words -> must be truncated
]

# SD 1.5's scheduler/scheduler_config.json, verbatim (no timestep_spacing / prediction_type keys).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


# ----------------------------------------------------------------------------------------------
# CLIP BPE tokenizer (reference implementation = OpenAI CLIP's SimpleTokenizer, MIT)
# ----------------------------------------------------------------------------------------------
@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def find_bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open_clip_torch is not installed (pip install --no-deps open_clip_torch)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise SystemExit(f"missing {path}")
    return path


def load_merges(num_merges: int) -> list[str]:
    lines = gzip.open(find_bpe_file()).read().decode("utf-8").split("\n")
    # line 0 is the '#version: 0.2' header; CLIP uses lines[1:49152-256-2+1]
    return lines[1 : 1 + num_merges]


def build_vocab(merges: list[str]) -> list[str]:
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab), "duplicate vocab entries"
    return vocab


class SimpleTokenizer:
    """Port of openai/CLIP clip/simple_tokenizer.py (encode only), with a given merge list."""

    def __init__(self, merges: list[str]):
        import ftfy  # noqa: F401  (same normalisation as CLIP)
        import regex

        self.byte_encoder = bytes_to_unicode()
        vocab = build_vocab(merges)
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.bpe_ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]

    @staticmethod
    def _pairs(word):
        return {(a, b) for a, b in zip(word[:-1], word[1:])}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = self._pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = self._pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    @staticmethod
    def clean(text):
        import ftfy
        import regex

        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip()
        return text.lower()

    def encode(self, text):
        """Token ids with <|startoftext|> ... <|endoftext|>, no truncation / padding."""
        import regex

        ids = [self.sot]
        for token in regex.findall(self.pat, self.clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        ids.append(self.eot)
        return ids

    def encode_padded(self, text, max_length, pad_id):
        ids = self.encode(text)
        if len(ids) > max_length:  # same as HF truncation=True with special tokens kept
            ids = ids[: max_length - 1] + [self.eot]
        return ids + [pad_id] * (max_length - len(ids))


def add_text_model_prefix(path: Path):
    """transformers 5 saves CLIPTextModel weights without the `text_model.` prefix; rewrite the file with
    the standard prefix used by every SD 1.x checkpoint (transformers loads both layouts)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    sd = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})


def write_vocab_files(tok_dir: Path, merges: list[str]):
    """vocab.json + merges.txt exactly like openai/clip-vit-large-patch14 (and SD 1.5) lay them out."""
    vocab = build_vocab(merges)
    (tok_dir / "vocab.json").write_text(
        json.dumps({v: i for i, v in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tokenizer(tmp_dir: Path, merges: list[str]):
    """Load vocab.json + merges.txt with transformers' CLIP tokenizer (fast / tokenizers backend)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    write_vocab_files(tmp_dir, merges)
    try:  # transformers 4.x: the real fast class (converted from the slow one); 5.x: alias of CLIPTokenizer
        from transformers import CLIPTokenizerFast as FastCls
    except ImportError:  # pragma: no cover
        from transformers import CLIPTokenizer as FastCls
    tok = FastCls.from_pretrained(str(tmp_dir), model_max_length=MAX_LENGTH)
    assert tok.is_fast
    return tok


def finalize_tokenizer_dir(tok_dir: Path, merges: list[str]):
    """After save_pretrained (tokenizer.json + tokenizer_config.json): add vocab.json/merges.txt and, since
    transformers 5 no longer writes it, special_tokens_map.json (SD 1.5 layout)."""
    write_vocab_files(tok_dir, merges)
    if not (tok_dir / "special_tokens_map.json").exists():
        def tok(content):  # the layout transformers 4.x save_pretrained writes
            return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

        special = {
            "bos_token": tok("<|startoftext|>"),
            "eos_token": tok("<|endoftext|>"),
            "pad_token": tok("<|endoftext|>"),
            "unk_token": tok("<|endoftext|>"),
        }
        (tok_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def randomise_(model: torch.nn.Module, seed: int):
    """Every norm weight = 1 + 0.1 N, every bias = 0.05 N, any all-zero tensor -> 0.02 N."""
    g = torch.Generator().manual_seed(seed)
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    done = set()
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            if isinstance(mod, norm_types):
                if getattr(mod, "weight", None) is not None:
                    mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=g))
                    done.add(id(mod.weight))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=g))
                    done.add(id(mod.bias))
        for name, p in model.named_parameters():
            if id(p) in done:
                continue
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif torch.count_nonzero(p) == 0:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and torch.all(p == 1):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        for name, p in model.named_parameters():
            assert torch.count_nonzero(p) == p.numel(), name
            assert torch.isfinite(p).all(), name


def build_models(vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED_TEXT_ENCODER)
    te_cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        dropout=0.0,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    text_encoder = CLIPTextModel(te_cfg).eval()
    randomise_(text_encoder, SEED_TEXT_ENCODER + 100)

    torch.manual_seed(SEED_UNET)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        use_linear_projection=False,
    ).eval()
    randomise_(unet, SEED_UNET + 100)

    torch.manual_seed(SEED_VAE)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        # 4 blocks -> downsampling factor 8 like SD; a channel change (16 -> 32) exercises the
        # resnet conv_shortcut in encoder and decoder while keeping the file small.
        block_out_channels=(16, 16, 16, 32),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()
    randomise_(vae, SEED_VAE + 100)
    return text_encoder, unet, vae


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def save_st(path: Path, tensors: dict):
    from safetensors.torch import save_file

    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.dtype not in (torch.int64,):
            v = v.to(torch.float32)
        out[k] = v.contiguous()
    save_file(out, str(path))


def describe_st(path: Path):
    from safetensors import safe_open

    res = {}
    with safe_open(str(path), "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            res[k] = {"shape": list(t.shape), "dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype]}
    return res


def f32(x) -> float:
    """A float32 scalar tensor -> python float (exact)."""
    return float(torch.as_tensor(x, dtype=torch.float32).item())


def json_safe(x):
    """Strict JSON (serde_json rejects Infinity/NaN): non-finite floats become strings."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return x


def scheduler_summary(s):
    out = {
        "class": type(s).__name__,
        "timestep_spacing": s.config.timestep_spacing,
        "init_noise_sigma": float(s.init_noise_sigma),
        "timesteps": [float(t) for t in s.timesteps],
        "order": getattr(s, "order", 1),
    }
    if hasattr(s, "sigmas") and s.sigmas is not None and type(s).__name__ != "DDIMScheduler":
        out["sigmas"] = [float(x) for x in s.sigmas]
    cfg = dict(s.config)
    out["config"] = {k: v for k, v in cfg.items() if not k.startswith("_")}
    out["config_keys_defaulted"] = sorted(cfg.get("_use_default_values", []))
    return out


# ----------------------------------------------------------------------------------------------
# Denoising loop (mirrors StableDiffusionPipeline.__call__) + published AdaptiveDiffusion rule
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def run_loop(pipe, steps, noise, delta=None, max_skips=MAX_SKIPS):
    """Returns dict with step latents, guided noise preds, computed flags and decision records.

    delta=None disables skipping (plain pipeline loop)."""
    device = torch.device("cpu")
    scheduler = pipe.scheduler
    prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
        PROMPT, device, 1, True, NEGATIVE_PROMPT
    )
    prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])  # CFG batch: [uncond, cond]
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    latents = noise.clone().to(device) * scheduler.init_noise_sigma
    init_latents = latents.clone()
    extra_step_kwargs = pipe.prepare_extra_step_kwargs(None, 0.0)

    prev_latents, mask, diff_list = [], [], []
    cached = None
    computed, decisions, step_latents, noise_preds = [], [], [], []

    def unet_call(model_input, t):
        return pipe.unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            timestep_cond=None,
            cross_attention_kwargs=None,
            added_cond_kwargs=None,
            return_dict=False,
        )[0]

    for i, t in enumerate(timesteps):
        latent_model_input = torch.cat([latents] * 2)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        if delta is None:
            raw = unet_call(latent_model_input, t)
            called = True
        elif len(prev_latents) <= 3:
            raw = unet_call(latent_model_input, t)
            cached = raw
            called = True
            if len(prev_latents) > 1:
                diff_list.append((prev_latents[-1] - prev_latents[-2]).abs().mean())
        else:
            if mask[-1]:
                raw = unet_call(latent_model_input, t)
                cached = raw
                called = True
            else:
                raw = cached  # RAW output (both CFG halves); guidance re-applied below
                called = False
        computed.append(called)
        noise_pred_uncond, noise_pred_text = raw.chunk(2)
        noise_pred = noise_pred_uncond + GUIDANCE_SCALE * (noise_pred_text - noise_pred_uncond)
        noise_preds.append(noise_pred)
        latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

        if delta is not None and len(prev_latents) >= 3:
            # estimate_skipping(latents) of the published code
            prev_diff = diff_list[-1]
            prev_prev_diff = diff_list[-2]
            cur_diff = (latents - prev_latents[-1]).abs().mean()
            diff_list.append(cur_diff)
            third = torch.abs((cur_diff + prev_prev_diff) / 2 - prev_diff)
            thr = prev_diff * delta
            forced = len(mask) > 4 and not any(mask[-max_skips:])
            if forced:
                decision = True
            elif abs((cur_diff + prev_prev_diff) / 2 - prev_diff) <= prev_diff * delta:
                decision = False
            else:
                decision = True
            decisions.append(
                {
                    "step": i,
                    "cur": f32(cur_diff),
                    "prev": f32(prev_diff),
                    "pp": f32(prev_prev_diff),
                    "third_order": f32(third),
                    "threshold": f32(thr),
                    "forced": bool(forced),
                    "compute_next": bool(decision),
                }
            )
            mask.append(bool(decision))
        prev_latents.append(latents)
        step_latents.append(latents)

    return {
        "timesteps": timesteps.clone(),
        "init_latents": init_latents,
        "step_latents": torch.cat(step_latents),
        "final_latents": latents,
        "noise_preds": torch.cat(noise_preds),
        "computed": computed,
        "mask": mask,
        "decisions": decisions,
    }


@torch.no_grad()
def run_pipeline(pipe, steps, noise):
    recorded = []

    def cb(p, i, t, kw):
        recorded.append(kw["latents"].clone())
        return kw

    out = pipe(
        PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE_SCALE,
        latents=noise.clone(),
        output_type="latent",
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents"],
    ).images
    return out, torch.cat(recorded)


def rel_margin(d):
    return abs(d["third_order"] - d["threshold"]) / max(d["threshold"], 1e-30)


def summarise_adaptive(res, steps):
    n_calls = sum(res["computed"])
    non_forced = [d for d in res["decisions"][:-1] if not d["forced"]]  # last decision is never used
    return {
        "unet_calls": n_calls,
        "skipped": steps - n_calls,
        "skip_fraction": (steps - n_calls) / steps,
        "min_relative_margin": min((rel_margin(d) for d in non_forced), default=None),
    }


# ----------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search-deltas", action="store_true", help="print the delta grid search and exit")
    ap.add_argument("--grid", type=str, default=None, help="comma-separated deltas for --search-deltas")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    try:
        torch.use_deterministic_algorithms(True)
        deterministic = True
    except Exception:  # pragma: no cover
        deterministic = False
    torch.set_default_dtype(torch.float32)

    import diffusers
    import safetensors
    import tokenizers
    import transformers
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
    )
    from transformers import CLIPTokenizer

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    classes = {
        "DDIMScheduler": DDIMScheduler,
        "EulerDiscreteScheduler": EulerDiscreteScheduler,
        "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    }

    # ---------------------------------------------------------------- tokenizer
    merges = load_merges(NUM_MERGES)
    vocab = build_vocab(merges)
    ref_tok = SimpleTokenizer(merges)
    bos_id, eos_id = ref_tok.sot, ref_tok.eot
    pad_id = eos_id

    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    if REF_DIR.exists():
        shutil.rmtree(REF_DIR)
    MODEL_DIR.mkdir(parents=True)
    REF_DIR.mkdir(parents=True)

    # ---------------------------------------------------------------- models + pipeline folder
    text_encoder, unet, vae = build_models(len(vocab), bos_id, eos_id, pad_id)
    tmp_tok_dir = REF_DIR / "_tok_tmp"
    hf_tok = build_tokenizer(tmp_tok_dir, merges)
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=hf_tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(MODEL_DIR), safe_serialization=True)
    shutil.rmtree(tmp_tok_dir)
    # exact SD 1.5 scheduler config and tokenizer vocab/merges files
    (MODEL_DIR / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(SD15_SCHEDULER_CONFIG, indent=2) + "\n"
    )
    finalize_tokenizer_dir(MODEL_DIR / "tokenizer", merges)
    add_text_model_prefix(MODEL_DIR / "text_encoder" / "model.safetensors")
    original = {
        "text_encoder": {k: v.clone() for k, v in text_encoder.state_dict().items()},
        "unet": {k: v.clone() for k, v in unet.state_dict().items()},
        "vae": {k: v.clone() for k, v in vae.state_dict().items()},
    }
    del pipe, text_encoder, unet, vae

    # Reload exactly as a diffusers user would.
    pipe = StableDiffusionPipeline.from_pretrained(
        str(MODEL_DIR), torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")
    base_scheduler_config = pipe.scheduler.config  # the loaded PNDM config
    for comp, sd in original.items():  # every weight must round-trip through the saved folder
        loaded = getattr(pipe, comp).state_dict()
        assert set(loaded) == set(sd), (comp, set(loaded) ^ set(sd))
        for k, v in sd.items():
            assert torch.equal(loaded[k], v), (comp, k)
    del original
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"

    # ---------------------------------------------------------------- tokens.json
    tok_dir = MODEL_DIR / "tokenizer"
    fast_tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    from tokenizers import Tokenizer

    raw_tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert pipe.tokenizer.pad_token_id == pad_id and pipe.tokenizer.model_max_length == MAX_LENGTH
    token_records = []
    for text in TOKEN_PROMPTS:
        full = ref_tok.encode(text)
        ids_ref = ref_tok.encode_padded(text, MAX_LENGTH, pad_id)
        ids_fast = fast_tok(text, padding="max_length", truncation=True, max_length=MAX_LENGTH).input_ids
        ids_pipe = pipe.tokenizer(text, padding="max_length", truncation=True, max_length=MAX_LENGTH).input_ids
        ids_raw = raw_tok.encode(text).ids  # tokenizer.json through the tokenizers library, no truncation
        assert ids_ref == ids_fast == ids_pipe, (text, ids_ref, ids_fast)
        assert ids_raw == full, (text, ids_raw, full)
        token_records.append(
            {
                "text": text,
                "input_ids": ids_ref,
                "input_ids_fast": ids_fast,
                "num_tokens_untruncated": len(full),
                "ids_untruncated": full,
                "truncated": len(full) > MAX_LENGTH,
            }
        )
    assert any(r["truncated"] for r in token_records)
    tokens_json = {
        "description": "77 ids per prompt: reference = port of OpenAI CLIP SimpleTokenizer on this truncated "
        "vocabulary, padded with pad_id / truncated to 76 tokens + <|endoftext|>; input_ids_fast = transformers "
        "CLIPTokenizer (tokenizers backend, tokenizer.json) with padding='max_length', truncation=True, "
        "max_length=77 (asserted equal). ids_untruncated / num_tokens_untruncated include <|startoftext|> and "
        "<|endoftext|>; ids_untruncated equals tokenizers.Tokenizer.from_file('tokenizer.json').encode(text).ids.",
        "max_length": MAX_LENGTH,
        "vocab_size": len(vocab),
        "num_merges": NUM_MERGES,
        "bos_id": bos_id,
        "eos_id": eos_id,
        "pad_id": pad_id,
        "prompts": token_records,
    }
    (REF_DIR / "tokens.json").write_text(json.dumps(tokens_json, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    # ---------------------------------------------------------------- text encoder
    with torch.no_grad():
        te_prompts = [PROMPT, ""]
        ids = pipe.tokenizer(
            te_prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        ).input_ids
        hidden = pipe.text_encoder(ids)[0]
        # must match what encode_prompt produces
        pe, ne = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, "")
        assert torch.equal(pe[0], hidden[0]) and torch.equal(ne[0], hidden[1])
    assert torch.isfinite(hidden).all()
    save_st(REF_DIR / "text_encoder.safetensors", {"input_ids": ids.to(torch.int64), "last_hidden_state": hidden})
    stats = {"text_encoder_last_hidden_state_std": float(hidden.std()), "text_encoder_absmax": float(hidden.abs().max())}

    # ---------------------------------------------------------------- unet
    with torch.no_grad():
        sample = randn((2, 4, 8, 8), SEED_UNET_SAMPLE)
        unet_out = pipe.unet(sample, UNET_TIMESTEP, encoder_hidden_states=hidden, return_dict=False)[0]
    assert torch.isfinite(unet_out).all()
    stats["unet_out_std"] = float(unet_out.std())
    assert 0.3 <= stats["unet_out_std"] <= 3.0, stats
    save_st(
        REF_DIR / "unet.safetensors",
        {"sample": sample, "encoder_hidden_states": hidden, "out": unet_out},
    )

    # ---------------------------------------------------------------- vae
    with torch.no_grad():
        vae_latents = randn((1, 4, 8, 8), SEED_VAE_LATENTS)
        image = pipe.vae.decode(vae_latents, return_dict=False)[0]
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    stats["vae_image_std"] = float(image.std())
    stats["vae_image_absmax"] = float(image.abs().max())
    save_st(REF_DIR / "vae.safetensors", {"latents": vae_latents, "image": image})

    # ---------------------------------------------------------------- schedulers
    noise = randn((1, 4, 8, 8), SEED_NOISE)

    def use_scheduler(cls_name):
        pipe.scheduler = classes[cls_name].from_config(base_scheduler_config)

    if args.search_deltas:
        for name, cls_name, _ in SCHEDULERS:
            use_scheduler(cls_name)
            print(f"== {name}")
            seen = {}
            grid = [float(x) for x in args.grid.split(",")] if args.grid else SEARCH_GRID
            for d in grid:
                r = run_loop(pipe, ADAPTIVE_STEPS, noise, delta=d)
                s = summarise_adaptive(r, ADAPTIVE_STEPS)
                m = "".join("C" if c else "s" for c in r["computed"])
                tag = "" if m not in seen else f" (same as {seen[m]})"
                seen.setdefault(m, d)
                print(f"delta={d:<10g} skipped={s['skipped']:2d} margin={s['min_relative_margin']:.3g} {m}{tag}")
        return

    schedule_info = {}
    baseline_entries = []
    adaptive_entries = []
    for name, cls_name, stem in SCHEDULERS:
        # --- 10-step pipeline baseline
        use_scheduler(cls_name)
        final, step_latents = run_pipeline(pipe, BASELINE_STEPS, noise)
        sched = pipe.scheduler
        info = scheduler_summary(sched)
        schedule_info[name] = {
            "class": cls_name,
            "timestep_spacing": info["timestep_spacing"],
            "config": info["config"],
            "config_keys_defaulted": info["config_keys_defaulted"],
        }
        for k in ("lower_order_final", "final_sigmas_type", "euler_at_final", "algorithm_type", "solver_order", "solver_type"):
            if k in sched.config:
                schedule_info[name][k] = sched.config[k]
        # --- own loop, skipping disabled, must reproduce the pipeline
        use_scheduler(cls_name)
        mine = run_loop(pipe, BASELINE_STEPS, noise, delta=None)
        diff = float((mine["final_latents"] - final).abs().max())
        assert diff <= 1e-6, (name, diff)
        assert float((mine["step_latents"] - step_latents).abs().max()) <= 1e-6
        tensors = {
            "noise": noise,
            "init_latents": mine["init_latents"],
            "step_latents": step_latents,
            "final_latents": final,
            "timesteps": mine["timesteps"].to(torch.float32),
            "noise_preds": mine["noise_preds"],
        }
        entry = {
            "scheduler": name,
            "class": cls_name,
            "file": f"baseline_{stem}.safetensors",
            "steps": BASELINE_STEPS,
            "timesteps": [float(t) for t in mine["timesteps"]],
            "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
            "max_abs_diff_own_loop_vs_pipeline": diff,
        }
        if cls_name != "DDIMScheduler":
            tensors["sigmas"] = pipe.scheduler.sigmas.to(torch.float32)
            entry["sigmas"] = [float(x) for x in pipe.scheduler.sigmas]
        save_st(REF_DIR / entry["file"], tensors)
        baseline_entries.append(entry)

        # --- 25-step pipeline baseline (for adaptive-vs-baseline comparisons)
        use_scheduler(cls_name)
        final25, _ = run_pipeline(pipe, ADAPTIVE_STEPS, noise)
        use_scheduler(cls_name)
        mine25 = run_loop(pipe, ADAPTIVE_STEPS, noise, delta=None)
        assert float((mine25["final_latents"] - final25).abs().max()) <= 1e-6
        schedule_info[name]["timesteps_dtype"] = str(mine25["timesteps"].dtype).replace("torch.", "")
        schedule_info[name]["steps_%d" % ADAPTIVE_STEPS] = {
            "timesteps": [float(t) for t in mine25["timesteps"]],
            "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        }
        if cls_name != "DDIMScheduler":
            schedule_info[name]["steps_%d" % ADAPTIVE_STEPS]["sigmas"] = [float(x) for x in pipe.scheduler.sigmas]
        schedule_info[name]["steps_%d" % BASELINE_STEPS] = {
            "timesteps": entry["timesteps"],
            "init_noise_sigma": entry["init_noise_sigma"],
            **({"sigmas": entry["sigmas"]} if "sigmas" in entry else {}),
        }

        # --- adaptive runs
        masks_seen = set()
        for k, delta in enumerate(ADAPTIVE_DELTAS[name]):
            use_scheduler(cls_name)
            r = run_loop(pipe, ADAPTIVE_STEPS, noise, delta=delta, max_skips=MAX_SKIPS)
            s = summarise_adaptive(r, ADAPTIVE_STEPS)
            assert 0 < s["skipped"] < ADAPTIVE_STEPS - 4, (name, delta, s)
            assert r["computed"] == [True] * 4 + r["mask"][:-1]
            masks_seen.add(tuple(r["computed"]))
            tensors = {
                "noise": noise,
                "init_latents": r["init_latents"],
                "step_latents": r["step_latents"],
                "final_latents": r["final_latents"],
                "timesteps": r["timesteps"].to(torch.float32),
                "noise_preds": r["noise_preds"],
                "decision_values": torch.tensor(
                    [[d["cur"], d["prev"], d["pp"], d["third_order"], d["threshold"]] for d in r["decisions"]],
                    dtype=torch.float32,
                ),
                "baseline_final_latents": final25,
            }
            if cls_name != "DDIMScheduler":
                tensors["sigmas"] = pipe.scheduler.sigmas.to(torch.float32)
            fname = f"adaptive_{stem}_{k}.safetensors"
            save_st(REF_DIR / fname, tensors)
            adaptive_entries.append(
                {
                    "scheduler": name,
                    "class": cls_name,
                    "file": fname,
                    "index": k,
                    "steps": ADAPTIVE_STEPS,
                    "delta": delta,
                    "max_skips": MAX_SKIPS,
                    "computed": r["computed"],
                    "mask": r["mask"],
                    "decisions": r["decisions"],
                    "unet_calls": s["unet_calls"],
                    "skipped": s["skipped"],
                    "skip_fraction": s["skip_fraction"],
                    "min_relative_margin": s["min_relative_margin"],
                    "max_abs_diff_vs_baseline": float((r["final_latents"] - final25).abs().max()),
                }
            )
        assert len(masks_seen) == len(ADAPTIVE_DELTAS[name]), f"{name}: deltas give identical masks"

    # scheduler constant tables (identical for the three schedulers: float32 torch math)
    s0 = DDIMScheduler.from_config(base_scheduler_config)
    save_st(REF_DIR / "schedule.safetensors", {"betas": s0.betas, "alphas_cumprod": s0.alphas_cumprod})

    # ---------------------------------------------------------------- manifest
    files = {}
    for p in sorted(REF_DIR.glob("*.safetensors")):
        files[p.name] = {"bytes": p.stat().st_size, "tensors": describe_st(p)}
    manifest = {
        "format_version": 1,
        "generator": "tools/reference/make_reference.py",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "torch_settings": {
            "device": "cpu",
            "dtype": "float32",
            "deterministic_algorithms": deterministic,
            "num_threads": 1,
        },
        "model_dir": "tests/fixtures/tiny-sd",
        "seeds": {
            "text_encoder_init": SEED_TEXT_ENCODER,
            "unet_init": SEED_UNET,
            "vae_init": SEED_VAE,
            "unet_sample": SEED_UNET_SAMPLE,
            "vae_latents": SEED_VAE_LATENTS,
            "noise": SEED_NOISE,
            "note": "tensors drawn with torch.randn(shape, generator=torch.Generator().manual_seed(seed))",
        },
        "dtypes": {"input_ids": "I64", "everything_else": "F32"},
        "tokenizer": {
            "file": "tokens.json",
            "vocab_size": len(vocab),
            "num_merges": NUM_MERGES,
            "bos_id": bos_id,
            "eos_id": eos_id,
            "pad_id": pad_id,
            "max_length": MAX_LENGTH,
        },
        "text_encoder": {
            "file": "text_encoder.safetensors",
            "prompts": te_prompts,
            "note": "input_ids I64 (2,77) padded with pad_id; last_hidden_state (2,77,32) after final_layer_norm",
        },
        "unet": {
            "file": "unet.safetensors",
            "timestep": UNET_TIMESTEP,
            "note": "out = unet(sample, timestep, encoder_hidden_states); encoder_hidden_states = "
            "text_encoder last_hidden_state for [prompt, ''] (batch order as in text_encoder.safetensors)",
        },
        "vae": {
            "file": "vae.safetensors",
            "scaling_factor": 0.18215,
            "note": "image = vae.decode(latents).sample, raw (no /scaling_factor, no post-processing)",
        },
        "generation": {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": GUIDANCE_SCALE,
            "height": HEIGHT,
            "width": WIDTH,
            "eta": 0.0,
            "cfg_batch_order": ["uncond(negative_prompt)", "cond(prompt)"],
            "guidance": "noise_pred = uncond + guidance_scale * (cond - uncond)",
            "noise_note": "`noise` is exactly the tensor passed as latents= to StableDiffusionPipeline; the "
            "pipeline multiplies it by scheduler.init_noise_sigma, `init_latents` = noise * init_noise_sigma is "
            "the first loop input. step_latents[i] = latents after step i; noise_preds[i] = guided noise "
            "prediction given to scheduler.step at step i.",
        },
        "schedulers": schedule_info,
        "baseline": baseline_entries,
        "adaptive_rule": {
            "source": "UniModal4Reasoning/AdaptiveDiffusion (README / examples/AdaptiveDiffusion/acceleration/sparse_pipeline.py)",
            "summary": "steps i=0..N-1; x_j = latents after step j. i<=3: always call the UNet. i>=4: call the UNet "
            "iff mask[-1], else reuse the cached RAW unet output (both CFG halves) and re-apply guidance. "
            "Every step runs scheduler.step. After step i>=3: cur=mean|x_i-x_{i-1}|, prev=mean|x_{i-1}-x_{i-2}|, "
            "pp=mean|x_{i-2}-x_{i-3}| (float32); decision = True if len(mask)>4 and not any(mask[-max_skips:]) "
            "(forced); elif |(cur+pp)/2-prev| <= prev*delta: False (skip next); else True. computed = [True]*4 + mask[:-1].",
            "decision_values_columns": ["cur", "prev", "pp", "third_order", "threshold"],
        },
        "adaptive": adaptive_entries,
        "stats": stats,
        "files": files,
    }
    (REF_DIR / "manifest.json").write_text(json.dumps(json_safe(manifest), indent=1, allow_nan=False) + "\n")

    total = sum(p.stat().st_size for p in (REPO / "tests" / "fixtures").rglob("*") if p.is_file())
    model_total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    print(f"tiny-sd: {model_total/1e6:.2f} MB, fixtures total: {total/1e6:.2f} MB")
    print(json.dumps(stats, indent=1))
    for e in adaptive_entries:
        m = "".join("C" if c else "s" for c in e["computed"])
        print(f"{e['scheduler']:6s} delta={e['delta']:<8g} calls={e['unet_calls']:2d} margin={e['min_relative_margin']:.3g} {m}")


if __name__ == "__main__":
    main()
