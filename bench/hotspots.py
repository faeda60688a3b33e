"""Where the time of the 256-VIP x 4-member ACTIVATE goes, to explain benchmark 1's figures.

bench.probe (the helper's own parts with a stopwatch on its seams: a timing Kernel, the engine's
handle(), the output stream) is driven over its pipes exactly as the activation benchmark
drives the helper:
- inside UML in real mode, in fresh namespaces (what benchmark 1 measures);
- on the host in -m mode (the same planning, logging and output on the host's CPU, against the
  in-memory kernel): the helper's own Python work, without user-mode Linux's price for system
  calls and page faults.
The in-UML half returns its tables; the host half (and a cProfile of the same ACTIVATE on the
host, where the clock is cheap) is added to them on the host (`rebuild`).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from typing import Any

from cgp_ipvs_helper.cli import Output, make_kernel, parse_settings
from cgp_ipvs_helper.helper import Helper
from tests.lab.driver import HelperProcess, write_vipfile
from tests.lab.group import expand

from . import limit
from .activation import TARGET_CASE, VIP_ENTRIES, members_of
from .footprint import FAKE_MEMBERS, lan_iface
from .lab import fresh_lan, progress
from .report import Table, median, ms, result

PHASES = [
    ("observe", "observe: netlink dumps of addresses and IPVS, sysctl reads"),
    ("engine", "engine: session, planner, logging (Python, between kernel calls)"),
    ("ipvs", "netlink: IPVS requests, encoded and batched (generic netlink)"),
    ("addresses", "netlink: VIP addresses on eth0, encoded and batched (rtnetlink)"),
    ("garp", "gratuitous ARP round (2 frames per VIP)"),
    ("output", "output: info lines + OK to the pipe (cli.Output)"),
]
IN_DRY_RUN = ("engine", "output")  # -m: the other phases are the in-memory kernel's
COMPONENTS = [
    ("render", "render each operation as a shell command (str: shlex.join)"),
    ("pipe_per_line", "output lines to a pipe: write + flush each line"),
    ("pipe_joined", "output lines to a pipe: join, one write() (what cli.Output does)"),
]
TOP = 15


def _probe(host: Any, result: str, options: list[str]) -> HelperProcess:
    argv = [sys.executable, "-m", "bench.probe", result, *options]
    return HelperProcess(host, argv=argv, timed=True)


def _record(probe: HelperProcess, members: list[str], path: str, expect: str) -> dict[str, Any]:
    """Start-up, the timed ACTIVATE, and the record the probe wrote about it."""
    try:
        probe.wait_started(timeout=180)
        reply = probe.exchange("ACTIVATE " + " ".join(members), timeout=180)
        if expect not in reply.line:
            raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
        probe.request("STATUS", timeout=180)  # answered once the record is written
        with open(path) as f:
            record: dict[str, Any] = json.load(f)
    finally:
        probe.kill()
    record["wall_ok"] = reply.seconds
    return record


def uml_run(vipfile: str, members: list[str]) -> dict[str, Any]:
    """One timed ACTIVATE from standby in fresh namespaces (inside UML, real mode)."""
    with fresh_lan("hot") as (_lan, fe, _client), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.json")
        probe = _probe(fe, path, ["-f", vipfile, "-i", "eth0"])
        return _record(probe, members, path, " OK active")


def run(reps: int) -> dict[str, Any]:
    """Inside UML: `reps` timed ACTIVATEs."""
    t_start = time.monotonic()
    vips, members = TARGET_CASE
    tmp = tempfile.mkdtemp(prefix="bench-hot-")
    vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[vips])
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        r = uml_run(vipfile, members_of(members))
        lim = limit.measure(vipfile, expand(VIP_ENTRIES[vips]), members_of(members))
        r["limit"] = {k: v for k, v in lim.items() if k.endswith("_s")}
        runs.append(r)
        progress(
            f"hotspots {vips}x{members} rep {rep + 1}/{reps}: OK after "
            f"{r['wall_ok'] * 1000:.1f} ms (engine {r['handle'] * 1000:.1f} ms, output "
            f"{r['phases']['output'] * 1000:.1f} ms, {r['faults'].get('handle', 0)} faults)"
        )
    raw = {"case": f"{vips}x{members}", "uml": runs, "host": None}
    return result("hotspots", tables(runs, None), [], raw, time.monotonic() - t_start)


def host_runs(reps: int) -> list[dict[str, Any]] | None:
    """On the host in -m mode: the same ACTIVATE's Python work; None if it cannot activate."""
    iface = lan_iface()
    if iface is None:
        return None
    vips, members = TARGET_CASE
    with tempfile.TemporaryDirectory() as tmp:
        vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[vips])
        path = os.path.join(tmp, "record.json")
        options = ["-m", "-i", iface, "-f", vipfile]
        expect = f"vips={vips} members={members}"
        return [
            _record(_probe(None, path, options), FAKE_MEMBERS, path, expect) for _ in range(reps)
        ]


