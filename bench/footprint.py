"""Benchmark 4 (host, pipes only): what an idle helper costs, and how fast it answers.

The helper runs on the host in -m mode (nothing is changed and nothing is sent: -m plans
against an in-memory copy of the kernel and only writes lines) with the shipped example VIP file
sysconfig/vipaddrs, as the active balancer of a 4-member group.

- Idle: resident memory (VmRSS, peak VmHWM) and CPU time (/proc/PID/schedstat, in ns) over the
  idle window, refreshes every 15 s (-t default) and their gratuitous ARP rounds included.
- Throughput: 20,000 pipelined STATUS lines, from the first byte written until the last response
  is read. Baselines: the same for INTF (the helper's cheapest verb: the cost of its line
  handling alone) and a trivial Python loop that echoes each line and flushes it, as the helper
  flushes every line (the floor for any Python line-protocol process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

from tests.lab.driver import HelperProcess
from tests.lab.uml import REPO_ROOT

from .report import Table, Target, median, result, spread

VIPFILE = str(REPO_ROOT / "sysconfig" / "vipaddrs")
FAKE_MEMBERS = ["192.0.2.201", "192.0.2.202", "192.0.2.203"]  # text only: -m sends nothing
ECHO = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "for line in sys.stdin.buffer:\n"
    "    out.write(line)\n"
    "    out.flush()\n"
)
TARGET_RSS_MB = 40.0
TARGET_CPU_PCT = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def lan_iface() -> str | None:
    """An interface with an IPv4 address other than loopback: the helper's -i (self's address)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "address", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        words = line.split()
        if len(words) > 3 and words[1] != "lo" and not words[3].startswith("127."):
            return words[1].split("@")[0]
    return None


def helper(*args: str) -> HelperProcess:
    iface = lan_iface() or "lo"
    return HelperProcess(None, "-m", "-i", iface, *args, timed=True)


def throughput(kind: str, verb: str, count: int) -> float:
    """Seconds from the first byte of `count` pipelined requests to the last response read."""
    if kind == "echo":
        proc = HelperProcess(None, argv=[sys.executable, "-c", ECHO], timed=True)
    else:
        proc = helper("-f", VIPFILE)
    try:
        proc.wait_started(timeout=60)  # started and answering before the clock (the echo too)
        payload = b"".join(f"{i:05d} {verb}\n".encode() for i in range(1, count + 1))

        def feed() -> None:
            view = memoryview(payload)
            while view:
                view = view[os.write(proc.stdin, view) :]

        writer = threading.Thread(target=feed, daemon=True)
        t0 = time.perf_counter()
        writer.start()
        answered = 0
        while answered < count:
            got = proc.read_raw(60.0)
            if not got:
                raise TimeoutError(f"{answered} of {count} answers after 60 s of silence")
            answered += sum(1 for raw in got if raw[:1].isdigit())
        spent = time.perf_counter() - t0
        writer.join(10)
        return spent
    finally:
        proc.kill()


