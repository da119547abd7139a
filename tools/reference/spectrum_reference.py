#!/usr/bin/env python3
"""Spectrum (stable-diffusion.cpp's ``SpectrumState``) re-derived in NumPy, and its reference runs.

This is an independent statement of what adiff's ``spectrum`` method has to do, written from the
C++ source (leejet/stable-diffusion.cpp @97d29908, ``src/runtime/spectrum.hpp`` and its hook in
``src/stable-diffusion.cpp``'s ``denoise`` lambda), not from the Rust port. stable-diffusion.cpp
has no Python binding and cannot load diffusers folders, so its code does not run here.

Where Spectrum hooks in: once per model evaluation (one per step for Euler, DDIM and
DPM-Solver++ 2M), before the model call. When ``should_predict()`` holds, the step's
*denoised* output D (the x0 estimate of the guided prediction, ``guided·c_out + x·c_skip``) is
forecast and no condition is run; otherwise both conditions run, guidance is applied, D is
computed and ``update(D)`` stores it. So the forecast works on the guided D, not per
condition.

The state, with ``cnt`` counting every step (computed or predicted):

* ``τ(cnt) = 2·cnt/50 − 1`` (the 50 is fixed in the C++, whatever the step count);
* predict iff ``cnt ≥ warmup``, ``cnt < ⌊stop·N⌋`` (when that is > 0), at least two stored
  outputs, and ``(num_cached + 1) % max(1, ⌊ws⌋) ≠ 0``;
* ``update``: store (D, τ(cnt)), keep the last ``K = max(m + 1, 6)``, ``ws += flex`` when
  ``cnt ≥ warmup``, ``num_cached = 0``, ``cnt += 1``;
* ``predict``: Chebyshev design ``X[k][j] = T_j(τ_k)`` (j ≤ m), ridge system
  ``(XᵀX + λI) v = x*`` with ``x*_j = T_j(τ(cnt))``, Cholesky (when a pivot is ≤ 0, add
  ``1e-4·trace/(m+1)`` to the diagonal and factor again), weights ``X·v``,
  ``D_cheb = Σ_k weight_k D_k``, ``D_taylor = D_last + 0.5·(D_last − D_prev)``,
  ``D = (1 − w)·D_taylor + w·D_cheb``; ``num_cached += 1``, ``cnt += 1``.

Everything is float32 in the C++; the small fit below is done in float32 scalars in the same
order of operations.

Two fixtures, written to ``tests/fixtures/reference/spectrum.{json,safetensors}``:

1. ``synthetic``: the state driven by a synthetic sequence of denoised outputs
   ``D(cnt)`` (a smooth function of τ plus a per-step wiggle), for several settings. For each
   case: the per-step decisions, the fit's weights and whether the Cholesky fallback ran at each
   predicted step, and every forecast D.
2. ``runs``: the tiny pipeline (``tests/fixtures/tiny-sd``) sampled with diffusers' schedulers in
   a hand-written loop (the same loop as ``make_reference.py``'s, checked here to give
   ``StableDiffusionPipeline``'s latents exactly when Spectrum never predicts), Spectrum hooked
   on the guided D: the decisions and the final latents. ``tests/new_method_references.rs``
   runs the same cases through ``adiff generate --method spectrum:...``.

    /work/refenv/venv/bin/python tools/reference/spectrum_reference.py   # CPU, a few seconds
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

f32 = np.float32

DEFAULTS = dict(w=0.40, m=3, lam=1.0, window=2, flex=0.5, warmup=4, stop=0.9)


class Spectrum:
    """stable-diffusion.cpp's SpectrumState, in NumPy float32."""

    def __init__(self, total_steps: int, w, m, lam, window, flex, warmup, stop):
        self.w, self.m, self.lam = f32(w), int(m), f32(lam)
        self.flex, self.warmup = f32(flex), int(warmup)
        self.cnt = 0
        self.num_cached = 0
        self.curr_ws = f32(window)
        self.K = max(self.m + 1, 6)
        # (int)(cfg.stop_percent * (float)total_steps), in float32
        self.stop_step = int(f32(f32(stop) * f32(total_steps)))
        self.H: list[np.ndarray] = []
        self.T: list[np.float32] = []
        self.last_fit: dict | None = None

    @staticmethod
    def tau(cnt: int) -> np.float32:
        return f32(f32(f32(cnt) / f32(50.0)) * f32(2.0)) - f32(1.0)

    def should_predict(self) -> bool:
        if self.cnt < self.warmup:
            return False
        if self.stop_step > 0 and self.cnt >= self.stop_step:
            return False
        if len(self.H) < 2:
            return False
        ws = max(1, int(math.floor(self.curr_ws)))
        return (self.num_cached + 1) % ws != 0

    def update(self, denoised: np.ndarray) -> None:
        self.H.append(denoised.astype(f32).copy())
        self.T.append(self.tau(self.cnt))
        while len(self.H) > self.K:
            self.H.pop(0)
            self.T.pop(0)
        if self.cnt >= self.warmup:
            self.curr_ws = f32(self.curr_ws + self.flex)
        self.num_cached = 0
        self.cnt += 1

    @staticmethod
    def chebyshev(tau: np.float32, m1: int) -> list[np.float32]:
        row = [f32(1.0)]
        if m1 > 1:
            row.append(f32(tau))
        for j in range(2, m1):
            row.append(f32(f32(f32(2.0) * tau) * row[j - 1]) - row[j - 2])
        return row

    @staticmethod
    def cholesky(a: list[list[np.float32]], n: int):
        low = [[f32(0.0)] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1):
                s = f32(0.0)
                for k in range(j):
                    s = f32(s + f32(low[i][k] * low[j][k]))
                if i == j:
                    diag = f32(a[i][i] - s)
                    if diag <= 0:
                        return None
                    low[i][j] = f32(np.sqrt(diag))
                else:
                    low[i][j] = f32(f32(a[i][j] - s) / low[j][j])
        return low

    @staticmethod
    def solve(low, b, n: int) -> list[np.float32]:
        y = [f32(0.0)] * n
        for i in range(n):
            s = f32(0.0)
            for j in range(i):
                s = f32(s + f32(low[i][j] * y[j]))
            y[i] = f32(f32(b[i] - s) / low[i][i])
        x = [f32(0.0)] * n
        for i in reversed(range(n)):
            s = f32(0.0)
            for j in range(i + 1, n):
                s = f32(s + f32(low[j][i] * x[j]))
            x[i] = f32(f32(y[i] - s) / low[i][i])
        return x

    def predict(self) -> np.ndarray:
        k_curr, m1 = len(self.H), self.m + 1
        x = [self.chebyshev(t, m1) for t in self.T]
        x_star = self.chebyshev(self.tau(self.cnt), m1)
        xtx = [[f32(0.0)] * m1 for _ in range(m1)]
        for i in range(m1):
            for j in range(m1):
                s = f32(0.0)
                for k in range(k_curr):
                    s = f32(s + f32(x[k][i] * x[k][j]))
                xtx[i][j] = f32(s + (self.lam if i == j else f32(0.0)))
        low = self.cholesky(xtx, m1)
        fallback = low is None
        if fallback:
            trace = f32(0.0)
            for i in range(m1):
                trace = f32(trace + xtx[i][i])
            for i in range(m1):
                xtx[i][i] = f32(xtx[i][i] + f32(f32(f32(1e-4) * trace) / f32(m1)))
            low = self.cholesky(xtx, m1)
            assert low is not None, "the jittered system must factor"
        v = self.solve(low, x_star, m1)
        weights = []
        for k in range(k_curr):
            s = f32(0.0)
            for j in range(m1):
                s = f32(s + f32(x[k][j] * v[j]))
            weights.append(s)
        cheb = np.zeros_like(self.H[0])
        for k in range(k_curr):
            cheb = (cheb + f32(weights[k]) * self.H[k]).astype(f32)
        last, prev = self.H[-1], self.H[-2]
        taylor = (last + f32(0.5) * (last - prev)).astype(f32)
        out = ((f32(1.0) - self.w) * taylor + self.w * cheb).astype(f32)
        self.last_fit = {"weights": [float(w) for w in weights], "fallback": fallback, "taus": [float(t) for t in self.T]}
        self.num_cached += 1
        self.cnt += 1
        return out


