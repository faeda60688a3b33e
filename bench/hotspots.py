"""Where the time of the 256-VIP x 4-member ACTIVATE goes, to explain benchmark 1's figures.

bench.probe (the helper with a stopwatch on its seams) is driven as the activation benchmark
drives the helper: inside UML in real mode from standby (`run`), and on the host in -m mode
(`host`: the same planning, logging and output against the in-memory kernel, without
user-mode Linux's price for system calls and page faults), where a cProfile of the same
ACTIVATE is taken too. The host's half is added to the in-UML tables on the host (`rebuild`).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import tempfile
from typing import Any

from cgp_ipvs_helper.cli import Output, make_kernel, parse_settings
from cgp_ipvs_helper.helper import Helper
from tests.lab.driver import HelperProcess, write_vipfile

from . import limit
from .activation import TARGET_CASE, VIP_ENTRIES
from .footprint import FAKE_MEMBERS, host_options
from .lab import activate, members_of, progress, standby
from .report import Table, median, ms, result

VIPS, MEMBERS = TARGET_CASE
PHASES = [
    ("observe", "observe: netlink dumps of addresses and IPVS, sysctl reads"),
    ("engine", "engine: session, planner, logging (Python, between kernel calls)"),
    ("ipvs", "netlink: IPVS requests, encoded and batched (generic netlink)"),
    ("addresses", "netlink: VIP addresses on eth0, encoded and batched (rtnetlink)"),
    ("garp", "gratuitous ARP round (2 frames per VIP)"),
    ("output", "output: info lines + OK to the pipe (cli.Output)"),
]
STEPS = [
    ("render", "render each operation as a shell command (str: shlex.join)"),
    ("pipe_per_line", "output lines to a pipe: write + flush each line"),
    ("pipe_joined", "output lines to a pipe: join, one write() (what cli.Output does)"),
]


def probed(probe: HelperProcess, members: list[str], path: str) -> dict[str, Any]:
    """The timed ACTIVATE of a started probe, and the record it wrote about it; before it,
    the pipe's round trip alone (INTF: no kernel work)."""
    intf = median([probe.exchange("INTF 1", timeout=60).seconds for _ in range(5)])
    reply = activate(probe, members, VIPS)
    probe.request("STATUS", timeout=180)  # answered once the record is written
    with open(path) as f:
        return {**json.load(f), "wall_ok": reply.seconds, "wall_intf": intf}


def run(reps: int) -> dict[str, Any]:
    """Inside UML: `reps` probed ACTIVATEs from standby, each beside the limit."""
    vipfile = write_vipfile(tempfile.mkdtemp(prefix="bench-hot-") + "/vips", VIP_ENTRIES[VIPS])
    runs = []
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            path, argv = os.path.join(tmp, "record.json"), [sys.executable, "-m", "bench.probe"]
            with standby("hot", vipfile, argv=[*argv, path]) as (probe, _fe, _client):
                r = probed(probe, members_of(MEMBERS), path)
        r["limit_s"] = limit.measure(vipfile, members_of(MEMBERS))["total_s"]
        runs.append(r)
        progress(
            f"hotspots {VIPS}x{MEMBERS} rep {rep + 1}/{reps}: OK after {ms(r['wall_ok'])} ms "
            f"(engine {ms(r['phases']['engine'])} ms, output {ms(r['phases']['output'])} ms)"
        )
    return result("hotspots", tables(runs, None), uml=runs)


def host(reps: int) -> dict[str, Any]:
    """On the host in -m mode: `reps` probed ACTIVATEs, then a cProfile of one in-process."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "wb") as sink:
        vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[VIPS])
        path = os.path.join(tmp, "record.json")
        argv, options = [sys.executable, "-m", "bench.probe"], [*host_options(), "-f", vipfile]
        for _ in range(reps):
            probe = HelperProcess(None, argv=[*argv, path, *options], timed=True)
            try:
                probe.wait_started(timeout=60)
                runs.append(probed(probe, FAKE_MEMBERS, path))
            finally:
                probe.kill()
        settings = parse_settings(options)
        kernel, notes = make_kernel(settings)
        helper = Helper(settings, kernel)
        helper.start(notes)
        profile = cProfile.Profile()
        profile.enable()
        Output(sink).write(helper.handle("00002 ACTIVATE " + " ".join(FAKE_MEMBERS)))
        profile.disable()
    rows = []
    stats = pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
    for (file, line, func), (_cc, calls, own, cumulative, _callers) in stats:
        if "cgp_ipvs_helper/" in file:
            file = file[file.index("cgp_ipvs_helper/") :]
        elif "site-packages/" in file:
            file = file[file.index("site-packages/") + 14 :]
        else:
            file = os.path.basename(file)
        rows.append((f"{file}:{line}({func})", calls, own, cumulative))
    return {"runs": runs, "profile": sorted(rows, key=lambda r: -r[2])[:15]}


def rebuild(res: dict[str, Any], host: dict[str, Any] | None) -> dict[str, Any]:
    """Add the host's figures to the in-UML result (on the host, after the boot)."""
    if not res.get("ok") or host is None:
        return res
    built = tables(res["raw"]["uml"], host["runs"])
    top = Table(
        f"Hottest functions of the {VIPS} x {MEMBERS} ACTIVATE (cProfile on the host, -m mode, "
        "by own time)",
        ["function", "calls", "own ms", "cumulative ms"],
    )
    for name, calls, own, cumulative in host["profile"]:
        top.add(name, calls, ms(own), ms(cumulative))
    top.notes.append(
        "cProfile roughly doubles Python's run time; read the calls and the ranking. With -m "
        "the kernel is the in-memory one, so netlink encoding is not in this list."
    )
    return result("hotspots", [*built, top], uml=res["raw"]["uml"], host=host)


