"""Benchmark (inside UML): ACTIVATE of a dual-stack group beside the same group without IPv6."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lab.driver import member_map, write_vipfile
from lab.standby import activate, members_of, standby, vips_in

from .report import Table, median, mm, ms, repeat, result, under

CASES = {"/24": ["203.0.113.0/24"], "/24 + /120": ["203.0.113.0/24", "2001:db8:10::/120"]}
MEMBERS = 4


def run(reps: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-dual-")
    members = os.path.join(tmp, "members")
    six = [(ip, f"2001:db8::{11 + i}") for i, ip in enumerate(members_of(MEMBERS))]
    Path(members).write_text(member_map(six, width=1000))  # fe and 3 addresses nobody holds
    files = {name: write_vipfile(f"{tmp}/vips{len(e)}", e) for name, e in CASES.items()}

    def ok(vipfile: str) -> float:
        with standby("dual", vipfile, "--member-map", members, ipv6=True) as (helper, _, _):
            return activate(helper, members_of(MEMBERS), len(vips_in(vipfile))).seconds

    cases = {name: lambda f=f: ok(f) for name, f in files.items()}
    oks = repeat(reps, cases, lambda name, s: f"dualstack {name} x {MEMBERS}: OK {ms(s)} ms")
    table = Table(
        f"Dual-stack activation (inside user-mode Linux): ACTIVATE -> OK, {MEMBERS} members",
        ["VIPs", "count", "OK ms"],
    )
    for name, vipfile in files.items():
        table.add(name, len(vips_in(vipfile)), mm(oks[name]))
    part = median(oks["/24 + /120"]) - median(oks["/24"])
    table.add("the /120's part (difference of the medians)", 256, ms(part))
    table.notes.append(
        f"Median of {reps} runs (min-max in brackets), from standby in fresh namespaces with "
        "IPv6 on the LAN, a member map giving every member an IPv6 address; the OK covers IPVS "
        "for both families, the VIPs on eth0 and the first announcement round (2 ARP frames per "
        "IPv4 VIP, 1 neighbour advertisement per IPv6 VIP)."
    )
    name = f"a /24 plus a /120 x {MEMBERS} members: OK under 200 ms"
    target = under("dualstack", name, median(oks["/24 + /120"]) * 1000, 200, "ms")
    return result("dualstack", [table], [target], ok_s=oks)