# ------------------------------------------------------------------------------------------
# 1. Synthetic sequences
# ------------------------------------------------------------------------------------------

SHAPE = (1, 4, 4, 4)

# (name, steps, settings overriding DEFAULTS)
SYNTHETIC = [
    ("defaults", 20, {}),
    ("wide", 30, dict(w=0.8, m=4, lam=0.5, window=3, flex=0.25, warmup=3, stop=0.8)),
    ("linear", 16, dict(w=1.0, m=1, lam=0.1, window=2, flex=1.0, warmup=2, stop=1.0)),
    ("taylor", 16, dict(w=0.0, m=2, lam=2.0, window=4, flex=0.0, warmup=5, stop=0.75)),
    # λ = 0 with more coefficients than stored outputs: XᵀX is singular at the first forecasts.
    ("singular", 14, dict(w=0.6, m=5, lam=0.0, window=2, flex=0.5, warmup=2, stop=0.9)),
]


def synthetic_denoised(cnt: int, base: np.ndarray) -> np.ndarray:
    """A smooth trajectory in τ with a small per-step wiggle, as a denoised output would be."""
    tau = float(Spectrum.tau(cnt))
    a, b, c = base
    wiggle = 0.05 * math.sin(3.0 * cnt + 0.5)
    return (a + b * tau + c * (tau * tau - 0.3 * tau**3) + wiggle).astype(f32)


