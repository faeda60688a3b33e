"""`python -m bench` (`make bench`): run every benchmark, print the tables, write the results.

    python -m bench [--reps N] [--only activation,dualstack,hotspots,aliases,failover,footprint]
                    [--idle SECONDS] [--lines N] [--no-pin]

Order, chosen so that nothing CPU-bound shares the two cores with anything else: the host's
parts first (the -m ACTIVATE of the hotspots, the throughput runs); then the idle footprint
helper is started in a thread and the one user-mode Linux boot, pinned to one CPU, runs every
kernel benchmark meanwhile (an idle process's CPU time and memory are its own); then the tables,
a summary of the targets, bench/results/latest.json and bench/results/latest.md. Exit status 1
if a benchmark could not run (a missed target is a result, not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from tests.lab.uml import (
    REPO_ROOT,
    LabSetupError,
    find_kernel,
    kernel_version,
    pinned,
    run_uml,
    uml_cpu,
)

from . import calibrate, footprint, hotspots
from .kernel import KERNEL_BENCHMARKS
from .report import Table, Target, failed

ALL = (*KERNEL_BENCHMARKS, "footprint")
ORDER = ("activation", "dualstack", "hotspots", "aliases", "failover", "footprint")
RESULTS = REPO_ROOT / "bench" / "results"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=str(REPO_ROOT), capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return out.stdout.strip()


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def meta(args: argparse.Namespace) -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--", "cgp_ipvs_helper")
    try:
        uml = kernel_version(find_kernel())
    except LabSetupError as exc:
        uml = f"unavailable: {exc}"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "helper_code_uncommitted_changes": bool(dirty),
        "python": platform.python_version(),
        "host_kernel": platform.release(),
        "uml_kernel": uml,
        "cpu": _cpu(),
        "cpus": os.cpu_count(),
        "reps": args.reps,
    }


def run_kernel(names: Sequence[str], reps: int, timeout: float, cpu: int | None) -> dict[str, Any]:
    """One UML boot for every kernel benchmark; its JSON (partial if the boot failed)."""
    fd, path = tempfile.mkstemp(prefix="bench-kernel-", suffix=".json")
    os.close(fd)
    try:
        argv = ["python", "-m", "bench.kernel", "--out", path, "--reps", str(reps)]
        argv += ["--only", ",".join(names)]
        with pinned(cpu):
            status = run_uml(argv, timeout=timeout, output=sys.stdout.buffer)
        try:
            with open(path) as f:
                data: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            data = {"benchmarks": {}}
        data["status"] = status.status
        data["boot_s"] = status.boot_s
        data["total_s"] = status.total_s
        return data
    except LabSetupError as exc:
        return {"benchmarks": {}, "error": str(exc)}
    finally:
        os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument("--idle", type=float, default=60.0, help="idle footprint window, seconds")
    p.add_argument("--lines", type=int, default=20000, help="pipelined lines per throughput run")
    p.add_argument("--uml-timeout", type=float, default=1200.0, help="kill the boot after this")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="let the host schedule user-mode Linux on any CPU (slower and noisier on a VM)",
    )
    args = p.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = set(only) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    t_start = time.monotonic()
    info = meta(args)
    print(f"cgp-ipvs-helper benchmarks, {info['date']}, commit {info['commit']}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    host_cal = calibrate.measure()

    idle: footprint.Idle | None = None
    rates: dict[str, list[float]] = {}
    host_hot: dict[str, Any] | None = None
    host_profile: list[dict[str, Any]] | None = None
    if "hotspots" in only:
        print("[host] hotspots: the 256 x 4 ACTIVATE in -m mode ...", flush=True)
        try:
            host_hot = hotspots.host_runs(args.reps)
            host_profile = hotspots.host_profile()
        except Exception as exc:
            print(f"[host] hotspots on the host failed: {exc}", flush=True)
    t_fp = time.monotonic()
    if "footprint" in only:
        print("[host] footprint: throughput ...", flush=True)
        try:
            rates = footprint.run_throughput(args.reps, args.lines)
        except Exception as exc:
            results["footprint"] = failed("footprint", f"{type(exc).__name__}: {exc}")
        print(f"[host] idle footprint for {args.idle:g} s, in the background ...", flush=True)
        idle = footprint.Idle(args.idle)
        idle.start()

    kernel: dict[str, Any] = {}
    names = [n for n in KERNEL_BENCHMARKS if n in only]
    cpu = uml_cpu(not args.no_pin) if names else None
    info["uml_pinned_cpu"] = cpu
    if names:
        where = f"on CPU {cpu}" if cpu is not None else "unpinned"
        print(f"[host] booting user-mode Linux ({where}) for: {', '.join(names)}", flush=True)
        kernel = run_kernel(names, args.reps, args.uml_timeout, cpu)
        results.update(kernel.get("benchmarks", {}))
        if "hotspots" in results:
            results["hotspots"] = hotspots.rebuild(results["hotspots"], host_hot, host_profile)
        for name in names:
            if name not in results:
                why = kernel.get("error") or f"the boot ended with status {kernel.get('status')}"
                results[name] = failed(name, why)

    if idle is not None:
        idle.join()
        if "footprint" not in results:
            results["footprint"] = footprint.report(
                idle, rates, args.lines, time.monotonic() - t_fp
            )

    info["uml_run_s"] = kernel.get("total_s")
    info["total_s"] = time.monotonic() - t_start
    cal = calibrate.table(
        host_cal, kernel.get("calibration_start"), kernel.get("calibration_end"), cpu
    )
    return finish(info, results, cal, host_cal, kernel)


def finish(
    info: dict[str, Any],
    results: dict[str, dict[str, Any]],
    cal: Table,
    host_cal: dict[str, float],
    kernel: dict[str, Any],
) -> int:
    """Print every table and the summary; write latest.json and latest.md."""
    tables: list[Table] = []
    targets: list[Target] = []
    problems: list[str] = []
    for name in ORDER:
        res = results.get(name)
        if res is None:
            continue
        if not res.get("ok"):
            problems.append(f"{name}: {res.get('error')}")
        tables += [Table.from_dict(t) for t in res.get("tables", [])]
        targets += [Target.from_dict(t) for t in res.get("targets", [])]
    tables.append(cal)
    summary = Table("Summary: targets of issue 5", ["benchmark", "target", "measured", "verdict"])
    for t in targets:
        summary.add(t.benchmark, f"{t.name} ({t.goal})", t.value, t.verdict)
    for problem in problems:
        summary.notes.append(f"FAILED TO RUN: {problem}")
    pin = info.get("uml_pinned_cpu")
    summary.notes.append(
        f"Total run time {info['total_s']:.0f} s on {info['cpus']} CPUs ({info['cpu']}); "
        f"user-mode Linux {info['uml_kernel']}"
        + (f" pinned to CPU {pin}" if pin is not None else ", not pinned to a CPU")
        + f", Python {info['python']}."
    )
    if info.get("helper_code_uncommitted_changes"):
        summary.notes.append(
            f"cgp_ipvs_helper/ had uncommitted changes on top of {info['commit']}."
        )
    print()
    for table in [*tables, summary]:
        print(table.text())
        print()
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": info,
        "calibration": {
            "host": host_cal,
            "uml_start": kernel.get("calibration_start"),
            "uml_end": kernel.get("calibration_end"),
        },
        "benchmarks": results,
        "targets": [t.to_dict() for t in targets],
    }
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    md = [
        "## Benchmarks",
        "",
        f"`make bench` on {info['date']}, commit {info['commit']}, {info['cpus']} CPUs "
        f"({info['cpu']}); kernel figures inside user-mode Linux {info['uml_kernel']} "
        f"(tests/lab/uml.py, {'pinned to one CPU' if pin is not None else 'not pinned'}: see "
        f"The machine below), host figures on the host through pipes only. "
        f"The run took {info['total_s'] / 60:.1f} minutes; results in bench/results/latest.json.",
        "",
    ]
    for table in [summary, *tables]:
        md += [table.markdown(), ""]
    (RESULTS / "latest.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
