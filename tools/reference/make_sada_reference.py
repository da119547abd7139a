#!/usr/bin/env python3
"""Reference runs of SADA's official code on the tiny pipeline.

Runs the official ``sada`` package (Ting-Justin-Jiang/sada-icml @bbbadce7: ``sada/patch.py``
``apply_patch``, whose ``patch_solver`` in ``sada/solver.py`` holds the step criterion) with
diffusers 0.42.1 on ``tests/fixtures/tiny-sd``, for Euler and DPM-Solver++ (the schedulers the
code supports for UNets; DDIM raises ``NotImplementedError``), and writes
``tests/fixtures/reference/sada.{safetensors,json}``: the initial latents ``init_<scheduler>``
(scaled by the scheduler's initial σ, as adiff's ``--init-latents`` take them), the final
latents of every case (``case{i}``), and per case the steps that called the UNet, the
criterion ``mean(momentum)`` of every step that computed it (steps 2 on) and the steps whose
decision skips the next one (the official ``skipping_path``). ``tests/new_method_references.rs``
runs the same cases through ``adiff generate --method sada:...`` and compares.

The package is imported from a checkout of the repository at bbbadce7 (it has no setup.py; its
requirements are not installed):

    git -C SADA_CHECKOUT checkout bbbadce7
    /work/refenv/venv/bin/python tools/reference/make_sada_reference.py --sada SADA_CHECKOUT

The script checks that the checkout's ``sada/*.py`` are the blobs of bbbadce7.

Settings: ``apply_patch``'s defaults (``acc_range=(10, 47)``, ``max_interval=4``,
``lagrange_term=0``) except ``max_downsample=0``, which turns the token-pruning half off (every
transformer block then runs unchanged), and, in the cases that say so, a shorter ``acc_range``
or ``max_interval`` so that a 20-step run skips, and the Lagrange settings of the authors'
``sd_demo.py`` scaled to a short run.

One change is needed to run the code on the CPU: the patched Euler step moves the scheduler's
betas with ``self.betas = self.betas.to('cuda')``; the betas are wrapped in an object whose
``to()`` returns itself (indexing reaches the CPU tensor unchanged). Nothing else is touched.
The script also checks that a run whose acceleration range is empty gives
``StableDiffusionPipeline``'s latents exactly (the patched UNet and transformer blocks compute
what diffusers 0.42.1's do).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_runs import GUIDANCE, NEGATIVE, OUT, PROMPT, SEED, pipeline  # noqa: E402

COMMIT = "bbbadce784ffb53b834fb356eaefe8024c29525d"
BLOBS = {
    "__init__.py": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "model.py": "eeecc96a6d8b0b5919b5403a8a503776753ebd52",
    "module.py": "57aecfb6220fbc96a41121ac68ab4e7bdca6a51c",
    "patch.py": "f8514c40cf9d5cff0f5554ec628f7eb39c4b9e66",
    "prune.py": "e0c7c9c3085719a9789974f2fc5a490056cea3f7",
    "solver.py": "994e1ae6a517b07917216a54304bd662cf1b18fb",
    "utils.py": "feb4d8160c437e0341b37095356f2dafaffe407c",
}

# apply_patch's defaults, under adiff's spec names (acc_start / acc_end are acc_range's ends).
DEFAULTS = dict(acc_start=10, acc_end=47, max_interval=4, lagrange_term=0, lagrange_int=0, lagrange_step=0)

# (scheduler, steps, settings overriding DEFAULTS)
CASES = [
    ("euler", 25, {}),
    ("dpm++", 25, {}),
    ("euler", 20, dict(acc_start=3)),
    ("dpm++", 20, dict(acc_start=3)),
    ("euler", 20, dict(acc_start=0, acc_end=15, max_interval=1)),
    ("dpm++", 20, dict(acc_start=3, acc_end=18, max_interval=1)),
    # sd_demo.py's Lagrange settings (term 4, int 4, step 24 of 50) scaled to a short run.
    ("euler", 20, dict(acc_start=3, acc_end=18, lagrange_term=3, lagrange_int=3, lagrange_step=9)),
    ("dpm++", 30, dict(acc_start=3, acc_end=27, lagrange_term=3, lagrange_int=4, lagrange_step=16)),
]


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class CpuBetas:
    """The scheduler's betas, for ``self.betas.to('cuda')`` in the patched Euler step."""

    def __init__(self, betas: torch.Tensor):
        self.betas = betas

    def to(self, *args, **kwargs):
        return self

    def __getitem__(self, index):
        return self.betas[index]


