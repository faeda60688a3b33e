"""Benchmark (host, pipes only): what an idle helper costs, and how fast it answers; the helper in
-m mode (an in-memory kernel: it only writes lines) with the shipped sysconfig/vipaddrs."""

from __future__ import annotations

import sys
import time
from typing import Any

from lab.driver import HelperProcess, host_options
from lab.uml import REPO_ROOT

from .report import Table, Target, median, repeat, result, spread, under

VIPFILE = str(REPO_ROOT / "sysconfig" / "vipaddrs")
FAKE_MEMBERS = ["192.0.2.201", "192.0.2.202", "192.0.2.203"]  # text only: -m sends nothing
ECHO = "import sys\nout = sys.stdout.buffer\nfor line in sys.stdin.buffer:\n    out.write(line)\n"
ECHO += "    out.flush()\n"
VERBS = {  # key: (verb, label); no verb: the echo loop
    "status": ("STATUS", "helper (-m), STATUS"),
    "intf": ("INTF 1", "helper (-m), INTF (cheapest verb)"),
    "echo": (None, "baseline: Python loop echoing each line, flushed"),
}


def throughput(verb: str | None, count: int) -> float:
    """Seconds from the first byte of `count` pipelined requests to the last answer read."""
    argv = [sys.executable, "-c", ECHO] if verb is None else None
    # answering before the clock starts (the echo too)
    with HelperProcess(None, *host_options(), "-f", VIPFILE, argv=argv, timed=True) as proc:
        lines = (f"{i:05d} {verb or 'STATUS'}\n".encode() for i in range(1, count + 1))
        return proc.pipelined(b"".join(lines), count)


def run(reps: int, count: int, idle_s: float) -> dict[str, Any]:
    """On the host before the kernel benchmarks, the CPU-bound throughput runs one at a time."""
    cases = {key: lambda v=verb: throughput(v, count) for key, (verb, _) in VERBS.items()}
    rates = repeat(reps, cases, lambda key, s: f"[host] throughput {key}: {s:.3f} s")
    speed = Table(
        f"Request throughput: {count:,} pipelined lines, first byte written -> last answer "
        "read (host)",
        ["process", "seconds", "min-max", "lines/s", "rate vs echo loop"],
    )
    med = {k: median(v) for k, v in rates.items()}
    for key, (_, label) in VERBS.items():
        rate, vs_echo = f"{count / med[key]:,.0f}", f"{med['echo'] / med[key]:.0%}"
        speed.add(label, f"{med[key]:.3f}", spread(rates[key], 1, 3), rate, vs_echo)
    speed.notes.append(
        f"Median of {reps} runs, a fresh process each; the echo loop flushes each line as the "
        "helper flushes each answer (the floor of a line protocol): the gap to it is the "
        "helper's own work per request (parsing, dispatch, formatting)."
    )
    mem, targets = idle(idle_s)
    return result("footprint", [mem, speed], targets, throughput_s=rates, lines=count)


def idle(seconds: float) -> tuple[Table, list[Target]]:
    """An active -m helper left alone for `seconds`: its memory and CPU time."""
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
    role = "active" if " OK active" in reply else f"standby ({reply})"
    mb, cpu = max(rss) / 1024, (cpu1 - cpu0) / elapsed * 100
    mem = Table(
        "Footprint of an idle helper (host, -m mode, sysconfig/vipaddrs, active, 4 members)",
        ["metric", "value", "target"],
        notes=[
            f"Role during the window: {role}; -t 15 (default), so about {elapsed / 15:.0f} "
            "refreshes, each re-announcing every VIP; CPU from /proc/PID/schedstat, memory "
            "sampled at least once a second."
        ],
    )
    mem.add("resident memory (VmRSS), max over the window", f"{mb:.1f} MB", "< 40 MB")
    mem.add("peak resident memory since start (VmHWM)", f"{kib['VmHWM'] / 1024:.1f} MB", "")
    mem.add(
        f"CPU over {elapsed:.0f} s idle", f"{cpu:.4f} % ({(cpu1 - cpu0) * 1e3:.1f} ms)", "< 1 %"
    )
    mem.add("lines written while idle (refresh + GARP rounds)", lines, "")
    mem.add("page faults while idle", faults1 - faults0, "")
    return mem, [
        under("footprint", "idle resident memory under 40 MB", mb, 40, "MB"),
        under("footprint", "idle CPU under 1 %", cpu, 1, "%", 4),
    ]
