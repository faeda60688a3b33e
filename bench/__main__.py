"""`python -m bench` (`make bench`): run every benchmark, print the tables, write the results.

    python -m bench [--reps N] [--only activation,dualstack,hotspots,aliases,failover,footprint]
                    [--idle SECONDS] [--lines N] [--no-pin]

Order, so that nothing CPU-bound shares the two cores with anything else: the host's parts
first (the -m ACTIVATE of the hotspots, the throughput runs); then the idle footprint helper in
a thread while one user-mode Linux boot, pinned to one CPU, runs every kernel benchmark
(`--inside FILE`: that boot's half, rewriting FILE after each benchmark, so a crash or a
time-out keeps what was gathered); then the tables, a summary of the targets,
bench/results/latest.json and latest.md. Exit status 1 if a benchmark could not run (a missed
target is a result, not a failure).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

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
from .report import Table, Target, failed

KERNEL = ("activation", "dualstack", "hotspots", "aliases", "failover")
ALL = (*KERNEL, "footprint")
RESULTS = REPO_ROOT / "bench" / "results"


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A benchmark's result, or the record that it failed: the others still run."""
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        return failed(name, f"{type(exc).__name__}: {exc}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def inside(path: str, reps: int, names: Sequence[str]) -> int:
    """Inside UML (root, as PID 1's child): the kernel benchmarks one after the other."""
    if not os.path.exists("/proc/net/ip_vs") or os.geteuid() != 0:
        print("bench --inside: run inside the lab kernel (tests/lab/uml.py)", file=sys.stderr)
        return 2
    data: dict[str, Any] = {"calibration_start": calibrate.measure(), "benchmarks": {}}
    for name in names:
        t0 = time.monotonic()
        print(f"[uml] {name} ...", flush=True)
        module = importlib.import_module(f"{__package__}.{name}")
        data["benchmarks"][name] = guarded(name, lambda: module.run(reps))  # noqa: B023
        print(f"[uml] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        write_json(Path(path), data)
    data["calibration_end"] = calibrate.measure()
    write_json(Path(path), data)
    return 0 if all(r["ok"] for r in data["benchmarks"].values()) else 1


def boot(names: Sequence[str], reps: int, timeout: float, cpu: int | None) -> dict[str, Any]:
    """One UML boot for every kernel benchmark; its JSON (partial if the boot failed)."""
    fd, path = tempfile.mkstemp(prefix="bench-kernel-", suffix=".json")
    os.close(fd)
    argv = [
        "python",
        "-m",
        "bench",
        "--inside",
        path,
        "--reps",
        str(reps),
        "--only",
        ",".join(names),
    ]
    try:
        with pinned(cpu):
            status = run_uml(argv, timeout=timeout, output=sys.stdout.buffer)
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
        except ValueError:
            data = {"benchmarks": {}}
        return {**data, "status": status.status, "total_s": status.total_s}
    except LabSetupError as exc:
        return {"benchmarks": {}, "error": str(exc)}
    finally:
        os.unlink(path)


def meta(reps: int) -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    try:
        uml = kernel_version(find_kernel())
    except LabSetupError as exc:
        uml = f"unavailable: {exc}"
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "helper_code_uncommitted_changes": bool(git("status", "--porcelain", "cgp_ipvs_helper")),
        "python": platform.python_version(),
        "host_kernel": platform.release(),
        "uml_kernel": uml,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "reps": reps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument("--idle", type=float, default=60.0, help="idle footprint window, seconds")
    p.add_argument("--lines", type=int, default=20000, help="pipelined lines per throughput run")
    p.add_argument("--uml-timeout", type=float, default=1200.0, help="kill the boot after this")
    p.add_argument("--no-pin", action="store_true", help="let the host schedule UML on any CPU")
    p.add_argument("--inside", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    if set(only) - set(ALL):
        p.error(f"unknown benchmark(s): {', '.join(sorted(set(only) - set(ALL)))}")
    if args.inside:
        return inside(args.inside, args.reps, only)
    t_start, info = time.monotonic(), meta(args.reps)
    print(f"cgp-ipvs-helper benchmarks, {info['date']}, commit {info['commit']}", flush=True)
    host_cal = calibrate.measure()
    results: dict[str, dict[str, Any]] = {}
    host = idle = None
    rates: dict[str, list[float]] = {}
    if "hotspots" in only:
        print("[host] hotspots: the 256 x 4 ACTIVATE in -m mode ...", flush=True)
        try:
            host = hotspots.host(args.reps)
        except Exception as exc:
            print(f"[host] hotspots on the host failed: {exc}", flush=True)
    if "footprint" in only:
        print(
            "[host] footprint: throughput, then the idle helper in the background ...", flush=True
        )
        try:
            rates = footprint.run_throughput(args.reps, args.lines)
        except Exception as exc:
            results["footprint"] = failed("footprint", f"{type(exc).__name__}: {exc}")
        idle = ThreadPoolExecutor(1).submit(footprint.idle, args.idle)
    names = [n for n in KERNEL if n in only]
    cpu = info["uml_pinned_cpu"] = uml_cpu(not args.no_pin) if names else None
    kernel: dict[str, Any] = {}
    if names:
        where = f"on CPU {cpu}" if cpu is not None else "unpinned"
        print(f"[host] booting user-mode Linux ({where}) for: {', '.join(names)}", flush=True)
        kernel = boot(names, args.reps, args.uml_timeout, cpu)
        results.update(kernel.get("benchmarks", {}))
        if "hotspots" in results:
            results["hotspots"] = hotspots.rebuild(results["hotspots"], host)
        why = kernel.get("error") or f"the boot ended with status {kernel.get('status')}"
        results.update({n: failed(n, why) for n in names if n not in results})
    if idle is not None and "footprint" not in results:
        try:
            measured: dict[str, Any] | str = idle.result()
        except Exception as exc:
            measured = f"{type(exc).__name__}: {exc}"
        results["footprint"] = footprint.report(measured, rates, args.lines)
    info["uml_run_s"] = kernel.get("total_s")
    info["total_s"] = time.monotonic() - t_start
    cal = [host_cal, kernel.get("calibration_start"), kernel.get("calibration_end")]
    return finish(info, results, calibrate.table(*cal, cpu), cal)


def finish(
    info: dict[str, Any], results: dict[str, dict[str, Any]], machine: Table, cal: list[Any]
) -> int:
    """Print every table and the summary; write latest.json and latest.md."""
    tables: list[Table] = []
    targets: list[Target] = []
    summary = Table("Summary: targets of issue 5", ["benchmark", "target", "measured", "verdict"])
    for name in ALL:
        res = results.get(name, {"ok": True, "tables": [], "targets": []})
        if not res["ok"]:
            summary.notes.append(f"FAILED TO RUN: {name}: {res.get('error')}")
        tables += [Table(**t) for t in res["tables"]]
        targets += [Target(**t) for t in res["targets"]]
    for t in targets:
        summary.add(t.benchmark, f"{t.name} ({t.goal})", t.value, t.verdict)
    pin = info.get("uml_pinned_cpu")
    summary.notes.append(
        f"Total run time {info['total_s']:.0f} s on {info['cpus']} CPUs ({info['cpu']}); "
        f"user-mode Linux {info['uml_kernel']}"
        + (f" pinned to CPU {pin}" if pin is not None else ", not pinned to a CPU")
        + f", Python {info['python']}."
    )
    if info["helper_code_uncommitted_changes"]:
        summary.notes.append(
            f"cgp_ipvs_helper/ had uncommitted changes on top of {info['commit']}."
        )
    tables.append(machine)
    print("\n" + "\n\n".join(t.text() for t in [*tables, summary]) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": info,
        "calibration": dict(zip(("host", "uml_start", "uml_end"), cal)),
        "benchmarks": results,
        "targets": [asdict(t) for t in targets],
    }
    write_json(RESULTS / "latest.json", data)
    head = (
        f"`make bench` on {info['date']}, commit {info['commit']}, {info['cpus']} CPUs "
        f"({info['cpu']}); kernel figures inside user-mode Linux {info['uml_kernel']} "
        f"(tests/lab/uml.py, {'pinned to one CPU' if pin is not None else 'not pinned'}: see "
        "The machine below), host figures on the host through pipes only. "
        f"The run took {info['total_s'] / 60:.1f} minutes; results in bench/results/latest.json."
    )
    md = ["## Benchmarks", "", head, "", *(t.markdown() + "\n" for t in [summary, *tables])]
    (RESULTS / "latest.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
