#!/usr/bin/env python3
"""Reference latents of DeepCache's official helper on the tiny pipeline.

Runs PyPI ``DeepCache`` 0.1.1 (``DeepCache.DeepCacheSDHelper``, identical to
horseee/DeepCache ``DeepCache/extension/deepcache.py``) with diffusers 0.42.1 on
``tests/fixtures/tiny-sd`` for several (scheduler, steps, cache_interval, cache_branch_id)
cases and writes ``tests/fixtures/reference/deepcache.safetensors``: the initial latents
``init`` (already scaled by the scheduler's initial σ) and the final latents of every case
(``case{i}``), with the cases in ``deepcache.json``. ``tests/method_references.rs`` runs
the same cases through ``adiff generate --method deepcache:...`` and compares.

The pipeline is reloaded for every case: the helper's ``disable()`` does not unwrap the
whole-block wrappers it installed, so a second ``enable()`` on the same pipeline would wrap
them twice.

    python tools/reference/make_deepcache_reference.py   # CPU, float32, a few seconds
"""

from __future__ import annotations

from DeepCache import DeepCacheSDHelper
from tiny_runs import run_cases

# (scheduler, steps, cache_interval, cache_branch_id): every branch of the tiny UNet's two
# blocks (ids 0–5), intervals 2–4, both schedulers.
CASES = [
    ("ddim", 10, 3, 0),
    ("ddim", 10, 2, 1),
    ("ddim", 12, 3, 2),
    ("ddim", 10, 2, 3),
    ("ddim", 10, 4, 4),
    ("ddim", 10, 3, 5),
    ("euler", 10, 3, 0),
    ("euler", 10, 2, 2),
]


def run(pipe, case, call):
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=case["cache_interval"], cache_branch_id=case["cache_branch_id"])
    helper.enable()
    out = pipe(**call).images
    helper.disable()
    return out


def main() -> None:
    cases = [
        {"scheduler": s, "steps": n, "cache_interval": i, "cache_branch_id": b} for s, n, i, b in CASES
    ]
    run_cases("deepcache", ("deepcache", "DeepCache 0.1.1 (PyPI), DeepCacheSDHelper"), cases, run)


if __name__ == "__main__":
    main()
