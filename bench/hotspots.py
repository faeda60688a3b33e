"""Where the time of the 256-VIP x 4-member ACTIVATE goes, to explain benchmark 1's figures.

bench.probe (the helper's own start-up and I/O, plus a stopwatch around each engine step) is
driven over its pipes exactly as the activation benchmark drives the helper:
- inside UML in real mode, in fresh namespaces (what benchmark 1 measures);
- on the host in -m mode (the same planning, logging and output on the host's CPU, against the
  in-memory kernel): the helper's own Python work, without user-mode Linux's price for system
  calls and page faults.
Each is also run with `--fast-logging` (bench/probe.py's fast paths for protocol.info and the
operations' shell rendering), the change the logging figures point at, to measure what it
would buy end to end. The in-UML half returns its tables; the host half (and a cProfile of the
same ACTIVATE on the host, where the clock is cheap) is added to them on the host (`rebuild`).
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
from tests.lab.driver import write_vipfile

from .activation import TARGET_CASE, VIP_ENTRIES, members_of
from .footprint import FAKE_MEMBERS, Proc, lan_iface
from .lab import PipeHelper, fresh_lan, progress
from .report import Table, median, result

MODES = ("normal", "fast")
PHASES = [
    ("observe", "observe: netlink dumps of addresses and IPVS, sysctl reads"),
    ("desired_state", "planner: desired state (services, real servers as attrs objects)"),
    ("plan", "planner: difference against the kernel, sorted"),
    ("encode", "netlink: encoding the requests (host: the in-memory kernel)"),
    ("ipvs", "netlink: IPVS requests, batched (generic netlink)"),
    ("addresses", "netlink: VIP addresses on eth0, batched (rtnetlink)"),
    ("garp", "gratuitous ARP round (2 frames per VIP)"),
    ("log", "logging: every operation rendered as a shell command info line"),
    ("engine_rest", "rest of the engine (parsing, members, session, reply)"),
    ("output", "output: info lines + OK to the pipe (cli.Output)"),
]
FAULT_KEYS = {"ipvs": "batch genl", "addresses": "batch rtnl", "encode": "execute_rest"}
NOT_IN_DRY_RUN = ("observe", "ipvs", "addresses", "garp")  # -m: an in-memory kernel
COMPONENTS = [
    ("render", "render each operation as a shell command (shlex.join)"),
    ("info", "make each an info line (protocol.info: per-character check, fit)"),
    ("info_fast", "what-if: protocol.info with a fast path for short printable text"),
    ("render_fast", "what-if: render with one regex check instead of shlex.quote per word"),
    ("encode", "encode each netlink request"),
    ("pipe_per_line", "output lines to a pipe: write + flush each line"),
    ("pipe_joined", "output lines to a pipe: join, encode, one write()"),
    ("pipe_buffered", "output lines to a pipe: writelines() into the 8 KiB buffer, one flush"),
    ("syscall_write", "one write() system call (1 byte to /dev/null)"),
    ("clock_read", "one clock read (time.perf_counter)"),
    ("page_fault", "one page fault (first touch of a fresh page)"),
]


def _probe_argv(result: str, mode: str, options: list[str]) -> list[str]:
    extra = ["--fast-logging"] if mode == "fast" else []
    return [sys.executable, "-m", "bench.probe", result, *extra, *options]


def uml_run(vipfile: str, members: list[str], mode: str) -> dict[str, Any]:
    """One timed ACTIVATE from standby in fresh namespaces (inside UML, real mode)."""
    with fresh_lan("hot") as (_lan, fe, _client), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.json")
        probe = PipeHelper(fe, argv=_probe_argv(path, mode, ["-f", vipfile, "-i", "eth0"]))
        try:
            probe.started(timeout=180)
            reply = probe.request("ACTIVATE " + " ".join(members), timeout=180)
            if " OK active" not in reply.line:
                raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
            probe.request("STATUS", timeout=180)  # answered once the record is written
            with open(path) as f:
                record: dict[str, Any] = json.load(f)
        finally:
            probe.kill()
    record["wall_ok"] = reply.answered - reply.sent
    return record


def run(reps: int) -> dict[str, Any]:
    """Inside UML: `reps` runs of each mode, alternating."""
    t_start = time.monotonic()
    vips, members = TARGET_CASE
    tmp = tempfile.mkdtemp(prefix="bench-hot-")
    vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[vips])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rep in range(reps):
        for mode in MODES:
            r = uml_run(vipfile, members_of(members), mode)
            runs[mode].append(r)
            progress(
                f"hotspots {vips}x{members} {mode} rep {rep + 1}/{reps}: OK after "
                f"{r['wall_ok'] * 1000:.1f} ms (engine {r['handle'] * 1000:.1f} ms, output "
                f"{r['phases']['output'] * 1000:.1f} ms, {r['faults'].get('handle', 0)} faults)"
            )
    raw = {"case": f"{vips}x{members}", "uml": runs, "host": None}
    return result("hotspots", tables(runs, None), [], raw, time.monotonic() - t_start)


def host_runs(reps: int) -> dict[str, list[dict[str, Any]]] | None:
    """On the host in -m mode: the same ACTIVATE's Python work; None if it cannot activate."""
    iface = lan_iface()
    if iface is None:
        return None
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        vipfile = write_vipfile(os.path.join(tmp, "vips"), VIP_ENTRIES[TARGET_CASE[0]])
        path = os.path.join(tmp, "record.json")
        for _ in range(reps):
            for mode in MODES:
                proc = Proc(_probe_argv(path, mode, ["-m", "-i", iface, "-f", vipfile]))
                try:
                    proc.ask("00001 INTF 1")
                    t0 = time.perf_counter()
                    reply = proc.ask("00002 ACTIVATE " + " ".join(FAKE_MEMBERS))
                    wall = time.perf_counter() - t0
                    if f"vips={TARGET_CASE[0]} members={TARGET_CASE[1]}" not in reply:
                        return None
                    proc.ask("00003 STATUS")
                    with open(path) as f:
                        record: dict[str, Any] = json.load(f)
                finally:
                    proc.stop()
                record["wall_ok"] = wall
                runs[mode].append(record)
    return runs


