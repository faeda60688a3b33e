"""The steering filters in a real kernel: our rtnetlink messages equal the printed tc commands;
a range's packets reach its owner's MAC before IPVS sees them, this host's own range reaches
IPVS marked (IPv4 and IPv6); the neighbours' MACs are read, resolved and follow a change; and
nobody else's qdisc or filter is touched.

Run inside user-mode Linux (lab.uml), which loads sch_ingress, cls_flower, act_gact,
act_skbmod, act_mirred and act_skbedit. (Its kernel has nf_tables without the ip/inet families,
so nftables cannot be tested here; see README, "Outgoing connections from a VIP".)
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.model import TcState
from cgp_ipvs_helper.plan.operations import Operation
from cgp_ipvs_helper.plan.steering import (
    TC_CHAIN,
    TC_PREF,
    MemberRange,
    RangeFilter,
    VipFilter,
    range_filters,
    vip_blocks,
)
from cgp_ipvs_helper.plan.tcops import AddClsact, AddFilter, DelFilter
from lab.lan import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.20"]
VIPS6 = ["2001:db8:10::", "2001:db8:10::1", "2001:db8:20::10"]
MEMBERS = [
    MemberRange("192.0.2.11", 50000, 54999, "2001:db8::11"),  # this host ("bal")
    MemberRange("192.0.2.12", 55000, 59999, "2001:db8::12"),
    MemberRange("192.0.2.13", 60000, 64999, "2001:db8::13"),  # its MAC unknown: dropped
]
SMAC = "02:00:00:00:00:0b"  # the lab's MAC of the first host at .11 on a LAN
MACS = {"192.0.2.12": "02:00:00:00:01:0c", "2001:db8::12": "02:00:00:00:01:0c"}


def ranges(macs=MACS, smac=SMAC) -> frozenset[RangeFilter]:
    local = MEMBERS[0]
    return range_filters(MEMBERS, macs, smac, local) | range_filters(
        MEMBERS, macs, smac, local, ipv6=True
    )


RANGES = ranges()
FILTERS = sorted(RANGES, key=str) + sorted(vip_blocks(VIPS + VIPS6), key=str)
FOREIGN = [
    "tc filter add dev eth0 ingress protocol ip pref 100 flower dst_ip 203.0.113.1 action drop",
    "tc filter add dev eth0 ingress protocol ip pref 49152 flower ip_proto tcp action pass",
]


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan("tcst", ipv6=True) as lan:
        yield lan


class Kernel:
    """The real-mode kernel of one host: every call runs inside the host's namespace."""

    def __init__(self, host: Host) -> None:
        self.host, self.kernel = host, NetlinkKernel()

    def apply(self, ops: list[Operation]) -> list[KernelError]:
        return self.host.call(self.kernel.apply_many, ops)

    def tc(self) -> TcState:
        """The qdisc and our filters (not the MACs: another test's)."""
        state = self.host.call(self.kernel.observe, frozenset(), "eth0")
        assert state.tc is not None
        return TcState(state.tc.ingress, state.tc.filters)


def adds(filters) -> list[Operation]:
    return [AddFilter("eth0", f) for f in filters]


def mine(filters) -> frozenset:
    return frozenset((f.pref, f.chain, f.handle, f) for f in filters)


def shown(host: Host) -> str:
    return host.run(["tc", "-d", "filter", "show", "dev", "eth0", "ingress"]).stdout


def sh(host: Host, commands: list[str]) -> None:
    host.run(["sh", "-ec", "\n".join(commands)])


def test_netlink_equals_printed_commands_and_reads_back(lan: Lan) -> None:
    by_netlink, by_shell = lan.add_host("a", "192.0.2.1"), lan.add_host("b", "192.0.2.2")
    k = Kernel(by_netlink)
    assert k.tc() == TcState(None, frozenset())
    ops = [AddClsact("eth0"), *adds(FILTERS)]
    assert k.apply(ops) == []
    sh(by_shell, [str(op) for op in ops])
    assert shown(by_netlink) == shown(by_shell)
    assert "dst_ip 198.51.100.10/31" in shown(by_netlink)
    assert "skbedit  mark 1128776528 pipe" in shown(by_netlink)
    assert "skbmod pipe set dmac 02:00:00:00:01:0c set smac 02:00:00:00:00:0b" in shown(by_netlink)
    assert shown(by_netlink).count("(Egress Redirect to device eth0) stolen") == 4
    assert shown(by_netlink).count("gact action drop") == 4
    assert "filter protocol ipv6 pref 65001 flower chain 0 handle 0x1 " in shown(by_netlink)
    assert "dst_ip 2001:db8:10::/127" in shown(by_netlink)
    assert k.tc() == TcState("clsact", mine(FILTERS))
    assert Kernel(by_shell).tc() == TcState("clsact", mine(FILTERS))
    # what exists is refused, as by tc
    assert [e.reason for e in k.apply([AddClsact("eth0"), *adds(FILTERS[:1])])] == [
        "File exists",
        "File exists",
    ]
    gone = [f for f in FILTERS if f.chain == 0]  # an IPv4 and an IPv6 VIP block
    dels = [DelFilter("eth0", f.pref, f.chain, f.handle) for f in gone]
    assert {f.ipv6 for f in gone} == {False, True}
    assert k.apply(dels) == []
    sh(by_shell, [str(op) for op in dels])
    assert shown(by_netlink) == shown(by_shell)
    kept = [f for f in FILTERS if f not in gone]
    assert k.tc() == TcState("clsact", mine(kept))
    assert [e.reason for e in k.apply(dels)] == ["No such file or directory"] * len(dels)


