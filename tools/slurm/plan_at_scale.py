#!/usr/bin/env python3
"""The README's "plan at full scale" table, from a measured per-call cost.

    adiff overhead --size 512 --calls 2 --cpu --json call.json
    python3 tools/slurm/plan_at_scale.py call.json [--label "2-core AMD EPYC VM, CPU f32"]
    python3 tools/slurm/plan_at_scale.py --call-ms 6353 --label "…"   # a cost measured before

The plan is the one `adiff bench` makes for COCO-2017's 5 000 captions × 1 seed × three
schedulers (ddim, euler, dpm++) × seven settings at 50 steps: the baseline, adaptive,
adaptive+forecast, ucache, deepcache, tgate (each planned at 50 steps, the most they call)
and steps:n=25. Its work is counted as the shards count it (planned steps; the methods'
savings are not known before they run, so the calls are an upper bound). Each device runs
whole prompt × seed × scheduler groups; a part has ceil(groups / N) of them.
"""

import argparse
import json
import math

SETTINGS = [
    ("baseline", 50),
    ("adaptive", 50),
    ("adaptive+forecast", 50),
    ("ucache", 50),
    ("deepcache", 50),
    ("tgate", 50),
    ("steps:n=25", 25),
]


def hours(h):
    if h >= 48:
        return f"{h / 24:,.1f} d"
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:,.0f} min"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "overhead_json", nargs="?", help="the JSON of `adiff overhead --size 512 --json FILE`"
    )
    ap.add_argument("--call-ms", type=float, help="a measured 512² CFG call, ms, instead of a JSON")
    ap.add_argument("--label", default=None, help="the machine, for the table")
    ap.add_argument("--prompts", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--schedulers", type=int, default=3)
    ap.add_argument("--devices", default="8,32,128")
    a = ap.parse_args()
    if a.call_ms is not None:
        m = {"unet_call_ms": a.call_ms, "device": "?"}
    elif a.overhead_json:
        with open(a.overhead_json) as f:
            m = json.load(f)
        if m.get("image_size") != 512:
            raise SystemExit(f"error: {a.overhead_json} timed {m.get('image_size')}², not 512²")
    else:
        raise SystemExit("error: give the JSON of adiff overhead --size 512 --json FILE, or --call-ms MS")
    call_ms = m["unet_call_ms"]
    groups = a.prompts * a.seeds * a.schedulers
    per_group = sum(s for _, s in SETTINGS)
    calls = groups * per_group
    device_h = calls * call_ms / 3.6e6
    devices = [int(n) for n in a.devices.split(",")]
    label = a.label or m.get("device", "?")
    print(
        f"plan: {a.prompts} prompts × {a.seeds} seed × {a.schedulers} schedulers = {groups:,} groups "
        f"× {len(SETTINGS)} settings = {groups * len(SETTINGS):,} runs; {per_group} planned calls per group"
    )
    head = " | ".join(f"wall on {n}" for n in devices)
    print(f"| per-call cost (SD 1.5, 512², CFG batch 2) | planned UNet calls | device-hours | {head} |")
    print("|---|---:|---:|" + "---:|" * len(devices))
    walls = []
    for n in devices:
        part_groups = math.ceil(groups / n)
        walls.append(hours(part_groups * per_group * call_ms / 3.6e6))
    print(
        f"| {label}: {call_ms:,.0f} ms | {calls:,} | {device_h:,.0f} | " + " | ".join(walls) + " |"
    )


if __name__ == "__main__":
    main()
