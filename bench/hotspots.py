"""Where the time of the limit's ACTIVATEs goes, to explain the activation benchmark: lab.probe
(the helper with a stopwatch on its seams) in real mode inside UML, and on the host in -m mode."""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

from lab.driver import HelperProcess, host_options, write_vipfile
from lab.probe import profiled
from lab.standby import members_of, probed, standby
from lab.ways import activate_by

from . import limit
from .activation import TARGET_CASE, VIP_ENTRIES
from .footprint import FAKE_MEMBERS
from .report import Table, median_of, ms, repeat, result

VIPS, MEMBERS = TARGET_CASE
PROBE = [sys.executable, "-m", "lab.probe"]
PHASES = {
    "observe": "observe: netlink dumps of addresses and IPVS, sysctl reads",
    "engine": "engine: session, planner, logging (Python, between kernel calls)",
    "ipvs": "netlink: IPVS requests, encoded and batched (generic netlink)",
    "rtnetlink": "netlink: VIP addresses on eth0 and tc (reset guard, steering), encoded and "
    "batched (rtnetlink)",
    "sysctl": "sysctls written to /proc",
    "garp": "gratuitous ARP round (2 frames per VIP)",
    "output": "output: the info lines and the OK encoded (cli.Output)",
    "write": "output: their write() to the pipe, in which the woken reader may run first",
}
KERNEL_PHASES = ("ipvs", "rtnetlink", "sysctl", "garp")  # less the limit: the rest
ON_HOST = ("engine", "output", "write", "total", "wall_ok", "wall_intf")  # -m has no kernel
ROWS = {
    **PHASES,
    "limit": "limit: the same kernel changes from prebuilt messages (bench/limit.py)",
    "rest": "the kernel phases above less the limit: encoding, batching, their page faults",
    "total": "engine + output: request read until the write() of its lines starts",
    "first_garp": "first gratuitous ARP leaves after",
    "wall_ok": "as the reader sees it: ACTIVATE written -> OK read",
    "wall_intf": "of it the pipe both ways: a request without kernel work (INTF), written -> read",
}
STEPS = {
    "render": "render each real server and operation as its shell command, one by one (str)",
    "logged": "the same lines joined from kept parts, as the ACTIVATE logs them (Commands)",
    "pipe_per_line": "output lines to a pipe: write + flush each line",
    "pipe_joined": "output lines to a pipe: join, one write() (what cli.Output does)",
}


