"""Benchmark (inside UML): ACTIVATE of a dual-stack group beside the same group without IPv6.

A real-mode helper in standby in a fresh namespace (IPv6 on the LAN), with the member map
giving every member's IPv6 address; the clock starts when ACTIVATE is written and stops at its
`OK` (IPVS programmed for both families, the VIPs on -i, the first announcement round out: a
gratuitous ARP pair per IPv4 VIP, one neighbour advertisement per IPv6 VIP). Target (issue 11):
a /24 plus a /120 with 4 members under 200 ms.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from tests.lab.driver import HelperProcess, write_vipfile
from tests.lab.group import expand

from .lab import fresh_lan, progress
from .report import Table, Target, median, ms, result, spread

CASES = {"/24": ["203.0.113.0/24"], "/24 + /120": ["203.0.113.0/24", "2001:db8:10::/120"]}
MEMBERS = 4
TARGET_MS = 200.0


def member_map(path: str) -> str:
    """fe (192.0.2.11) and three LAN addresses nobody holds, each with an IPv6 address."""
    with open(path, "w") as f:
        for i in range(MEMBERS):
            f.write(f"192.0.2.{11 + i} {50000 + i * 1000}-{50999 + i * 1000} 2001:db8::{11 + i}\n")
    return path


def measure(vipfile: str, members: str, vips: int) -> float:
    """One ACTIVATE of a started helper in fresh namespaces: seconds to its OK."""
    with fresh_lan("dual", ipv6=True) as (_lan, fe, _client):
        helper = HelperProcess(fe, "-f", vipfile, "-i", "eth0", "--member-map", members, timed=True)
        try:
            helper.wait_started(timeout=180)
            listed = " ".join(f"192.0.2.{11 + i}" for i in range(MEMBERS))
            reply = helper.exchange(f"ACTIVATE {listed}", timeout=180)
            expected = f"OK active vips={vips} members={MEMBERS}"
            if not reply.line.endswith(expected):
                raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
            return reply.seconds
        finally:
            helper.kill()


def run(reps: int) -> dict[str, Any]:
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bench-dual-")
    members = member_map(os.path.join(tmp, "members"))
    oks: dict[str, list[float]] = {name: [] for name in CASES}
    for rep in range(reps):
        for name, entries in CASES.items():
            vipfile = write_vipfile(os.path.join(tmp, f"vips{len(entries)}"), entries)
            oks[name].append(measure(vipfile, members, len(expand(entries))))
            progress(
                f"dualstack {name} x {MEMBERS} rep {rep + 1}/{reps}: OK {ms(oks[name][-1])} ms"
            )
    table = Table(
        f"Dual-stack activation (inside user-mode Linux): ACTIVATE -> OK, {MEMBERS} members",
        ["VIPs", "count", "OK ms"],
    )
    for name, entries in CASES.items():
        table.add(
            name, len(expand(entries)), f"{ms(median(oks[name]))} ({spread(oks[name], 1000)})"
        )
    table.notes.append(
        f"Median of {reps} runs (min-max in brackets), each in fresh namespaces with IPv6 on the "
        "LAN and the member map giving all 4 members an IPv6 address (fe and 3 LAN addresses "
        "nobody holds); the OK covers IPVS for both families, the VIPs on eth0 and the first "
        "announcement round (2 ARP frames per IPv4 VIP, 1 neighbour advertisement per IPv6 VIP)."
    )
    dual = median(oks["/24 + /120"])
    target = Target(
        "dualstack",
        f"a /24 plus a /120 x {MEMBERS} members: OK under {TARGET_MS:.0f} ms",
        f"< {TARGET_MS:.0f} ms",
        f"{ms(dual)} ms",
        dual * 1000 < TARGET_MS,
    )
    raw = {"reps": reps, "ok_s": oks}
    return result("dualstack", [table], [target], raw, time.monotonic() - t_start)
