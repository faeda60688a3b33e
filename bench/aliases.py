"""Benchmark (inside UML): the VIPs of a /24 on lo at boot, one process against one per address
(each method run in a fresh network namespace, forked from a thread inside it)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.box import addresses
from lab.lan import unique
from lab.netns import fresh_netns, in_netns
from lab.netscripts import Scripts

from .report import Table, median, repeat, result, spread, times

VIPS = [f"203.0.113.{i}" for i in range(256)]
ROWS_VS = ("vip", "ifup")  # the rows compared with the loop
ROWS = {  # key: (label, processes)
    "loop": ("baseline: shell loop, one `ip address add` each", "256 + sh"),
    "vip": ("cgp-ipvs-vip -f FILE up", "1"),
    "ifup": ("ifup-lo (stub ifup-eth) -> cgp-ipvs-vip up", "~6 (bash, stub, ip, python)"),
    "batch": ("reference: ip -batch (one iproute2 process)", "1"),
    "check": ("reference: cgp-ipvs-vip check (start + parse only)", "1"),
}


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Run argv once in a fresh namespace; seconds from fork to exit."""
    ns = unique("als")
    with fresh_netns(ns), in_netns(ns):
        t0 = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        spent = time.monotonic() - t0
        count = len(set(addresses("lo")) & {f"{ip}/32" for ip in VIPS})
    if proc.returncode != 0 or (argv[-1] != "check" and count != len(VIPS)):
        raise RuntimeError(f"{argv} left {count} VIPs on lo: {proc.stderr[-300:]}")
    return spent


def run(reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as base:
        s = Scripts(Path(base))
        s.file.write_text("203.0.113.0/24\n")
        batch = Path(base, "batch")
        batch.write_text("".join(f"address add {ip}/32 dev lo\n" for ip in VIPS))
        loop = "i=0; while [ $i -lt 256 ]; do ip address add 203.0.113.$i/32 dev lo || exit 1; "
        argvs = {
            "loop": ["sh", "-c", loop + "i=$((i+1)); done"],
            "vip": [sys.executable, str(s.launcher), "-f", str(s.file), "up"],
            "ifup": [str(s.dir / "ifup-lo"), "ifcfg-lo", "boot"],
            "batch": ["ip", "-batch", str(batch)],
            "check": [sys.executable, str(s.launcher), "-f", str(s.file), "check"],
        }
        samples = repeat(
            reps,
            {key: lambda a=argv: timed(a, s.env()) for key, argv in argvs.items()},
            lambda key, t: f"aliases {key}: {t:.2f} s",
        )
    med = {k: median(v) for k, v in samples.items()}
    table = Table(
        "Boot-time aliases: a /24 (256 VIPs) on lo (inside user-mode Linux)",
        ["method", "processes", "seconds", "min-max", "speed-up vs loop"],
    )
    for key, (label, procs) in ROWS.items():
        speed = {"loop": "1x"}.get(key, times(med["loop"], med[key]) if key in ROWS_VS else "-")
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