def run(reps: int) -> dict[str, Any]:
    """Inside UML: `reps` probed ACTIVATEs from standby of each case, each beside the limit; the
    tables are made on the host (`rebuild`)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-hot-"))
    path = tmp / "record"

    def once(v: int, m: int) -> dict[str, Any]:
        vipfile = write_vipfile(str(tmp / f"vips{v}"), VIP_ENTRIES[v])
        with standby("hot", vipfile, argv=[*PROBE, str(path)]) as (probe, _fe, _client):
            record = probed(probe, members_of(m), path, v)
        return {**record, "limit_s": activate_by("limit", vipfile, members_of(m))["total_s"]}

    def show(case: str, r: dict[str, Any]) -> str:
        engine, output = ms(r["phases"]["engine"]), ms(r["phases"]["output"])
        return f"hotspots {case}: OK {ms(r['wall_ok'])} ms (engine {engine}, output {output})"

    cases = {f"{v} x {m}": functools.partial(once, v, m) for v, m in limit.LIMIT_CASES}
    return result("hotspots", [], uml=repeat(reps, cases, show))


def host(reps: int) -> dict[str, Any]:
    """On the host in -m mode: `reps` probed ACTIVATEs, then a cProfile of one in-process."""
    with tempfile.TemporaryDirectory() as tmp:
        options = [*host_options(), "-f", write_vipfile(f"{tmp}/vips", VIP_ENTRIES[VIPS])]
        runs, path = [], Path(tmp, "record")
        for _ in range(reps):
            with HelperProcess(None, argv=[*PROBE, str(path), *options], timed=True) as probe:
                runs.append(probed(probe, FAKE_MEMBERS, path, VIPS))
        return {"runs": runs, "profile": profiled(options, FAKE_MEMBERS)}


def figure(runs: list[dict[str, Any]] | None, key: str) -> float:
    """A row's median over the probe's records: a phase, a figure of the record, or the rest."""
    if key == "rest":
        return sum(figure(runs, k) for k in KERNEL_PHASES) - figure(runs, "limit")
    path = ("phases", key) if key in PHASES else ("limit_s",) if key == "limit" else (key,)
    return median_of(runs or [], *path) or 0.0


def rebuild(res: dict[str, Any], host: dict[str, Any] | None) -> dict[str, Any]:
    """On the host after the boot: the tables of the in-UML runs and the host's (if it ran)."""
    if res["error"]:
        return res
    by_case, h = res["raw"]["uml"], (host or {}).get("runs")
    cases = list(by_case)
    u = by_case[cases[0]]  # the target case: the host and the steps are measured for it
    columns = [f"{c} {head}" for c in cases for head in ("UML ms", "UML share", "page faults")]
    phases = Table(
        f"Where the {' and the '.join(cases)} ACTIVATEs spend their time",
        ["phase", *columns, f"{cases[0]} host ms (-m)"],
    )
    for key, label in ROWS.items():
        cells: list[str] = []
        for runs in by_case.values():
            value, faults = figure(runs, key), median_of(runs, "faults", key)
            shared = key == "limit" or (key in PHASES and key != "write")
            share = f"{value / (figure(runs, 'total') or 1.0):.0%}" if shared else ""
            cells += [ms(value), share, "" if faults is None else f"{faults:.0f}"]
        label += f": {median_of(u, 'output_writes'):.0f} call(s)" if key == "write" else ""
        phases.add(label, *cells, ms(figure(h, key)) if h and key in ON_HOST else "-")
    phases.notes += [
        f"Median of {len(u)} runs each. UML: real mode from standby in fresh namespaces; host: "
        "-m mode (in-memory kernel, no netlink, no ARP), i.e. the helper's own Python work.",
        "lab.probe times the helper's parts on its seams: a Kernel wrapper times each batch of "
        "one kind of operation, encoding included; the engine row is the rest of handle(). "
        "Page faults: the process's minor faults in that phase. Beyond the limit: the Python "
        "work per real server (plan, encode, log line), rendering and writing the lines, and "
        "the page faults of that memory, each far dearer inside user-mode Linux (The machine).",
    ]
    steps = Table(
        f"The costly steps of the {VIPS} x {MEMBERS} ACTIVATE timed alone",
        "step | items | UML ms | UML us each | host us each".split(" | "),
    )
    for key, label in STEPS.items():
        items, each = (median_of(u, "steps", key, i) or 0.0 for i in (0, 1))
        host_each = f"{(median_of(h, 'steps', key, 1) or 0) * 1e6:.1f}" if h else "-"
        steps.add(label, f"{items:.0f}", ms(items * each), f"{each * 1e6:.1f}", host_each)
    steps.notes += [
        f"One ACTIVATE writes {median_of(u, 'steps', 'lines'):.0f} lines "
        f"({(median_of(u, 'steps', 'bytes') or 0) / 1024:.0f} KiB): one write() per line costs "
        "a system call and a wake-up of the reader each, which user-mode Linux charges far more.",
        "No cProfile inside UML: it reads the clock twice per Python call, and every clock read "
        "is a system call there.",
    ]
    if not h:
        return result("hotspots", [phases, steps], uml=by_case, host=host)
    top = Table(
        f"Hottest functions of the {VIPS} x {MEMBERS} ACTIVATE (cProfile on the host, -m mode, "
        "by own time)",
        ["function", "calls", "own ms", "cumulative ms"],
        [[name, str(calls), ms(own), ms(cum)] for name, calls, own, cum in host["profile"]],
        [
            "cProfile roughly doubles Python's run time; read the calls and the ranking. With -m "
            "the kernel is the in-memory one, so netlink encoding is not in this list."
        ],
    )
    return result("hotspots", [phases, steps, top], uml=by_case, host=host)
