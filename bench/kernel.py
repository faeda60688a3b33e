"""The half of `python -m bench` that runs inside user-mode Linux (as PID 1's child, root).

    python -m tests.lab.uml -- python -m bench.kernel --out FILE [--reps N] [--only a,b]

Runs the kernel benchmarks one after the other in this single boot and rewrites FILE (on the
host's file system, which is this kernel's root) after each, so a crash or a time-out still
leaves the results gathered so far. A benchmark that fails is recorded as failed; the others run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, Callable

from . import calibrate
from .report import failed

KERNEL_BENCHMARKS = ("activation", "dualstack", "hotspots", "aliases", "failover")


def _runner(name: str) -> Callable[[int], dict[str, Any]]:
    """Import lazily: a broken benchmark module must not stop the others."""
    if name not in KERNEL_BENCHMARKS:
        raise ValueError(f"unknown kernel benchmark {name!r}")
    return importlib.import_module(f"{__package__}.{name}").run  # type: ignore[no-any-return]


def _write(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kernel")
    p.add_argument("--out", required=True, help="JSON file to write (host path)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default=",".join(KERNEL_BENCHMARKS))
    ns = p.parse_args(argv)
    if not os.path.exists("/proc/net/ip_vs") or os.geteuid() != 0:
        print("bench.kernel: run inside the lab kernel (python -m tests.lab.uml)", file=sys.stderr)
        return 2
    names = [n for n in ns.only.split(",") if n]
    data: dict[str, Any] = {
        "kernel": os.uname().release,
        "calibration_start": calibrate.measure(),
        "benchmarks": {},
    }
    status = 0
    for name in names:
        t0 = time.monotonic()
        print(f"[uml] {name} ...", flush=True)
        try:
            data["benchmarks"][name] = _runner(name)(ns.reps)
        except Exception as exc:
            traceback.print_exc()
            data["benchmarks"][name] = failed(name, f"{type(exc).__name__}: {exc}")
            status = 1
        print(f"[uml] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        _write(ns.out, data)
    data["calibration_end"] = calibrate.measure()
    _write(ns.out, data)
    return status


if __name__ == "__main__":
    sys.exit(main())