TOP = 15


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
    stats = pstats.Stats(profile)
    rows = []
    entries = stats.stats.items()  # type: ignore[attr-defined]
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
    host: dict[str, list[dict[str, Any]]] | None,
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
            top.add(
                row["function"],
                row["calls"],
                f"{row['own_s'] * 1000:.1f}",
                f"{row['cumulative_s'] * 1000:.1f}",
            )
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def tables(
    uml: dict[str, list[dict[str, Any]]], host: dict[str, list[dict[str, Any]]] | None
) -> list[Table]:
    vips, members = TARGET_CASE
    u, h = uml["normal"], (host or {}).get("normal")
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
        faults = _med(u, "faults", FAULT_KEYS.get(key, key))
        phases.add(
            label,
            _ms(value),
            f"{value / total:.0%}" if total else "-",
            "" if faults is None else f"{faults:.0f}",
            _ms(_med(h, "phases", key)) if h and key not in NOT_IN_DRY_RUN else "-",
        )
    faults = (_med(u, "faults", "handle") or 0.0) + (_med(u, "faults", "output") or 0.0)
    phases.add(
        "engine + output: request read until the OK is written",
        _ms(total),
        "",
        f"{faults:.0f}",
        _ms(_med(h, "total")),
    )
    phases.add("first gratuitous ARP leaves after", _ms(_med(u, "first_garp")), "", "", "-")
    phases.add(
        "as the reader sees it: ACTIVATE written -> OK read",
        _ms(_med(u, "wall_ok")),
        "",
        "",
        _ms(_med(h, "wall_ok")),
    )
    fast_u, fast_h = uml["fast"], (host or {}).get("fast")
    phases.add(
        "what-if, logging fast paths: logging phase",
        _ms(_med(fast_u, "phases", "log")),
        "",
        "",
        _ms(_med(fast_h, "phases", "log")),
    )
    phases.add(
        "what-if, logging fast paths: ACTIVATE written -> OK read",
        _ms(_med(fast_u, "wall_ok")),
        "",
        "",
        _ms(_med(fast_h, "wall_ok")),
    )
    phases.notes += [
        f"Median of {len(u)} runs each. UML: real mode in fresh namespaces; host: -m mode "
        "(in-memory kernel, no netlink, no ARP), i.e. the helper's own Python work.",
        "bench.probe is the helper's start-up and I/O with a stopwatch (perf_counter) around "
        "each engine step; page faults are the process's minor faults in that phase (heap "
        "growth; the encode row holds the rest of applying, gratuitous ARP included).",
        "what-if rows: the same runs with protocol.info and the operations' __str__ given the "
        "fast paths of the table below (bench/probe.py fast_logging); nothing else changed.",
    ]
    parts = Table(
        f"The costly steps of the {vips} x {members} ACTIVATE timed alone",
        ["step", "items", "UML ms", "UML us each", "host us each"],
    )
    for key, label in COMPONENTS:
        spent = _med(u, "components", key, "seconds")
        if spent is None:
            continue
        parts.add(
            label,
            f"{_med(u, 'components', key, 'items') or 0:.0f}",
            _ms(spent),
            _us(_med(u, "components", key, "each_us")),
            _us(_med(h, "components", key, "each_us")),
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
    same = [
        all(r["components"].get(k, False) for r in u)
        for k in ("info_fast_same", "render_fast_same")
    ]
    parts.notes.append(
        "The two what-if functions are in bench/probe.py (info_fast, render_fast); they give "
        f"the same text as the helper for every line of this ACTIVATE: "
        f"info {'yes' if same[0] else 'NO'}, render {'yes' if same[1] else 'NO'}."
    )
    return [phases, parts]