def test_a_preference_holds_one_protocol_so_ipv6_filters_have_their_own(lan: Lan) -> None:
    """Why the IPv6 filters sit at 65001: the kernel refuses an IPv6 filter at the preference
    of the IPv4 ones in the same chain (tc says so), and accepts it at another."""
    host = lan.add_host("a", "192.0.2.1")
    ipv4 = RangeFilter("tcp", 50000, 54999)
    sh(host, [str(AddClsact("eth0")), str(AddFilter("eth0", ipv4))])
    at_ipv4_pref = str(AddFilter("eth0", RangeFilter("udp", 50000, 54999, ipv6=True))).replace(
        "pref 65001", f"pref {TC_PREF}"
    )
    refused = host.run(["sh", "-c", at_ipv4_pref], check=False)
    assert refused.returncode != 0
    assert "Filter with specified priority/protocol not found" in refused.stderr
    assert Kernel(host).apply(adds(f for f in RANGES if f.ipv6)) == []


def test_foreign_qdisc_and_filters_are_untouched_and_changed_ones_are_found(lan: Lan) -> None:
    host = lan.add_host("a", "192.0.2.1")
    k = Kernel(host)
    assert k.apply(adds(FILTERS[:1]))[0].reason == "Invalid argument"  # no ingress qdisc yet
    host.run(["tc", "qdisc", "add", "dev", "eth0", "ingress"])  # an operator's plain ingress
    sh(host, FOREIGN)
    before = shown(host)
    assert k.tc() == TcState("ingress", frozenset())
    assert k.apply(adds(FILTERS)) == []
    # someone edits one of ours: it reads back as "not what we made", to be replaced
    changed = FILTERS[0]
    sh(host, [
        str(DelFilter("eth0", changed.pref, changed.chain, changed.handle)),
        f"tc filter add dev eth0 ingress protocol ip pref 65000 chain {TC_CHAIN} "
        f"handle {hex(changed.handle)} flower skip_hw ip_proto tcp dst_port 1-2 "
        "action skbedit mark 7",
    ])  # fmt: skip
    found = k.tc().filters
    assert found == mine(FILTERS[1:]) | {(changed.pref, changed.chain, changed.handle, None)}
    assert k.apply([DelFilter("eth0", *key) for *key, _ in found]) == []
    assert k.tc() == TcState("ingress", frozenset())
    assert shown(host) == before


