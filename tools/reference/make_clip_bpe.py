#!/usr/bin/env python3
"""The CLIP BPE vocabulary adiff ships, and token ids to pin its tokenizer to.

Reads the vocabulary file that OpenAI CLIP published (``bpe_simple_vocab_16e6.txt.gz``,
MIT licence), as carried by the ``open_clip_torch`` wheel on PyPI (3.3.0), and writes:

- ``assets/tokenizers/clip-bpe-merges.txt``: the 48 894 merges CLIP's tokenizer uses
  (lines 1..48 894 of the file, as ``open_clip.tokenizer.SimpleTokenizer`` slices them).
  With the 256 byte symbols, their ``</w>`` forms and the two special tokens they give
  the 49 408-token vocabulary of every Stable Diffusion text encoder (SD 1.x's CLIP
  ViT-L/14, SD 2.x's and SDXL's OpenCLIP ViT-H/14 and ViT-bigG/14).
- ``tests/fixtures/reference/clip_tokens.json``: prompts and the ids open_clip's own
  ``SimpleTokenizer.encode`` gives them; ``model::tokenizer`` tests compare.

    pip download open_clip_torch==3.3.0 --no-deps -d /tmp/oc && unzip -o /tmp/oc/*.whl \
        'open_clip/*' -d /tmp/oc
    pip install ftfy regex
    python tools/reference/make_clip_bpe.py /tmp/oc/open_clip
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A red circle at the top left, on a BLUE background",
    "portrait of a cat wearing sunglasses, 4k, highly detailed, trending on artstation",
    "café crème brûlée naïve façade",
    "don't stop: it's 3.14159 o'clock & we're 100% sure!!!",
    "東京の夜景、ネオンサイン",
    "emoji 🐱‍👤 and ünïcödé",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "  lots   of\twhitespace\n here ",
    "jekyll and hyde, <html> tags & symbols #hashtag @user",
]


def main() -> None:
    pkg = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/oc/open_clip")
    bpe = pkg / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    out = REPO / "assets" / "tokenizers" / "clip-bpe-merges.txt"
    out.write_text("\n".join(merges) + "\n", encoding="utf-8")

    spec = importlib.util.spec_from_file_location("oc_tokenizer", pkg / "tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tok = mod.SimpleTokenizer(bpe_path=str(bpe))
    cases = [{"prompt": p, "ids": tok.encode(p)} for p in PROMPTS]
    ref = REPO / "tests" / "fixtures" / "reference" / "clip_tokens.json"
    ref.write_text(
        json.dumps(
            {
                "source": "open_clip_torch 3.3.0 open_clip/tokenizer.py SimpleTokenizer.encode",
                "vocab_size": tok.vocab_size,
                "sot": tok.sot_token_id,
                "eot": tok.eot_token_id,
                "cases": cases,
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"{out}: {len(merges)} merges; {ref}: {len(cases)} prompts, vocab {tok.vocab_size}")


if __name__ == "__main__":
    main()
