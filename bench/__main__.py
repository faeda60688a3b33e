"""`python -m bench` (`make bench`): run the benchmarks, print their tables and the targets.

    python -m bench [--reps N] [--only PART,...] [--idle SECONDS] [--lines N] [--no-pin]

The host's parts run first (the footprint, the hotspots' -m ACTIVATEs), alone; then one
user-mode Linux boot, pinned to one CPU, runs the kernel benchmarks (`--inside FILE`). Results go
to bench/results/latest.json and, from a run of every part, to docs/benchmarks.md (else
bench/results/latest.md). Exit status 1 if a part could not run; a missed target is a result.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.probe import machine_costs
from lab.uml import REPO_ROOT, LabSetupError, find_kernel, kernel_version, pinned, run_uml, uml_cpu

from . import footprint, hotspots
from .report import Table, Target, result

KERNEL = ("activation", "dualstack", "hotspots", "aliases", "failover", "membership")
ALL = (*KERNEL, "footprint")
RESULTS, DOC = REPO_ROOT / "bench" / "results", REPO_ROOT / "docs" / "benchmarks.md"


MACHINE = {  # the rows of The machine: cost of basic operations
    "syscall": "one system call (write 1 byte to /dev/null)",
    "clock": "one clock read (time.perf_counter)",
    "page_fault": "one page fault (first touch of a fresh page)",
    "fork_exec": "one fork + exec from sh (/bin/true)",
    "python_warm": "a Python call, warm: the parse of an ACTIVATE line (protocol.parse_line)",
    "python_woken": "the same call as the first thing after a 20 ms sleep",
}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(path.with_suffix(".tmp"), path)


def attempt(name: str, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`fn`'s result, or the benchmark `name` recorded as failed, so the others still count."""
    try:
        return fn(*args)
    except Exception as exc:
        traceback.print_exc()
        return result(name, [], error=f"{type(exc).__name__}: {exc}")