def run_synthetic(steps: int, settings: dict, base) -> dict:
    st = Spectrum(steps, **settings)
    decisions, outputs, fits = [], [], []
    for i in range(steps):
        if st.should_predict():
            d = st.predict()
            decisions.append("P")
            fits.append({"step": i, **st.last_fit})
        else:
            d = synthetic_denoised(st.cnt, base)
            st.update(d)
            decisions.append("C")
        outputs.append(d)
    return {"decisions": "".join(decisions), "fits": fits, "outputs": np.stack(outputs)}


# ------------------------------------------------------------------------------------------
# 2. The tiny pipeline
# ------------------------------------------------------------------------------------------

# (scheduler, steps, settings overriding DEFAULTS)
RUNS = [
    ("euler", 20, {}),
    ("dpm++", 20, {}),
    ("ddim", 20, {}),
    ("euler", 25, dict(w=0.7, m=2, lam=0.5, window=3, flex=0.25, warmup=3, stop=0.8)),
    ("dpm++", 16, dict(w=0.2, m=4, lam=2.0, window=2, flex=1.0, warmup=2, stop=1.0)),
]


def x0_of_eps(kind: str, sched, i: int, x, eps):
    """The scheduler's x0 estimate of a guided ε at step i (stable-diffusion.cpp's D)."""
    import torch

    if kind == "euler":
        return x - sched.sigmas[i] * eps
    if kind == "dpm++":
        sigma = sched.sigmas[i]
        alpha = 1.0 / torch.sqrt(sigma**2 + 1.0)
        return (x - sigma * alpha * eps) / alpha
    t = int(sched.timesteps[i])
    a = sched.alphas_cumprod[t]
    return (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)


def eps_of_x0(kind: str, sched, i: int, x, x0):
    import torch

    if kind == "euler":
        return (x - x0) / sched.sigmas[i]
    if kind == "dpm++":
        sigma = sched.sigmas[i]
        alpha = 1.0 / torch.sqrt(sigma**2 + 1.0)
        return (x - alpha * x0) / (sigma * alpha)
    t = int(sched.timesteps[i])
    a = sched.alphas_cumprod[t]
    return (x - torch.sqrt(a) * x0) / torch.sqrt(1 - a)


