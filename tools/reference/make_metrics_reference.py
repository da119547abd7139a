#!/usr/bin/env python3
"""Reference values for the image-quality metrics (PSNR, SSIM, CLIP alignment).

Writes ``tests/fixtures/metrics/``, deterministically and without network access:

* ``pairs/*.png`` — fixed 8-bit RGB image pairs (a crop of scikit-image's bundled
  ``astronaut`` picture and seeded random images, each with a perturbed twin), and
  ``expected.json`` with scikit-image's PSNR (``peak_signal_noise_ratio``, data_range=255) and
  SSIM (``structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=2``) of every pair.
* ``tiny-clip/`` — a transformers ``CLIPModel`` with tiny random weights (config.json,
  model.safetensors, preprocessor_config.json, the tiny-sd CLIP tokenizer files).
* ``clip_reference.safetensors`` + ``clip_reference.json`` — for image/prompt pairs: the
  token ids, the ``pixel_values`` of transformers' PIL-backend ``CLIPImageProcessor``
  (the tiny config's 32-pixel crop), the projected image and text embeddings of
  ``CLIPModel.get_image_features`` / ``get_text_features`` and their cosine.
* ``clip224/*.png`` — the 224x224 uint8 crop that the default ``openai/clip-vit-base-patch32``
  preprocessing (shortest side to 224, PIL bicubic, centre crop 224) makes from each pair image,
  and in ``clip_reference.json`` the largest difference between
  ``normalize(that crop)`` and the processor's ``pixel_values`` (it must be ~1e-7: resize and
  crop happen in uint8, only normalisation is float).

Run:  /work/refenv/venv/bin/python tools/reference/make_metrics_reference.py
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
import scipy
import skimage
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "metrics"
TOKENIZER_SRC = REPO / "tests" / "fixtures" / "tiny-sd" / "tokenizer"

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

PROMPTS = [
    "a red circle at the top left",
    "an astronaut in a white suit, portrait photo",
    # longer than 77 tokens: truncated to BOS + 75 tokens + EOS
    " ".join(["a very detailed city street with many people and cars and shops"] * 8),
]


def save_png(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode="RGB").save(path, optimize=False, compress_level=9)


def make_pairs() -> list[dict]:
    rng = np.random.default_rng(1234)
    astro = skimage.data.astronaut()  # 512x512x3 uint8, bundled with scikit-image
    # a 96x80 (w x h) natural-image crop, downsampled by PIL bicubic
    base = np.array(
        Image.fromarray(astro[40:360, 80:464]).resize((96, 80), Image.Resampling.BICUBIC)
    )
    noisy = np.clip(base.astype(np.float64) + rng.normal(0, 8, base.shape), 0, 255).round()
    blurred = skimage.filters.gaussian(base, sigma=1.0, channel_axis=2, preserve_range=True)
    shifted = np.clip(np.roll(base, 1, axis=1).astype(np.int32) + 10, 0, 255)
    rand = rng.integers(0, 256, size=(47, 33, 3), dtype=np.uint8)  # odd, non-square
    rand_noisy = np.clip(rand.astype(np.int32) + rng.integers(-20, 21, rand.shape), 0, 255)
    small = rng.integers(0, 256, size=(11, 13, 3), dtype=np.uint8)  # the smallest SSIM size
    small_b = np.clip(small.astype(np.int32) + rng.integers(-60, 61, small.shape), 0, 255)
    big = astro[100:360, 120:420]  # 300x260, downsampled by the 224 CLIP preprocessing
    big_b = np.clip(big.astype(np.int32) + rng.integers(-3, 4, big.shape), 0, 255)
    images = {
        "astro": base,
        "astro_noisy": noisy,
        "astro_blur": blurred.round(),
        "astro_shift": shifted,
        "rand": rand,
        "rand_noisy": rand_noisy,
        "small": small,
        "small_b": small_b,
        "big": big,
        "big_b": big_b,
    }
    for name, img in images.items():
        save_png(np.ascontiguousarray(img.astype(np.uint8)), OUT / "pairs" / f"{name}.png")
    pairs = [
        ("astro", "astro_noisy"),
        ("astro", "astro_blur"),
        ("astro", "astro_shift"),
        ("astro", "astro"),
        ("rand", "rand_noisy"),
        ("small", "small_b"),
        ("big", "big_b"),
    ]
    out = []
    for a, b in pairs:
        # read back from the PNGs, exactly what the Rust test reads
        x = np.array(Image.open(OUT / "pairs" / f"{a}.png").convert("RGB"))
        y = np.array(Image.open(OUT / "pairs" / f"{b}.png").convert("RGB"))
        psnr = peak_signal_noise_ratio(x, y, data_range=255) if a != b else float("inf")
        ssim = structural_similarity(
            x,
            y,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        )
        out.append(
            {
                "a": f"pairs/{a}.png",
                "b": f"pairs/{b}.png",
                "psnr": None if np.isinf(psnr) else float(psnr),
                "ssim": float(ssim),
            }
        )
    return out


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            elif name == "logit_scale":
                p.fill_(2.6592)
            else:
                p.copy_(0.2 * noise)


def make_tiny_clip() -> Path:
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=2014,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=2012,
        eos_token_id=2013,
        pad_token_id=2013,
        projection_dim=24,
    )
    vision = dict(
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=24,
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    randomize(model, 7)
    d = OUT / "tiny-clip"
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    for f in [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]:
        shutil.copy(TOKENIZER_SRC / f, d / f)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(d)
    return d


def clip_reference(d: Path) -> dict:
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(d).eval()
    tok = CLIPTokenizer.from_pretrained(d)
    proc = CLIPImageProcessorPil.from_pretrained(d)
    proc224 = CLIPImageProcessorPil()  # openai/clip-vit-base-patch32's settings
    images = ["astro", "rand", "big"]
    tensors = {}
    cases = []
    max_norm_diff = 0.0
    for i, name in enumerate(images):
        img = Image.open(OUT / "pairs" / f"{name}.png").convert("RGB")
        pv = proc(images=img, return_tensors="pt")["pixel_values"]
        tensors[f"pixel_values_{name}"] = pv.contiguous()
        # the 224 preprocessing: uint8 crop + float normalisation
        pv224 = proc224(images=img, return_tensors="np")["pixel_values"][0]  # (3, 224, 224)
        arr = np.array(img)
        h, w = arr.shape[:2]
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(224 * long / short)
        size = (224, new_long) if w <= h else (new_long, 224)  # (w, h)
        resized = np.array(img.resize(size, Image.Resampling.BICUBIC))
        top = (resized.shape[0] - 224) // 2
        left = (resized.shape[1] - 224) // 2
        crop = np.ascontiguousarray(resized[top : top + 224, left : left + 224])
        save_png(crop, OUT / "clip224" / f"{name}.png")
        x = crop.astype(np.float64) * (1 / 255)
        x = x.astype(np.float32)
        x = (x - np.array(OPENAI_CLIP_MEAN, np.float32)) / np.array(OPENAI_CLIP_STD, np.float32)
        max_norm_diff = max(max_norm_diff, float(np.abs(x.transpose(2, 0, 1) - pv224).max()))
        prompt = PROMPTS[i % len(PROMPTS)]
        ids = tok(prompt, truncation=True, max_length=77, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            img_emb = model.get_image_features(pixel_values=pv)
            txt_emb = model.get_text_features(input_ids=ids)
            if not isinstance(img_emb, torch.Tensor):  # transformers 5 may return an output object
                img_emb = img_emb.pooler_output
            if not isinstance(txt_emb, torch.Tensor):
                txt_emb = txt_emb.pooler_output
            out = model(input_ids=ids, pixel_values=pv)
        cos = torch.nn.functional.cosine_similarity(img_emb, txt_emb).item()
        tensors[f"image_embeds_{name}"] = img_emb.contiguous()
        tensors[f"text_embeds_{name}"] = txt_emb.contiguous()
        cases.append(
            {
                "image": f"pairs/{name}.png",
                "prompt": prompt,
                "input_ids": ids[0].tolist(),
                "cosine": cos,
                "logits_per_image": out.logits_per_image.item(),
            }
        )
    save_file(tensors, OUT / "clip_reference.safetensors")
    return {"cases": cases, "clip224_normalize_max_abs_diff": max_norm_diff}


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    pairs = make_pairs()
    (OUT / "expected.json").write_text(
        json.dumps({"versions": versions, "pairs": pairs}, indent=2) + "\n"
    )
    d = make_tiny_clip()
    ref = clip_reference(d)
    ref["versions"] = versions
    (OUT / "clip_reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    for p in pairs:
        print(f"{p['a']:>22} vs {p['b']:<24} PSNR {p['psnr']}  SSIM {p['ssim']:.6f}")
    for c in ref["cases"]:
        print(f"CLIP {c['image']}: cos {c['cosine']:.6f}, {len(c['input_ids'])} tokens")
    print("224 normalisation max |diff|:", ref["clip224_normalize_max_abs_diff"])
    print("wrote", OUT.relative_to(REPO), file=sys.stderr)


if __name__ == "__main__":
    main()
