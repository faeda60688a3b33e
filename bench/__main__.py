"""`python -m bench` (`make bench`): run every benchmark, print the tables, write the results.

    python -m bench [--reps N] [--only activation,dualstack,hotspots,aliases,failover,membership,
                                       footprint]
                    [--idle SECONDS] [--lines N] [--no-pin]

The host's CPU-bound parts first (the -m ACTIVATE of the hotspots, the throughput runs); then
the idle footprint helper in a thread while one user-mode Linux boot, pinned to one CPU, runs
the kernel benchmarks (`--inside FILE`: that boot's half, FILE rewritten after each benchmark);
then the tables and the summary of the targets, written to bench/results/latest.json and, by a
run of every benchmark, to docs/benchmarks.md (a partial run: bench/results/latest.md), so the
published figures are always one run's. Exit status 1 if a benchmark could not run (a missed
target is a result, not a failure).
"""

from __future__ import annotations

import argparse
import importlib
import json
import mmap
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.core.protocol import parse_line
from lab.uml import (
    REPO_ROOT,
    LabSetupError,
    find_kernel,
    kernel_version,
    pinned,
    run_uml,
    uml_cpu,
)

from . import footprint, hotspots
from .report import Table, Target, failed, per

KERNEL = ("activation", "dualstack", "hotspots", "aliases", "failover", "membership")
ALL = (*KERNEL, "footprint")
RESULTS = REPO_ROOT / "bench" / "results"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
COSTS = {
    "syscall": "one system call (write 1 byte to /dev/null)",
    "clock": "one clock read (time.perf_counter)",
    "page_fault": "one page fault (first touch of a fresh page)",
    "fork_exec": "one fork + exec from sh (/bin/true)",
    "python_warm": "a Python call, warm: the parse of an ACTIVATE line (protocol.parse_line)",
    "python_woken": "the same call as the first thing after a 20 ms sleep",
}
ACTIVATE_LINE = b"00002 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13 192.0.2.14"


def costs(n: int = 1000) -> dict[str, float]:
    """Seconds per basic operation here (host or UML): which figures are the lab's."""
    fd, area = os.open(os.devnull, os.O_WRONLY), mmap.mmap(-1, n * mmap.PAGESIZE)
    forks = ["sh", "-c", "i=0; while [ $i -lt 20 ]; do /bin/true; i=$((i+1)); done"]
    try:
        return {
            "syscall": per(lambda: [os.write(fd, b"x") for _ in range(n)], n),
            "clock": per(lambda: [time.perf_counter() for _ in range(n)], n),
            "page_fault": per(
                lambda: [area.__setitem__(i * mmap.PAGESIZE, 1) for i in range(n)], n
            ),
            "fork_exec": per(lambda: subprocess.run(forks, check=True), 20),
            "python_warm": per(lambda: [parse_line(ACTIVATE_LINE) for _ in range(n)], n),
            "python_woken": woken(lambda: parse_line(ACTIVATE_LINE)) - woken(lambda: None),
        }
    finally:
        os.close(fd)
        area.close()


