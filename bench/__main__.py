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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.uml import REPO_ROOT, LabSetupError, find_kernel, kernel_version, pinned, run_uml, uml_cpu

from . import footprint, hotspots, machine
from .report import Table, Target, failed

KERNEL = ("activation", "dualstack", "hotspots", "aliases", "failover", "membership")
ALL = (*KERNEL, "footprint")
RESULTS = REPO_ROOT / "bench" / "results"
DOC = REPO_ROOT / "docs" / "benchmarks.md"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(path.with_suffix(".tmp"), path)


def attempt(name: str, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`fn`'s result, or the benchmark `name` recorded as failed, so the others still count."""
    try:
        return fn(*args)
    except Exception as exc:
        traceback.print_exc()
        return failed(name, f"{type(exc).__name__}: {exc}")


def inside(path: Path, reps: int, names: Sequence[str]) -> int:
    """Inside UML (root): the kernel benchmarks in turn, `path` written after each."""
    data: dict[str, Any] = {"costs_start": machine.costs(), "benchmarks": {}}
    for name in names:
        t0 = time.monotonic()
        print(f"[uml] {name} ...", flush=True)
        data["benchmarks"][name] = attempt(name, importlib.import_module(f"bench.{name}").run, reps)
        print(f"[uml] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        write_json(path, data)
    write_json(path, {**data, "costs_end": machine.costs()})
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
        "ran": ran,
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
    t_start, info, results = time.monotonic(), meta(args.reps, only), {}
    print(f"cgp-ipvs-helper benchmarks, {info['date']}, commit {info['commit']}", flush=True)
    measured: list[dict[str, float] | None] = [machine.costs()]
    host = attempt("hotspots", hotspots.host, args.reps) if "hotspots" in only else None
    if "footprint" in only:
        results["footprint"] = attempt("footprint", footprint.run, args.reps, args.lines, args.idle)
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
    info["total_s"] = time.monotonic() - t_start
    return finish(info, results, measured)


def head(info: dict[str, Any]) -> str:
    """When, on what commit and machine: the line under the document's title and the tables."""
    pin = info["uml_pinned_cpu"]
    pinning = f"pinned to host CPU {pin}" if pin is not None else "not pinned"
    dirty = " with uncommitted changes in cgp_ipvs_helper/" if info["uncommitted"] else ""
    return (
        f"`make bench` on {info['date']}, commit {info['commit']}{dirty}, {info['cpus']} CPUs "
        f"({info['cpu']}), Python {info['python']}; kernel figures inside user-mode Linux "
        f"{info['uml_kernel']} (lab/uml.py, {pinning}: see The machine), host figures on the "
        f"host through pipes only. The run took {info['total_s'] / 60:.1f} minutes."
    )


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
    tables_ = [t.markdown() + "\n" for t in tables]
    return "\n".join(["# Benchmarks", "", about, "", head(info), "", *tables_])


def finish(info: dict[str, Any], results: dict[str, Any], measured: list[Any]) -> int:
    """Print every table and the summary; write latest.json and the Markdown document."""
    tables = [Table(**t) for n in ALL if n in results for t in results[n]["tables"]]
    targets = [Target(**t) for n in ALL if n in results for t in results[n]["targets"]]
    verdict = {True: "met", False: "NOT MET", None: "not measured"}
    summary = Table(
        "Summary: targets",
        ["benchmark", "target", "measured", "verdict"],
        [[t.benchmark, f"{t.name} ({t.goal})", t.value, verdict[t.met]] for t in targets],
        [f"FAILED TO RUN: {r['name']}: {r['error']}" for r in results.values() if r["error"]],
    )
    tables.append(machine.table(measured))
    print("\n" + "\n\n".join(t.text() for t in [*tables, summary]) + f"\n\n{head(info)}\n")
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