def _med(runs: list[dict[str, Any]] | None, *path: str) -> float | None:
    """The median of a figure found at `path` in each run's record."""
    values = []
    for node in runs or []:
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            values.append(float(node))
    return median(values) if values else None


def tables(u: list[dict[str, Any]], h: list[dict[str, Any]] | None) -> list[Table]:
    total, limit_s = _med(u, "total") or 0.0, _med(u, "limit_s") or 0.0
    phases = Table(
        f"Where the {VIPS} x {MEMBERS} ACTIVATE spends its time",
        ["phase", "UML ms", "UML share", "UML page faults", "host ms (-m)"],
    )
    for key, label in PHASES:
        if key == "output":
            label += f": {_med(u, 'output_writes') or 0:.0f} write() call(s)"
        value, faults = _med(u, "phases", key) or 0.0, _med(u, "faults", key)
        host_ms = ms(_med(h, "phases", key)) if h and key in ("engine", "output") else "-"
        share = f"{value / total:.0%}" if total else "-"
        phases.add(label, ms(value), share, "" if faults is None else f"{faults:.0f}", host_ms)
    kernel = sum(_med(u, "phases", k) or 0.0 for k in ("ipvs", "addresses", "garp"))
    share = f"{limit_s / total:.0%}" if total else "-"
    limit_row = "limit: the same kernel changes from prebuilt messages (bench/limit.py)"
    phases.add(limit_row, ms(limit_s), share, "", "-")
    rest = "the kernel phases above less the limit: encoding, batching, their page faults"
    phases.add(rest, ms(kernel - limit_s), "", "", "-")
    faults = (_med(u, "faults", "handle") or 0.0) + (_med(u, "faults", "output") or 0.0)
    phases.add(
        "engine + output: request read until the OK is written",
        ms(total),
        "",
        f"{faults:.0f}",
        ms(_med(h, "total")) if h else "-",
    )
    phases.add("first gratuitous ARP leaves after", ms(_med(u, "first_garp")), "", "", "-")
    wall = "as the reader sees it: ACTIVATE written -> OK read"
    phases.add(wall, ms(_med(u, "wall_ok")), "", "", ms(_med(h, "wall_ok")) if h else "-")
    intf = "of it the pipe both ways: a request without kernel work (INTF), written -> read"
    phases.add(intf, ms(_med(u, "wall_intf"), 2), "", "", ms(_med(h, "wall_intf"), 2) if h else "-")
    phases.notes += [
        f"Median of {len(u)} runs each. UML: real mode from standby in fresh namespaces; host: "
        "-m mode (in-memory kernel, no netlink, no ARP), i.e. the helper's own Python work.",
        "bench.probe is the helper's own parts with a stopwatch on its seams: a Kernel wrapper "
        "times each batch of one kind of operation, encoding included; the engine row is the "
        "rest of handle(). Page faults are the process's minor faults in that phase.",
        "Beyond the limit: the Python work per real server (plan, encode, log line), rendering "
        "and writing the lines, and the page faults of that memory, each of which costs tens "
        "of microseconds in user-mode Linux (The machine) against 1-4 on a host.",
    ]
    steps = Table(
        f"The costly steps of the {VIPS} x {MEMBERS} ACTIVATE timed alone",
        ["step", "items", "UML ms", "UML us each", "host us each"],
    )
    for key, label in STEPS:
        items = _med(u, "components", key, "items") or 0
        each = _med(u, "components", key, "each_s") or 0
        host_each = f"{(_med(h, 'components', key, 'each_s') or 0) * 1e6:.1f}" if h else "-"
        steps.add(label, f"{items:.0f}", ms(items * each), f"{each * 1e6:.1f}", host_each)
    lines, size = _med(u, "components", "lines") or 0, _med(u, "components", "bytes") or 0
    steps.notes += [
        f"One ACTIVATE writes {lines:.0f} lines ({size / 1024:.0f} KiB). One write() per line "
        "costs lines x (a system call + waking the reader), which user-mode Linux charges far "
        "more for than a host does (see The machine).",
        "cProfile is not used inside UML: it reads the clock twice per Python call and every "
        "clock read is a system call there, which would bury the real costs.",
    ]
    return [phases, steps]
