"""Benchmark 4 (host, pipes only): what an idle helper costs, and how fast it answers.

The helper runs on the host in -m mode (it plans against an in-memory kernel and only writes
lines) with the shipped sysconfig/vipaddrs, as the active balancer of a 4-member group. Idle:
resident memory and CPU time (/proc/PID/schedstat, ns: utime counts 10 ms ticks) over the
window, refreshes and their ARP rounds included. Throughput: 20,000 pipelined lines, first byte
written -> last answer read; STATUS, INTF (the cheapest verb) and a Python loop that echoes each
line and flushes it, as the helper flushes every answer (the floor for a line protocol).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lab.driver import HelperProcess, host_options
from lab.uml import REPO_ROOT

from .report import Table, median, repeat, result, spread, under

VIPFILE = str(REPO_ROOT / "sysconfig" / "vipaddrs")
FAKE_MEMBERS = ["192.0.2.201", "192.0.2.202", "192.0.2.203"]  # text only: -m sends nothing
ECHO = "import sys\nout = sys.stdout.buffer\nfor line in sys.stdin.buffer:\n    out.write(line)\n"
ECHO += "    out.flush()\n"
VERBS = {"status": "STATUS", "intf": "INTF 1", "echo": None}


def throughput(verb: str | None, count: int) -> float:
    """Seconds from the first byte of `count` pipelined requests to the last answer read; no
    verb: the echo loop."""
    argv = [sys.executable, "-c", ECHO] if verb is None else None
    # answering before the clock starts (the echo too)
    with HelperProcess(None, *host_options(), "-f", VIPFILE, argv=argv, timed=True) as proc:
        lines = (f"{i:05d} {verb or 'STATUS'}\n".encode() for i in range(1, count + 1))
        return proc.pipelined(b"".join(lines), count)


def run_throughput(reps: int, count: int) -> dict[str, list[float]]:
    """Sequential runs: they are CPU-bound and must not share the CPU."""
    cases = {key: lambda v=verb: throughput(v, count) for key, verb in VERBS.items()}
    return repeat(reps, cases, lambda key, s: f"[host] throughput {key}: {s:.3f} s")


def idle(seconds: float) -> dict[str, Any]:
    """An active -m helper left alone for `seconds` (in a thread while the kernel benchmarks
    run: an idle process's CPU time and memory are its own)."""
    with HelperProcess(None, *host_options(), "-f", VIPFILE, timed=True) as proc:
        reply = proc.request("ACTIVATE " + " ".join(FAKE_MEMBERS), timeout=60)
        lines, t0 = 0, time.monotonic() + 3.0  # the GARP repeats at 1.1 and 2.2 s are not idle
        while time.monotonic() < t0:
            proc.lines(0.2)
        cpu0, faults0, kib = proc.usage()
        rss = [kib["VmRSS"]]
        while time.monotonic() < t0 + seconds:  # a sample at least once a second
            lines += len(proc.lines(min(1.0, t0 + seconds - time.monotonic())))
            rss.append(proc.usage()[2]["VmRSS"])
        cpu1, faults1, kib = proc.usage()
        elapsed = time.monotonic() - t0
    return {
        "role": "active" if " OK active" in reply else f"standby ({reply})",
        "seconds": elapsed,
        "cpu_s": cpu1 - cpu0,
        "rss_kib_max": max(rss),
        "hwm_kib": kib["VmHWM"],
        "minor_faults": faults1 - faults0,
        "lines_written": lines,
    }


def report(d: dict[str, Any] | str, rates: dict[str, list[float]], count: int) -> dict[str, Any]:
    """The two tables; `d` is the idle measurement or why it failed."""
    mem = Table(
        "Footprint of an idle helper (host, -m mode, sysconfig/vipaddrs, active, 4 members)",
        ["metric", "value", "target"],
    )
    targets = []
    if isinstance(d, str):
        mem.notes.append(f"idle measurement failed: {d}")
    else:
        rss, cpu = d["rss_kib_max"] / 1024, d["cpu_s"] / d["seconds"] * 100
        mem.add("resident memory (VmRSS), max over the window", f"{rss:.1f} MB", "< 40 MB")
        mem.add("peak resident memory since start (VmHWM)", f"{d['hwm_kib'] / 1024:.1f} MB", "")
        idle_cpu = f"{cpu:.4f} % ({d['cpu_s'] * 1000:.1f} ms)"
        mem.add(f"CPU over {d['seconds']:.0f} s idle", idle_cpu, "< 1 %")
        mem.add("lines written while idle (refresh + GARP rounds)", d["lines_written"], "")
        mem.add("page faults while idle", d["minor_faults"], "")
        mem.notes.append(
            f"Role during the window: {d['role']}; -t 15 (default), so about "
            f"{d['seconds'] / 15:.0f} refreshes, each re-announcing every VIP; sampled at least "
            "once a second while the kernel benchmarks ran (an idle process's CPU and memory are "
            "its own)."
        )
        targets = [
            under("footprint", "idle resident memory under 40 MB", rss, 40, "MB"),
            under("footprint", "idle CPU under 1 %", cpu, 1, "%", 4),
        ]
    speed = Table(
        f"Request throughput: {count:,} pipelined lines, first byte written -> last answer "
        "read (host)",
        ["process", "seconds", "min-max", "lines/s", "rate vs echo loop"],
    )
    med = {k: median(v) for k, v in rates.items()}
    labels = ["helper (-m), STATUS", "helper (-m), INTF (cheapest verb)"]
    for key, label in zip(VERBS, [*labels, "baseline: Python loop echoing each line, flushed"]):
        rate, vs_echo = f"{count / med[key]:,.0f}", f"{med['echo'] / med[key]:.0%}"
        speed.add(label, f"{med[key]:.3f}", spread(rates[key], 1, 3), rate, vs_echo)
    speed.notes.append(
        f"Median of {len(rates['status'])} runs, a fresh process each; the gap to the echo loop "
        "is the helper's own per-request work (parsing, dispatch, formatting)."
    )
    return result("footprint", [mem, speed], targets, idle=d, throughput_s=rates, lines=count)
