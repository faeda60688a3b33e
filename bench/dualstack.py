"""Benchmark (inside UML): ACTIVATE of a dual-stack group beside the same group without IPv6,
and the kernel's own cost of adding VIPs to eth0 at each count (`kernel_cost`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.kernel.netlink.wire import U32, nla
from cgp_ipvs_helper.plan.model import Address
from cgp_ipvs_helper.plan.operations import AddAddress
from lab.driver import member_map, write_vipfile
from lab.lan import Lan, unique
from lab.netns import in_netns
from lab.standby import FE_IP, activate, members_of, standby, vips_in

from .report import Table, median, mm, ms, repeat, result, under

CASES = {"/24": ["203.0.113.0/24"], "/24 + /120": ["203.0.113.0/24", "2001:db8:10::/120"]}
MEMBERS = 4
# VIPs added to eth0: (family, count, the same VIPs on lo first as on every member, each IPv6
# one flagged IFA_F_NOPREFIXROUTE); IPv6 ones as bench/membership.py makes them, /120s one per /64
KERNEL_CASES = [
    (f, n, True, False) for f, n in ((4, 256), (4, 512), (6, 256), (6, 1024), (6, 3584))
]
KERNEL_CASES += [(6, 3584, False, False), (6, 3584, True, True)]
IFA_FLAGS, IFA_F_NODAD, IFA_F_NOPREFIXROUTE = 8, 0x02, 0x200


def _vips(family: int, count: int) -> list[str]:
    if family == 4:
        return [f"{('203.0.113', '198.51.100')[i // 256]}.{i % 256}" for i in range(count)]
    return [f"2001:db8:10:{i // 256:x}::{i % 256:x}" for i in range(count)]


def kernel_cost(family: int, count: int, on_lo: bool, noprefixroute: bool) -> float:
    """Seconds the kernel takes to add `count` VIPs to eth0 (the helper's requests in one batch,
    the system calls alone timed), in a fresh namespace; with `on_lo` the same VIPs on lo first
    (a standby's); with `noprefixroute` each IPv6 address also flagged IFA_F_NOPREFIXROUTE."""
    vips = _vips(family, count)
    flags = nla(IFA_FLAGS, U32.pack(IFA_F_NODAD | IFA_F_NOPREFIXROUTE)) if noprefixroute else b""
    with Lan(unique("kcost"), ipv6=True) as lan, in_netns(lan.add_host("fe", FE_IP).ns):
        kernel = NetlinkKernel()
        try:
            if on_lo:
                kernel.apply_many([AddAddress(Address(ip, "lo")) for ip in vips])
            requests = [kernel._route.request(Address(ip, "eth0"), True) for ip in vips]
            batch = [(mtype, f, body + flags) for mtype, f, body in requests]
            t0 = time.perf_counter()
            failed = kernel._route.batch(batch)
            spent = time.perf_counter() - t0
        finally:
            kernel.close()
    if failed:
        raise RuntimeError(f"the kernel refused {len(failed)} addresses")
    return spent


def run(reps: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-dual-")
    members = Path(tmp, "members")
    six = [(ip, f"2001:db8::{11 + i}") for i, ip in enumerate(members_of(MEMBERS))]
    members.write_text(member_map(six, width=1000))  # fe and 3 addresses nobody holds
    files = {name: write_vipfile(f"{tmp}/vips{len(e)}", e) for name, e in CASES.items()}

    def ok(vipfile: str) -> float:
        with standby("dual", vipfile, "--member-map", str(members), ipv6=True) as (helper, _, _):
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
    costly = {c: (lambda c=c: kernel_cost(*c)) for c in KERNEL_CASES}
    costs = repeat(reps, costly, lambda c, s: f"dualstack kernel cost {c}: {ms(s)} ms")
    return result("dualstack", [table, cost_table(costs, reps)], [target], ok_s=oks)


def cost_table(costs: dict[tuple[int, int, bool, bool], list[float]], reps: int) -> Table:
    table = Table(
        "The kernel's cost of adding VIPs to eth0, one batch as the helper sends it (inside "
        "user-mode Linux)",
        "family | VIPs added | the same VIPs on lo first | flags | ms | us each | "
        "us each / 256's".split(" | "),
    )
    base = {f: median(costs[f, 256, True, False]) / 256 for f in (4, 6)}
    for (family, count, on_lo, bare), runs in costs.items():
        each = median(runs) / count
        flags = "nodad noprefixroute" if bare else ("nodad" if family == 6 else "")
        cells = [mm(runs), f"{each * 1e6:.1f}", f"{each / base[family]:.1f}x"]
        table.add(f"IPv{family}", f"{count:,}", "yes" if on_lo else "no", flags, *cells)
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each in a fresh namespace: the "
        "addresses' requests built first, then sent as the helper sends them (datagrams of up "
        "to 1,024 requests, each acked once), the system calls alone timed. IPv6 VIPs are "
        "/128s in /120s, one /120 per /64 (as the membership benchmark's).",
        "An IPv4 address costs the kernel the same at any count; an IPv6 one more the more IPv6 "
        "addresses the namespace holds on any device (hence the row without the copies on lo): "
        "in Linux 6.1 each one added (inet6_addr_add) ends with addrconf_verify_rtnl(), a walk "
        "of every IPv6 address of the namespace checking lifetimes even where all are "
        "permanent, dearer still per address once thousands no longer fit the CPU's caches. No "
        "flag of the request avoids it: the addresses are already permanent and nodad (no "
        "duplicate address detection), and IFA_F_NOPREFIXROUTE (no /128 route per address) "
        "leaves the growth as it is (its row), so the helper does not use it. A kernel change "
        'proposed on netdev in December 2024 ("Do not invoke addrconf_verify_rtnl '
        'unnecessarily") skips the walk for permanent addresses.',
    ]
    return table