def inside(path: Path, reps: int, names: Sequence[str]) -> int:
    """Inside UML (root): the kernel benchmarks in turn, `path` written after each."""
    data: dict[str, Any] = {"costs_start": machine_costs(), "benchmarks": {}}
    for name in names:
        t0 = time.monotonic()
        print(f"[uml] {name} ...", flush=True)
        data["benchmarks"][name] = attempt(name, importlib.import_module(f"bench.{name}").run, reps)
        print(f"[uml] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        write_json(path, data)
    write_json(path, {**data, "costs_end": machine_costs()})
    return 0


def boot(names: Sequence[str], reps: int, cpu: int | None) -> dict[str, Any]:
    """One UML boot for every kernel benchmark; its JSON (partial if the boot failed)."""
    path = Path(tempfile.mkstemp(prefix="bench-kernel-", suffix=".json")[1])
    argv = ["python", "-m", "bench", "--inside", str(path), "--reps", str(reps), "--only"]
    try:
        with pinned(cpu):
            status = run_uml([*argv, ",".join(names)], timeout=2400, output=sys.stdout.buffer)
        data = json.loads(path.read_text() or "{}")
        return {**data, "error": f"the boot ended with status {status.status}"}
    except LabSetupError as exc:
        return {"error": str(exc)}
    finally:
        path.unlink()


def meta(reps: int, ran: list[str]) -> dict[str, Any]:
    """When, on what commit and machine: the head of the document."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout

    try:
        uml = kernel_version(find_kernel())
    except LabSetupError as exc:
        uml = f"unavailable: {exc}"
    cpu = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ":?")
    return dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        commit=git("rev-parse", "--short", "HEAD").strip(),
        uncommitted=bool(git("status", "--porcelain", "cgp_ipvs_helper").strip()),
        python=platform.python_version(),
        uml_kernel=uml,
        cpu=cpu.split(":", 1)[1].strip(),
        cpus=os.cpu_count(),
        reps=reps,
        ran=ran,
    )


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
    t_start, info, results = time.monotonic(), meta(args.reps, only), {}
    print(f"cgp-ipvs-helper benchmarks, {info['date']}, commit {info['commit']}", flush=True)
    measured: list[dict[str, float] | None] = [machine_costs()]
    host = attempt("hotspots", hotspots.host, args.reps) if "hotspots" in only else None
    if "footprint" in only:
        results["footprint"] = attempt("footprint", footprint.run, args.reps, args.lines, args.idle)
    names = [n for n in KERNEL if n in only]
    cpu = info["uml_pinned_cpu"] = uml_cpu(not args.no_pin) if names else None
    if names:
        print(f"[host] user-mode Linux (CPU {cpu}) for: {', '.join(names)}", flush=True)
        kernel = boot(names, args.reps, cpu)
        got = kernel.get("benchmarks", {})
        results |= {n: got.get(n) or result(n, [], error=kernel["error"]) for n in names}
        if "hotspots" in results:
            results["hotspots"] = hotspots.rebuild(results["hotspots"], host)
        measured += [kernel.get("costs_start"), kernel.get("costs_end")]
    info["total_s"] = time.monotonic() - t_start
    return finish(info, results, measured)


def finish(info: dict[str, Any], results: dict[str, Any], measured: list[Any]) -> int:
    """The run's document (summary, every table, The machine) printed and written; its raw
    figures to latest.json."""
    targets = [Target(**t) for n in ALL if n in results for t in results[n]["targets"]]
    verdict = {True: "met", False: "NOT MET", None: "not measured"}
    summary = Table(
        "Summary: targets",
        ["benchmark", "target", "measured", "verdict"],
        [[t.benchmark, f"{t.name} ({t.goal})", t.value, verdict[t.met]] for t in targets],
        [f"FAILED TO RUN: {r['name']}: {r['error']}" for r in results.values() if r["error"]],
    )
    machine = Table(
        "The machine: cost of basic operations (us)",
        ["operation", "host", "inside UML, at boot", "inside UML, at the end"],
        [
            [label, *(f"{d[key] * 1e6:.1f}" if d else "-" for d in [*measured, None, None][:3])]
            for key, label in MACHINE.items()
        ],
        [
            "Inside user-mode Linux every system call and page fault is a hand-over between two "
            "host processes (the process, the UML kernel); unpinned (--no-pin), it tends to "
            "become a cross-CPU wake-up, many times dearer.",
            "The last two rows: the same Python warm, and as the first thing after a sleep "
            "(median of 21, less an empty clock pair), as a helper woken by its request runs "
            "it; the limit's clock starts warm, the limit behind the pipe wakes like a helper.",
        ],
    )
    tables = [Table(**t) for n in ALL if n in results for t in results[n]["tables"]]
    text = document(info, [summary, *tables, machine])
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "latest.json", {"meta": info, "costs": measured, "benchmarks": results})
    path = DOC if set(info["ran"]) == set(ALL) else RESULTS / "latest.md"
    path.write_text(text)
    print(f"\n{text}\nwrote {RESULTS / 'latest.json'} and {path}")
    return 1 if any(r["error"] for r in results.values()) else 0


def document(info: dict[str, Any], tables: Sequence[Table]) -> str:
    """docs/benchmarks.md: what it is, when, on what commit and machine, then every table."""
    about = (
        "Written by `make bench` (`bench/__main__.py`) from a run of every benchmark: do not "
        "edit it, change the benchmarks and run them. Every figure is the median of the run's "
        "repetitions, taken in rounds (each case once a round); each table's notes say how. "
        "Inside user-mode Linux a system call or page fault costs many times what it does on "
        "the host (The machine): compare a run's figures with each other, not across machines. "
        "Figures behind the design choices, taken once: [design.md](design.md)."
    )
    if set(info["ran"]) != set(ALL):
        about = f"A partial run ({', '.join(info['ran'])}), not published: a run of every "
        about += "benchmark writes docs/benchmarks.md."
    pin, dirty = info["uml_pinned_cpu"], info["uncommitted"]
    head = (
        f"`make bench` on {info['date']}, commit {info['commit']}"
        f"{' with uncommitted changes in cgp_ipvs_helper/' if dirty else ''}, {info['cpus']} "
        f"CPUs ({info['cpu']}), Python {info['python']}; kernel figures inside user-mode Linux "
        f"{info['uml_kernel']} (lab/uml.py, "
        f"{'not pinned' if pin is None else f'pinned to host CPU {pin}'}: see The machine), host "
        f"figures on the host through pipes only. The run took {info['total_s'] / 60:.1f} minutes."
    )
    return "\n".join(
        ["# Benchmarks", "", about, "", head, "", *(f"{t.markdown()}\n" for t in tables)]
    )


if __name__ == "__main__":
    sys.exit(main())