def run(patch, kind: str, steps: int, settings: dict | None, noise: torch.Tensor):
    """One run: (final latents, per-step UNet calls, the bus) — or the plain pipeline's
    latents when ``settings`` is None."""
    pipe = pipeline(kind)
    bus = None
    if settings is not None:
        lagrange = {}
        if settings["lagrange_term"]:
            lagrange = {k: settings[k] for k in ("lagrange_term", "lagrange_int", "lagrange_step")}
        patch.apply_patch(
            pipe,
            max_downsample=0,
            acc_range=(settings["acc_start"], settings["acc_end"]),
            max_interval=settings["max_interval"],
            **lagrange,
        )
        if kind == "euler":
            pipe.scheduler.betas = CpuBetas(pipe.scheduler.betas)
        bus = pipe.unet._cache_bus
    calls = []
    per_step = []
    hook = pipe.unet.conv_in.register_forward_hook(lambda m, a, o: calls.append(1))

    def on_step_end(p, i, t, kw):
        per_step.append(len(calls))
        return kw

    out = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=64,
        width=64,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        latents=noise.clone(),
        output_type="latent",
        callback_on_step_end=on_step_end,
    ).images
    hook.remove()
    computed = [b - a for a, b in zip([0] + per_step[:-1], per_step)]
    assert all(c in (0, 1) for c in computed), computed
    return out, [bool(c) for c in computed], bus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sada", type=Path, default=Path("/work/refenv/sada-icml"),
                    help="a checkout of Ting-Justin-Jiang/sada-icml at bbbadce7")
    args = ap.parse_args()
    for name, blob in BLOBS.items():
        got = git_blob(args.sada / "sada" / name)
        assert got == blob, f"sada/{name} is not bbbadce7's ({got})"
    sys.path.insert(0, str(args.sada))
    from sada import patch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    tensors = {}
    listed = []
    with torch.no_grad():
        for kind in ("euler", "dpm++"):
            plain, _, _ = run(patch, kind, 8, None, noise)
            never = {**DEFAULTS, "acc_start": 100, "acc_end": 100}
            patched, computed, _ = run(patch, kind, 8, never, noise)
            assert all(computed) and torch.equal(plain, patched), f"{kind}: the patched UNet differs"
        for i, (kind, steps, over) in enumerate(CASES):
            settings = {**DEFAULTS, **over}
            pipe = pipeline(kind)
            pipe.scheduler.set_timesteps(steps)
            stem = kind.replace("+", "p")
            tensors[f"init_{stem}"] = (noise * pipe.scheduler.init_noise_sigma).contiguous()
            out, computed, bus = run(patch, kind, steps, settings, noise)
            criterion = [None, None] + [float(m) for m in bus.rel_momentum_list]
            assert len(criterion) == steps
            skip_next = [i in bus.skipping_path for i in range(steps)]
            # The decision made at step i applies to step i + 1.
            assert computed == [True] + [not s for s in skip_next[:-1]], (computed, skip_next)
            tensors[f"case{i}"] = out.contiguous()
            mask = "".join("C" if c else "S" for c in computed)
            listed.append({
                "tensor": f"case{i}",
                "init": f"init_{stem}",
                "scheduler": kind,
                "steps": steps,
                **settings,
                "computed": mask,
                "skipping_path": list(bus.skipping_path),
                "criterion": [None if m is None or m != m else m for m in criterion],
            })
            print(f"case {i}: {kind} {steps} {over}: {mask} |x| max {out.abs().max():.4f}")
    save_file(tensors, str(OUT / "sada.safetensors"))
    meta = {
        "generator": "tools/reference/make_sada_reference.py",
        "sada": f"Ting-Justin-Jiang/sada-icml @{COMMIT[:8]}, sada.patch.apply_patch (max_downsample=0)",
        "workaround": "the patched Euler step's self.betas.to('cuda') returns the CPU betas",
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "guidance_scale": GUIDANCE,
        "criterion": "mean((x_{n+1} - x̂_{n+1}) * (f_n - 2 f_{n-1} + f_{n-2})) of step n (null before step 2; "
        "null where it is NaN: the last Euler step, where σ_{n+1} = 0)",
        "cases": listed,
    }
    (OUT / "sada.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