def woken(fn: Callable[[], object], samples: int = 21, sleep: float = 0.02) -> float:
    """Median seconds of `fn` as the first thing a process does after sleeping, as a helper's
    request handling is (the clock pair around it included)."""
    spent = []
    for _ in range(samples):
        time.sleep(sleep)
        t0 = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - t0)
    return statistics.median(spent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(path.with_suffix(".tmp"), path)


def inside(path: Path, reps: int, names: Sequence[str]) -> int:
    """Inside UML (root, as PID 1's child): the kernel benchmarks one after the other."""
    data: dict[str, Any] = {"costs_start": costs(), "benchmarks": {}}
    for name in names:
        t0 = time.monotonic()
        print(f"[uml] {name} ...", flush=True)
        try:
            data["benchmarks"][name] = importlib.import_module(f"bench.{name}").run(reps)
        except Exception as exc:
            traceback.print_exc()
            data["benchmarks"][name] = failed(name, f"{type(exc).__name__}: {exc}")
        print(f"[uml] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        write_json(path, data)
    write_json(path, {**data, "costs_end": costs()})
    return 0


def boot(names: Sequence[str], reps: int, cpu: int | None) -> dict[str, Any]:
    """One UML boot for every kernel benchmark; its JSON (partial if the boot failed)."""
    path = Path(tempfile.mkstemp(prefix="bench-kernel-", suffix=".json")[1])
    argv = ["python", "-m", "bench", "--inside", str(path), "--reps", str(reps), "--only"]
    try:
        with pinned(cpu):
            status = run_uml([*argv, ",".join(names)], timeout=2400, output=sys.stdout.buffer)
        data = json.loads(path.read_text() or "{}")
        return {**data, "error": f"the boot ended with status {status.status}", "s": status.total_s}
    except LabSetupError as exc:
        return {"error": str(exc)}
    finally:
        path.unlink()


def meta(reps: int) -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    try:
        uml = kernel_version(find_kernel())
    except LabSetupError as exc:
        uml = f"unavailable: {exc}"
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": bool(git("status", "--porcelain", "cgp_ipvs_helper")),
        "python": platform.python_version(),
        "uml_kernel": uml,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "reps": reps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument("--idle", type=float, default=60.0, help="idle footprint window, seconds")
    p.add_argument("--lines", type=int, default=20000, help="pipelined lines per throughput run")
    p.add_argument("--no-pin", action="store_true", help="let the host schedule UML on any CPU")
    p.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    if set(only) - set(ALL):
        p.error(f"unknown benchmark(s): {', '.join(sorted(set(only) - set(ALL)))}")
    if args.inside:
        return inside(args.inside, args.reps, only)
    t_start, info, results = time.monotonic(), {**meta(args.reps), "ran": only}, {}
    print(f"cgp-ipvs-helper benchmarks, {info['date']}, commit {info['commit']}", flush=True)
    measured: list[dict[str, float] | None] = [costs()]
    host, idle, rates = None, None, {}
    try:
        host = hotspots.host(args.reps) if "hotspots" in only else None
    except Exception as exc:  # the in-UML half still has its tables
        print(f"[host] hotspots on the host failed: {exc}", flush=True)
    if "footprint" in only:
        try:
            rates = footprint.run_throughput(args.reps, args.lines)
            idle = ThreadPoolExecutor(1).submit(footprint.idle, args.idle)  # meanwhile
        except Exception as exc:
            results["footprint"] = failed("footprint", f"{type(exc).__name__}: {exc}")
    names = [n for n in KERNEL if n in only]
    cpu = info["uml_pinned_cpu"] = uml_cpu(not args.no_pin) if names else None
    if names:
        print(f"[host] user-mode Linux (CPU {cpu}) for: {', '.join(names)}", flush=True)
        kernel = boot(names, args.reps, cpu)
        got = kernel.get("benchmarks", {})
        results.update({n: got.get(n) or failed(n, kernel["error"]) for n in names})
        if "hotspots" in results:
            results["hotspots"] = hotspots.rebuild(results["hotspots"], host)
        measured += [kernel.get("costs_start"), kernel.get("costs_end")]
    if idle is not None:
        try:
            results["footprint"] = footprint.report(idle.result(), rates, args.lines)
        except Exception as exc:
            results["footprint"] = footprint.report(f"{exc!r}", rates, args.lines)
    info["total_s"] = time.monotonic() - t_start
    return finish(info, results, measured)


def document(info: dict[str, Any], tables: Sequence[Table]) -> str:
    """docs/benchmarks.md: when, on what commit and machine, then every table of the run."""
    pin = info["uml_pinned_cpu"]
    pinning = "pinned to one CPU" if pin is not None else "not pinned"
    dirty = " with uncommitted changes in cgp_ipvs_helper/" if info["uncommitted"] else ""
    head = (
        f"`make bench` on {info['date']}, commit {info['commit']}{dirty}, {info['cpus']} CPUs "
        f"({info['cpu']}), Python {info['python']}; kernel figures inside user-mode Linux "
        f"{info['uml_kernel']} (lab/uml.py, {pinning}: see The machine below), "
        "host figures on the host through pipes only. "
        f"The run took {info['total_s'] / 60:.1f} minutes."
    )
    about = (
        "Written by `make bench` (`bench/__main__.py`) at the end of a run of every benchmark: "
        "do not edit it, change the benchmarks and run them. Each figure is a median of the "
        "run's repetitions, taken in rounds (every case once a round); each table's notes say "
        "how. A system call or page fault inside user-mode Linux costs many times what it costs "
        "on the host (The machine): compare a run's figures with each other, not across "
        "machines. Figures taken once while the code was written, behind its design choices: "
        "[design.md](design.md)."
    )
    if set(info["ran"]) != set(ALL):
        about = (
            f"A partial run ({', '.join(info['ran'])}), not published: a run of every "
            "benchmark writes docs/benchmarks.md."
        )
    return "\n".join(
        ["# Benchmarks", "", about, "", head, "", *(t.markdown() + "\n" for t in tables)]
    )


def finish(info: dict[str, Any], results: dict[str, Any], measured: list[Any]) -> int:
    """Print every table and the summary; write latest.json and the Markdown document."""
    tables = [Table(**t) for n in ALL if n in results for t in results[n]["tables"]]
    targets = [Target(**t) for n in ALL if n in results for t in results[n]["targets"]]
    machine = Table(
        "The machine: cost of basic operations (us)",
        ["operation", "host", "inside UML, at boot", "inside UML, at the end"],
    )
    for key, label in COSTS.items():
        cells = [f"{d[key] * 1e6:.1f}" if d else "-" for d in measured]
        machine.add(label, *(cells + ["-", "-"])[:3])
    pin = info["uml_pinned_cpu"]
    machine.notes.append(
        "Inside user-mode Linux every system call and page fault of a process is a hand-over "
        "between two host processes (the process and the UML kernel). Unpinned, each "
        "hand-over tends to become a cross-CPU wake-up, many times dearer (compare the rows "
        "above of an unpinned run, --no-pin). This run "
        + (f"pinned the boot to host CPU {pin}." if pin is not None else "did not pin the boot.")
    )
    machine.notes.append(
        "The last two rows: the same Python, warm and as the first thing after a sleep (median "
        "of 21, less an empty clock pair). A helper sleeps until its request arrives, so the "
        "Python of an ACTIVATE runs like the second row; the limit's clock starts "
        "warm, and the limit behind the pipe runs a few lines of Python after its sleep."
    )
    summary = Table("Summary: targets", ["benchmark", "target", "measured", "verdict"])
    for t in targets:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t.met]
        summary.add(t.benchmark, f"{t.name} ({t.goal})", t.value, verdict)
    summary.notes += [
        f"FAILED TO RUN: {r['name']}: {r['error']}" for r in results.values() if r["error"]
    ]
    summary.notes.append(
        f"Total run time {info['total_s']:.0f} s on {info['cpus']} CPUs ({info['cpu']}); "
        f"user-mode Linux {info['uml_kernel']}"
        + (f" pinned to CPU {pin}" if pin is not None else ", not pinned to a CPU")
        + f", Python {info['python']}."
        + (" cgp_ipvs_helper/ had uncommitted changes." if info["uncommitted"] else "")
    )
    tables.append(machine)
    print("\n" + "\n\n".join(t.text() for t in [*tables, summary]) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    targets_ = [asdict(t) for t in targets]
    data = {"meta": info, "costs": measured, "benchmarks": results, "targets": targets_}
    write_json(RESULTS / "latest.json", data)
    path = DOC if set(info["ran"]) == set(ALL) else RESULTS / "latest.md"
    path.write_text(document(info, [summary, *tables]))
    print(f"wrote {RESULTS / 'latest.json'} and {path}")
    return 1 if any(r["error"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
