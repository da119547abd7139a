#!/usr/bin/env python3
"""Reference latents of T-GATE's official pipeline on the tiny pipeline.

Runs PyPI ``tgate`` 1.0.0 (``tgate.TgateSDLoader`` → ``pipe.tgate(...)``, identical to
HaozheLiu-ST/T-GATE ``tgate/SD.py`` and ``tgate/tgate_utils.py``) with diffusers on
``tests/fixtures/tiny-sd`` for several (scheduler, steps, gate_step, sp_interval,
fi_interval, warm_up) cases and writes ``tests/fixtures/reference/tgate.safetensors``: the
initial latents ``init_<scheduler>`` (scaled by the scheduler's initial σ, as adiff's
``--init-latents`` take them) and the final latents of every case (``case{i}``), with the
cases in ``tgate.json``. ``tests/method_references.rs`` runs the same cases through
``adiff generate --method tgate:...`` and compares.

    python tools/reference/make_tgate_reference.py   # CPU, float32, a few seconds
"""

from __future__ import annotations

from tgate import TgateSDLoader
from tiny_runs import run_cases

# (scheduler, steps, gate_step, sp_interval, fi_interval, warm_up)
CASES = [
    ("ddim", 12, 6, 2, 1, 1),
    ("ddim", 12, 8, 3, 2, 2),
    ("ddim", 10, 4, 5, 1, 0),
    ("ddim", 10, 10, 5, 1, 2),
    ("euler", 12, 6, 2, 2, 1),
]


def run(pipe, case, call):
    settings = {k: case[k] for k in ("gate_step", "sp_interval", "fi_interval", "warm_up")}
    return TgateSDLoader(pipe).tgate(**call, **settings).images


def main() -> None:
    cases = [
        {"scheduler": s, "steps": n, "gate_step": g, "sp_interval": sp, "fi_interval": fi, "warm_up": w}
        for s, n, g, sp, fi, w in CASES
    ]
    run_cases("tgate", ("tgate", "tgate 1.0.0 (PyPI), TgateSDLoader"), cases, run)


if __name__ == "__main__":
    main()