def run_pipeline(kind: str, steps: int, settings: dict | None, noise):
    """The tiny pipeline's sampling loop with Spectrum on the guided D (None: no Spectrum)."""
    import torch

    from tiny_runs import GUIDANCE, NEGATIVE, PROMPT, pipeline

    pipe = pipeline(kind)
    sched = pipe.scheduler
    cond, uncond = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, NEGATIVE)
    emb = torch.cat([uncond, cond])
    sched.set_timesteps(steps)
    x = noise.clone() * sched.init_noise_sigma
    init = x.clone()
    st = Spectrum(steps, **settings) if settings is not None else None
    decisions = []
    for i, t in enumerate(sched.timesteps):
        if st is not None and st.should_predict():
            d = torch.from_numpy(st.predict())
            eps = eps_of_x0(kind, sched, i, x, d)
            decisions.append("P")
        else:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            raw = pipe.unet(inp, t, encoder_hidden_states=emb, return_dict=False)[0]
            u, c = raw.chunk(2)
            eps = u + GUIDANCE * (c - u)
            if st is not None:
                st.update(x0_of_eps(kind, sched, i, x, eps).numpy())
            decisions.append("C")
        x = sched.step(eps, t, x, return_dict=False)[0]
    return init, x, "".join(decisions)


def tiny_runs(out: dict, tensors: dict) -> None:
    import torch

    from tiny_runs import GUIDANCE, NEGATIVE, PROMPT, SEED, pipeline

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        # The hand-written loop is the pipeline's: without Spectrum it gives the same latents.
        for kind in ("euler", "dpm++", "ddim"):
            _, ours, _ = run_pipeline(kind, 6, None, noise)
            pipe = pipeline(kind)
            want = pipe(
                prompt=PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=6,
                guidance_scale=GUIDANCE, latents=noise.clone(), output_type="latent",
            ).images
            diff = (ours - want).abs().max().item()
            assert diff == 0.0, f"{kind}: the loop differs from the pipeline by {diff}"
        cases = []
        for n, (kind, steps, over) in enumerate(RUNS):
            settings = {**DEFAULTS, **over}
            init, final, decisions = run_pipeline(kind, steps, settings, noise)
            stem = kind.replace("+", "p")
            tensors[f"run_init_{stem}"] = init.contiguous()
            tensors[f"run{n}"] = final.contiguous()
            cases.append({
                "tensor": f"run{n}", "init": f"run_init_{stem}", "scheduler": kind, "steps": steps,
                "settings": settings, "decisions": decisions,
            })
            print(f"run {n}: {kind} {steps} {decisions} |x| max {final.abs().max():.4f}")
    out["prompt"], out["negative_prompt"], out["guidance_scale"] = PROMPT, NEGATIVE, GUIDANCE
    out["runs"] = cases
    out["torch"] = torch.__version__
    out["diffusers"] = __import__("diffusers").__version__


def main() -> None:
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    tensors: dict = {}
    rng = np.random.default_rng(26)
    base = rng.standard_normal((3, *SHAPE)).astype(f32)
    synthetic = []
    for name, steps, over in SYNTHETIC:
        settings = {**DEFAULTS, **over}
        res = run_synthetic(steps, settings, base)
        tensors[f"syn_{name}"] = res["outputs"]
        synthetic.append({
            "name": name, "steps": steps, "settings": settings, "decisions": res["decisions"],
            "tensor": f"syn_{name}", "fits": res["fits"],
        })
        fb = sum(f["fallback"] for f in res["fits"])
        print(f"synthetic {name}: {res['decisions']} ({fb} fallbacks)")
    tensors["syn_base"] = base
    out = {
        "generator": "tools/reference/spectrum_reference.py",
        "spectrum": "NumPy re-derivation of leejet/stable-diffusion.cpp @97d29908 src/runtime/spectrum.hpp",
        "numpy": np.__version__,
        "synthetic_shape": list(SHAPE),
        "synthetic_formula": "D(cnt) = a + b·τ + c·(τ² − 0.3·τ³) + 0.05·sin(3·cnt + 0.5), (a, b, c) = syn_base",
        "synthetic": synthetic,
    }
    if "--synthetic-only" not in sys.argv:
        tiny_runs(out, tensors)
    ref = repo / "tests" / "fixtures" / "reference"
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
               for k, v in tensors.items()}, str(ref / "spectrum.safetensors"))
    (ref / "spectrum.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