@pytest.mark.parametrize("vip", ["198.51.100.10", "2001:db8:10::"], ids=["ipv4", "ipv6"])
def test_a_range_reaches_its_owner_before_ipvs_this_hosts_own_through_ipvs(
    lan: Lan, vip: str
) -> None:
    """On the balancer a port-0 service of the VIP schedules everything to fe3. A datagram to
    a port in fe2's range still reaches fe2, and leaves no connection entry: the filter sent it
    out to fe2's MAC before IPVS saw it. One to this host's own range reaches this host's
    socket through its firewall-mark service; one to a service port goes to fe3 as before."""
    bal, fe2 = lan.add_host("bal", "192.0.2.11"), lan.add_host("fe2", "192.0.2.12")
    fe3, client = lan.add_host("fe3", "192.0.2.13"), lan.add_host("client", "192.0.2.100")
    ipv6 = ":" in vip
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    six = ["-6"] if ipv6 else []
    if ipv6:
        bal.run(["ip", "-6", "address", "add", f"{vip}/128", "dev", "eth0", "nodad"])
        for fe in (fe2, fe3):
            fe.run(["ip", "-6", "address", "add", f"{vip}/128", "dev", "lo", "nodad"])
        service, fe3_server, own_server = f"[{vip}]:0", f"[{fe3.ip6}]:0", f"[{bal.ip6}]:0"
    else:
        bal.add_address(vip, dev="eth0")
        for fe in (fe2, fe3):
            fe.dr_real_server([vip])
        service, fe3_server, own_server = f"{vip}:0", fe3.ip, bal.ip
    ipvsadm(bal, "-A", "-u", service, "-s", "rr", "-p", "60")  # port 0: persistent
    ipvsadm(bal, "-a", "-u", service, "-r", fe3_server, "-g", "-w", "1")
    mark = str(MEMBERS[0].mark)
    ipvsadm(bal, "-A", "-f", mark, *six, "-s", "wlc")
    ipvsadm(bal, "-a", "-f", mark, *six, "-r", own_server, "-g", "-w", "100")
    macs = {fe2.ip: fe2.mac, str(fe2.ip6): fe2.mac}
    blocks = [VipFilter("198.51.100.10/32"), VipFilter("2001:db8:10::/128", 1)]
    filters = [*sorted(ranges(macs, bal.mac), key=str), *blocks]
    assert Kernel(bal).apply([AddClsact("eth0"), *adds(filters)]) == []
    at_fe2, at_fe3 = fe2.socket(family, socket.SOCK_DGRAM), fe3.socket(family, socket.SOCK_DGRAM)
    at_bal, sender = bal.socket(family, socket.SOCK_DGRAM), client.socket(family, socket.SOCK_DGRAM)
    try:
        at_fe2.bind((vip, 57000))
        at_bal.bind((vip, 52000))
        at_fe3.bind((vip, 5060))
        for sock in (at_fe2, at_bal, at_fe3):
            sock.settimeout(3)
        sender.sendto(b"to fe2", (vip, 57000))  # in fe2's range: out to fe2's MAC
        assert at_fe2.recv(100) == b"to fe2"
        assert ":57000" not in ipvsadm(bal, "-L", "-n", "-c"), "IPVS never saw it"
        sender.sendto(b"to the balancer", (vip, 52000))  # its own range: marked, local
        assert at_bal.recv(100) == b"to the balancer"
        sender.sendto(b"to a service", (vip, 5060))  # a service port: scheduled
        assert at_fe3.recv(100) == b"to a service"
    finally:
        for sock in (at_fe2, at_bal, at_fe3, sender):
            sock.close()
    stats = bal.run(
        ["tc", "-s", "filter", "show", "dev", "eth0", "ingress", "chain", str(TC_CHAIN)]
    ).stdout
    # the redirect and the mark acted on one datagram each (the redirect's two actions: twice)
    header = 40 if ipv6 else 20
    counted = [f"Sent {header + 8 + len(b'to fe2')} bytes 1 pkt"] * 2
    counted.append(f"Sent {header + 8 + len(b'to the balancer')} bytes 1 pkt")
    assert sorted(re.findall(r"Sent \d+ bytes [1-9]\d* pkt", stats)) == sorted(counted), stats


def test_neighbours_are_read_resolved_and_follow_a_change(lan: Lan) -> None:
    """The MACs the filters need: read from the neighbour table; a member missing from it is
    resolved by the kernel (NTF_USE) for the next read; this host's own address is never
    asked; and a member's new MAC, announced, is what the next read finds."""
    bal, fe2 = lan.add_host("bal", "192.0.2.11"), lan.add_host("fe2", "192.0.2.12")
    k = Kernel(bal)
    wanted = {bal.ip, fe2.ip, "192.0.2.99"}  # .99: nobody

    def read() -> dict[str, str]:
        state = bal.call(k.kernel.observe, frozenset(), "eth0", wanted)
        assert state.tc is not None and state.tc.mac == bal.mac
        return dict(state.tc.neighbours)

    assert read() == {}
    deadline = time.monotonic() + 3
    while read() != {fe2.ip: fe2.mac}:
        assert time.monotonic() < deadline, read()
        time.sleep(0.05)
    table = bal.run(["ip", "neigh", "show", "dev", "eth0"]).stdout
    assert "192.0.2.99" in table and bal.ip not in table, table
    new = "02:00:00:00:99:0c"
    fe2.run(["ip", "link", "set", "eth0", "address", new])
    time.sleep(1.1)  # the kernel takes no new MAC within 1 s of the last update (locktime)
    fe2.run(["arping", "-U", "-c", "1", "-I", "eth0", fe2.ip])
    deadline = time.monotonic() + 3
    while read() != {fe2.ip: new}:
        assert time.monotonic() < deadline, read()
        time.sleep(0.05)