def host_profile() -> list[dict[str, Any]] | None:
    """cProfile of the same -m ACTIVATE on the host, in this process (its clock is cheap here).

    The rows are by own time; with -m the kernel is the in-memory one, so netlink encoding is
    missing from the list and memory.py stands in for it.
    """
    iface = lan_iface()
    if iface is None:
        return None
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "wb") as sink:
        vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[TARGET_CASE[0]])
        settings = parse_settings(["-m", "-i", iface, "-f", vipfile])
        kernel, notes = make_kernel(settings)
        helper = Helper(settings, kernel)
        helper.start(notes)
        out = Output(sink)
        profile = cProfile.Profile()
        profile.enable()
        out.write(helper.handle("00002 ACTIVATE " + " ".join(FAKE_MEMBERS)))
        profile.disable()
    rows = []
    entries = pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
    for (path, line, func), (_cc, calls, own, cumulative, _callers) in entries:
        rows.append(
            {
                "function": f"{_short(path)}:{line}({func})",
                "calls": calls,
                "own_s": own,
                "cumulative_s": cumulative,
            }
        )
    rows.sort(key=lambda r: -r["own_s"])
    return rows[:40]


def _short(path: str) -> str:
    """cgp_ipvs_helper/x.py, a site-packages module, or the bare name of anything else."""
    for marker in ("cgp_ipvs_helper/", "site-packages/"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker) :] if marker == "site-packages/" else path[i:]
    return os.path.basename(path)


