#!/usr/bin/env python3
"""Optional cross-check of tests/fixtures/reference/tokens.json with transformers 4.x, which still ships
the pure-Python ("slow") CLIPTokenizer that transformers 5 removed.  Needs no torch:

    python -m venv /tmp/tok4 && /tmp/tok4/bin/pip install "transformers==4.57.6" ftfy
    /tmp/tok4/bin/python tools/reference/check_slow_tokenizer.py

Compares, for every prompt, the slow tokenizer built from vocab.json + merges.txt, the fast tokenizer
converted from it (from_slow=True), and the committed tokenizer.json, against the recorded ids.
"""

import json
import sys
from pathlib import Path

import transformers
from transformers import CLIPTokenizer, CLIPTokenizerFast

root = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
tok_dir = root / "tiny-sd" / "tokenizer"
records = json.loads((root / "reference" / "tokens.json").read_text(encoding="utf-8"))

slow = CLIPTokenizer(vocab_file=str(tok_dir / "vocab.json"), merges_file=str(tok_dir / "merges.txt"), model_max_length=77)
if slow.is_fast:
    sys.exit(f"transformers {transformers.__version__} has no slow CLIPTokenizer; use transformers 4.x")
converted = CLIPTokenizerFast.from_pretrained(str(tok_dir), from_slow=True)
from_file = CLIPTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
assert slow.pad_token_id == records["pad_id"] and slow.bos_token_id == records["bos_id"]
assert slow.eos_token_id == records["eos_id"] and len(slow) == records["vocab_size"]

bad = 0
for r in records["prompts"]:
    kw = dict(padding="max_length", truncation=True, max_length=records["max_length"])
    ids = [t(r["text"], **kw).input_ids for t in (slow, converted, from_file)]
    ok = all(x == r["input_ids"] for x in ids) and len(slow(r["text"]).input_ids) == r["num_tokens_untruncated"]
    bad += not ok
    print("ok  " if ok else "BAD ", repr(r["text"][:50]))
print(f"transformers {transformers.__version__}: {len(records['prompts']) - bad}/{len(records['prompts'])} prompts agree")
sys.exit(1 if bad else 0)
