"""Benchmark (inside UML): the VIPs of a /24 on lo at boot, one process against one per address
(each way run in a fresh network namespace: lab.netscripts)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lab.netscripts import Scripts

from .report import Table, median, repeat, result, spread, times

ROWS = {  # way: (label, processes); the loop is the baseline of vip and ifup
    "loop": ("baseline: shell loop, one `ip address add` each", "256 + sh"),
    "vip": ("cgp-ipvs-vip -f FILE up", "1"),
    "ifup": ("ifup-lo (stub ifup-eth) -> cgp-ipvs-vip up", "~6 (bash, stub, ip, python)"),
    "batch": ("reference: ip -batch (one iproute2 process)", "1"),
    "check": ("reference: cgp-ipvs-vip check (start + parse only)", "1"),
}


def run(reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as base:
        s = Scripts(Path(base))
        cases = {key: lambda a=argv: s.timed(a) for key, argv in s.ways().items()}
        samples = repeat(reps, cases, lambda key, t: f"aliases {key}: {t:.2f} s")
    med = {k: median(v) for k, v in samples.items()}
    table = Table(
        "Boot-time aliases: a /24 (256 VIPs) on lo (inside user-mode Linux)",
        ["method", "processes", "seconds", "min-max", "speed-up vs loop"],
    )
    for key, (label, procs) in ROWS.items():
        speed = times(med["loop"], med[key]) if key in ("loop", "vip", "ifup") else "-"
        table.add(label, procs, f"{med[key]:.2f}", spread(samples[key], 1, 2), speed)
    table.notes += [
        f"Median of {reps} runs, each in a fresh network namespace; every method but `check` "
        "must leave exactly the 256 addresses on lo (checked).",
        f"cgp-ipvs-vip's time is mostly Python start-up and imports (`check`, {med['check']:.2f} "
        "s); applying the /24 in one netlink batch adds "
        f"{max(0.0, med['vip'] - med['check']):.2f} s. The loop pays a fork+exec per address, "
        "Python its start-up once (The machine).",
    ]
    return result("aliases", [table], samples_s=samples)