def rebuild(
    res: dict[str, Any],
    host: list[dict[str, Any]] | None,
    profile: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Add the host's figures to the in-UML result (on the host, after the boot)."""
    if not res.get("ok"):
        return res
    res = dict(res)
    res["raw"] = {**res["raw"], "host": host, "host_profile": profile}
    built = tables(res["raw"]["uml"], host)
    if profile:
        top = Table(
            f"Hottest functions of the {TARGET_CASE[0]} x {TARGET_CASE[1]} ACTIVATE "
            "(cProfile on the host, -m mode, by own time)",
            ["function", "calls", "own ms", "cumulative ms"],
        )
        for row in profile[:TOP]:
            top.add(row["function"], row["calls"], ms(row["own_s"]), ms(row["cumulative_s"]))
        top.notes.append(
            "cProfile roughly doubles Python's run time; read the calls and the ranking. With "
            "-m the kernel is the in-memory one, so netlink encoding is not in this list."
        )
        built.append(top)
    res["tables"] = [t.to_dict() for t in built]
    return res


def _med(runs: list[dict[str, Any]] | None, *path: str) -> float | None:
    values = []
    for r in runs or []:
        node: Any = r
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            values.append(float(node))
    return median(values) if values else None


def tables(u: list[dict[str, Any]], h: list[dict[str, Any]] | None) -> list[Table]:
    vips, members = TARGET_CASE
    total = _med(u, "total") or 0.0
    phases = Table(
        f"Where the {vips} x {members} ACTIVATE spends its time",
        ["phase", "UML ms", "UML share", "UML page faults", "host ms (-m)"],
    )
    writes = _med(u, "output_writes")
    for key, label in PHASES:
        if key == "output" and writes is not None:
            label = f"{label}: {writes:.0f} write() call(s)"
        value = _med(u, "phases", key) or 0.0
        faults = _med(u, "faults", key)
        phases.add(
            label,
            ms(value),
            f"{value / total:.0%}" if total else "-",
            "" if faults is None else f"{faults:.0f}",
            ms(_med(h, "phases", key)) if h and key in IN_DRY_RUN else "-",
        )
    kernel = sum(_med(u, "phases", k) or 0.0 for k in ("ipvs", "addresses", "garp"))
    phases.add(
        "limit: the same kernel changes from prebuilt messages (bench/limit.py)",
        ms(_med(u, "limit", "total_s")),
        f"{(_med(u, 'limit', 'total_s') or 0.0) / total:.0%}" if total else "-",
        "",
        "-",
    )
    phases.add(
        "the kernel phases above less the limit: encoding, batching, their page faults",
        ms(kernel - (_med(u, "limit", "total_s") or 0.0)),
        "",
        "",
        "-",
    )
    faults = (_med(u, "faults", "handle") or 0.0) + (_med(u, "faults", "output") or 0.0)
    for label, key, fault_text in (
        ("engine + output: request read until the OK is written", "total", f"{faults:.0f}"),
        ("first gratuitous ARP leaves after", "first_garp", ""),
        ("as the reader sees it: ACTIVATE written -> OK read", "wall_ok", ""),
    ):
        host = ms(_med(h, key)) if key != "first_garp" else "-"
        phases.add(label, ms(_med(u, key)), "", fault_text, host)
    phases.notes += [
        f"Median of {len(u)} runs each. UML: real mode in fresh namespaces; host: -m mode "
        "(in-memory kernel, no netlink, no ARP), i.e. the helper's own Python work.",
        "bench.probe is the helper's own parts with a stopwatch (perf_counter) on its seams: a "
        "Kernel wrapper times each batch of one kind of operation, encoding included; the "
        "engine row is the rest of handle(). Page faults are the process's minor faults in "
        "that phase (heap growth).",
        "Where the rest beyond the limit goes: the Python work per real server (plan, encode, "
        "log line, for each of the 2,048), rendering and writing the "
        "3,331 lines, and the page faults of the memory all that takes, each of which costs "
        "tens of microseconds in user-mode Linux (The machine) against about 1-2 on a host.",
    ]
    parts = Table(
        f"The costly steps of the {vips} x {members} ACTIVATE timed alone",
        ["step", "items", "UML ms", "UML us each", "host us each"],
    )
    for key, label in COMPONENTS:
        parts.add(
            label,
            f"{_med(u, 'components', key, 'items') or 0:.0f}",
            ms(_med(u, "components", key, "seconds")),
            f"{_med(u, 'components', key, 'each_us') or 0:.1f}",
            f"{_med(h, 'components', key, 'each_us') or 0:.1f}" if h else "-",
        )
    lines = _med(u, "components", "lines") or 0.0
    size = _med(u, "components", "bytes") or 0.0
    parts.notes += [
        f"One ACTIVATE writes {lines:.0f} lines ({size / 1024:.0f} KiB). One write() per line "
        "costs lines x (a system call + waking the reader), and user-mode Linux charges far "
        "more for a system call or a page fault than a host does (see The machine).",
        "cProfile is not used inside UML: it reads the clock twice per Python call and every "
        "clock read is a system call there, which would bury the real costs.",
    ]
    return [phases, parts]
