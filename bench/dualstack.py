"""Benchmark (inside UML): ACTIVATE of a dual-stack group beside the same group without IPv6.

From standby in fresh namespaces (IPv6 on the LAN), with the member map giving every member an
IPv6 address: ACTIVATE -> OK (IPVS for both families, the VIPs on -i, the first announcement
round). Target (issue 11): a /24 plus a /120 with 4 members under 200 ms.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tests.lab.driver import write_vipfile

from .lab import activate, members_of, progress, standby, vips_in
from .report import Table, median, mm, ms, result, under

CASES = {"/24": ["203.0.113.0/24"], "/24 + /120": ["203.0.113.0/24", "2001:db8:10::/120"]}
MEMBERS = 4


def run(reps: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-dual-")
    members = os.path.join(tmp, "members")
    with open(members, "w") as f:  # fe and three LAN addresses nobody holds, each with IPv6
        for i, ip in enumerate(members_of(MEMBERS)):
            f.write(f"{ip} {50000 + i * 1000}-{50999 + i * 1000} 2001:db8::{11 + i}\n")
    files = {
        name: write_vipfile(os.path.join(tmp, f"vips{len(e)}"), e) for name, e in CASES.items()
    }
    oks: dict[str, list[float]] = {name: [] for name in CASES}
    for rep in range(reps):
        for name, vipfile in files.items():
            opts = ("--member-map", members)
            with standby("dual", vipfile, *opts, ipv6=True) as (helper, _fe, _client):
                reply = activate(helper, members_of(MEMBERS), len(vips_in(vipfile)))
            oks[name].append(reply.seconds)
            progress(
                f"dualstack {name} x {MEMBERS} rep {rep + 1}/{reps}: OK {ms(reply.seconds)} ms"
            )
    table = Table(
        f"Dual-stack activation (inside user-mode Linux): ACTIVATE -> OK, {MEMBERS} members",
        ["VIPs", "count", "OK ms"],
    )
    for name, vipfile in files.items():
        table.add(name, len(vips_in(vipfile)), mm(oks[name]))
    table.notes.append(
        f"Median of {reps} runs (min-max in brackets), from standby in fresh namespaces with "
        "IPv6 on the LAN, the member map giving all 4 members an IPv6 address; the OK covers "
        "IPVS for both families, the VIPs on eth0 and the first announcement round (2 ARP frames "
        "per IPv4 VIP, 1 neighbour advertisement per IPv6 VIP)."
    )
    name = f"a /24 plus a /120 x {MEMBERS} members: OK under 200 ms"
    target = under("dualstack", name, median(oks["/24 + /120"]) * 1000, 200, "ms")
    return result("dualstack", [table], [target], ok_s=oks)