def _stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, minor faults) of a single-threaded process.

    CPU time from /proc/PID/schedstat (nanoseconds) where the kernel has it: utime+stime count
    whole clock ticks (10 ms), too coarse for an idle process.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            cpu = int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return cpu, int(fields[7])


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Idle(threading.Thread):
    """An active -m helper left alone for `seconds`, sampled once a second (runs in a thread,
    so the kernel benchmarks can run meanwhile: an idle process's CPU time and memory do not
    depend on what else the machine does)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(name="idle-footprint", daemon=True)
        self.seconds = seconds
        self.data: dict[str, Any] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.data = self._measure()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _measure(self) -> dict[str, Any]:
        proc = helper("-f", VIPFILE)
        try:
            proc.wait_started(timeout=60)
            reply = proc.request("ACTIVATE " + " ".join(FAKE_MEMBERS), timeout=60)
            role = "active" if " OK active" in reply else f"standby ({reply})"
            settle = time.monotonic() + 3.0  # the GARP repeats at 1.1 and 2.2 s are not idle
            while time.monotonic() < settle:
                proc.lines(0.2)
            pid = proc.proc.pid
            cpu0, faults0 = _stat(pid)
            t0 = time.monotonic()
            rss: list[int] = []
            lines = 0
            next_sample = t0
            while time.monotonic() < t0 + self.seconds:
                lines += len(proc.lines(max(0.0, next_sample - time.monotonic())))
                if time.monotonic() >= next_sample:
                    rss.append(_status_kib(pid)["VmRSS"])
                    next_sample += 1.0
            cpu1, faults1 = _stat(pid)
            elapsed = time.monotonic() - t0
            status = _status_kib(pid)
        finally:
            proc.kill()
        cpu_s = cpu1 - cpu0
        return {
            "role": role,
            "seconds": elapsed,
            "cpu_s": cpu_s,
            "cpu_pct": cpu_s / elapsed * 100,
            "rss_kib_max": max(rss),
            "rss_kib_median": median([float(r) for r in rss]),
            "hwm_kib": status["VmHWM"],
            "minor_faults": faults1 - faults0,
            "lines_written": lines,
            "samples": len(rss),
        }


def run_throughput(reps: int, count: int) -> dict[str, list[float]]:
    """Throughput runs (sequential: they are CPU-bound and must not share the CPU)."""
    samples: dict[str, list[float]] = {"status": [], "intf": [], "echo": []}
    for _ in range(reps):
        samples["status"].append(throughput("helper", "STATUS", count))
        samples["intf"].append(throughput("helper", "INTF 1", count))
        samples["echo"].append(throughput("echo", "STATUS", count))
    return samples


def report(
    idle: Idle,
    rates: dict[str, list[float]],
    count: int,
    seconds: float,
) -> dict[str, Any]:
    tables: list[Table] = []
    targets: list[Target] = []
    d = idle.data
    mem = Table(
        "Footprint of an idle helper (host, -m mode, sysconfig/vipaddrs, active, 4 members)",
        ["metric", "value", "target"],
    )
    if idle.error:
        mem.notes.append(f"idle measurement failed: {idle.error}")
    else:
        rss_mb = d["rss_kib_max"] / 1024
        mem.add("resident memory (VmRSS), max over the window", f"{rss_mb:.1f} MB", "< 40 MB")
        mem.add("peak resident memory since start (VmHWM)", f"{d['hwm_kib'] / 1024:.1f} MB", "")
        mem.add(
            f"CPU over {d['seconds']:.0f} s idle",
            f"{d['cpu_pct']:.4f} % ({d['cpu_s'] * 1000:.1f} ms)",
            "< 1 %",
        )
        mem.add("lines written while idle (refresh + GARP rounds)", str(d["lines_written"]), "")
        mem.add("page faults while idle", str(d["minor_faults"]), "")
        mem.notes.append(
            f"Role during the window: {d['role']}; -t 15 (default), so the window holds about "
            f"{d['seconds'] / 15:.0f} refreshes, each re-announcing every VIP. Sampled once a "
            "second, while the kernel benchmarks ran, if any (an idle process's CPU time and "
            "memory are its own)."
        )
        targets += [
            Target(
                "footprint",
                f"idle resident memory under {TARGET_RSS_MB:.0f} MB",
                f"< {TARGET_RSS_MB:.0f} MB",
                f"{rss_mb:.1f} MB",
                rss_mb < TARGET_RSS_MB,
            ),
            Target(
                "footprint",
                f"idle CPU under {TARGET_CPU_PCT:g} %",
                f"< {TARGET_CPU_PCT:g} %",
                f"{d['cpu_pct']:.4f} %",
                d["cpu_pct"] < TARGET_CPU_PCT,
            ),
        ]
    tables.append(mem)
    speed = Table(
        f"Request throughput: {count:,} pipelined lines, first byte written -> last answer read "
        "(host)",
        ["process", "seconds", "min-max", "lines/s", "rate vs echo loop"],
    )
    med = {k: median(v) for k, v in rates.items()}
    labels = [
        ("status", "helper (-m), STATUS"),
        ("intf", "helper (-m), INTF (cheapest verb)"),
        ("echo", "baseline: Python loop echoing each line, flushed"),
    ]
    for key, label in labels:
        speed.add(
            label,
            f"{med[key]:.3f}",
            spread(rates[key], 1, 3),
            f"{count / med[key]:,.0f}",
            f"{med['echo'] / med[key]:.0%}",
        )
    speed.notes.append(
        f"Median of {len(rates['status'])} runs, a fresh process each. The echo loop reads and "
        "writes the same lines and flushes each answer as the helper does, so the gap to it is "
        "the helper's own per-request work (parsing, dispatch, formatting)."
    )
    tables.append(speed)
    raw = {
        "idle": d,
        "idle_error": idle.error,
        "throughput_s": rates,
        "lines": count,
    }
    return result("footprint", tables, targets, raw, seconds)
