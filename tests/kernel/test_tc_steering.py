"""The steering filters in a real kernel: our rtnetlink messages equal the printed tc commands,
the mark they set reaches IPVS (IPv4 and IPv6), and nobody else's qdisc or filter is touched.

Run inside user-mode Linux (lab.uml), which loads sch_ingress, cls_flower, act_skbedit and
act_gact. (Its kernel has nf_tables without the ip/inet families, so nftables cannot be tested
here; see README, "Outgoing connections from a VIP".)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.model import TcState
from cgp_ipvs_helper.plan.operations import AddClsact, AddFilter, DelFilter, Operation
from cgp_ipvs_helper.plan.steering import (
    TC_CHAIN,
    TC_PREF,
    MemberRange,
    RangeFilter,
    VipFilter,
    range_filters,
    vip_blocks,
)
from lab.lan import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.20"]
VIPS6 = ["2001:db8:10::", "2001:db8:10::1", "2001:db8:20::10"]
MEMBERS = [
    MemberRange("192.0.2.11", 50000, 54999, "2001:db8::11"),
    MemberRange("192.0.2.12", 55000, 59999, "2001:db8::12"),
]
RANGES = range_filters(MEMBERS) | range_filters(MEMBERS, ipv6=True)
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
        state = self.host.call(self.kernel.observe, frozenset(), "eth0")
        assert state.tc is not None
        return state.tc


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
    assert "skbedit  mark 1128781528 pipe" in shown(by_netlink)
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
    assert Kernel(host).apply(adds(range_filters(MEMBERS, ipv6=True))) == []


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


@pytest.mark.parametrize(
    ("vip", "wire_bytes"),
    [("198.51.100.10", 20 + 8 + 6), ("2001:db8:10::", 40 + 8 + 6)],
    ids=["ipv4", "ipv6"],
)
def test_marks_reach_ipvs_fwmark_services(lan: Lan, vip: str, wire_bytes: int) -> None:
    """A datagram to a VIP port in fe2's range, reaching the balancer, is sent on to fe2, by
    the firewall-mark service of the datagram's family (both families' filters in place)."""
    bal, fe2 = lan.add_host("bal", "192.0.2.11"), lan.add_host("fe2", "192.0.2.12")
    client = lan.add_host("client", "192.0.2.100")
    ipv6 = ":" in vip
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    six = ["-6"] if ipv6 else []
    if ipv6:
        bal.run(["ip", "-6", "address", "add", f"{vip}/128", "dev", "eth0", "nodad"])
        fe2.run(["ip", "-6", "address", "add", f"{vip}/128", "dev", "lo", "nodad"])
        real_server = f"[{fe2.ip6}]:0"
    else:
        bal.add_address(vip, dev="eth0")
        fe2.dr_real_server([vip])
        real_server = fe2.ip
    mark = str(MEMBERS[1].mark)
    ipvsadm(bal, "-A", "-f", mark, *six, "-s", "wlc")
    ipvsadm(bal, "-a", "-f", mark, *six, "-r", real_server, "-g", "-w", "100")
    blocks = [VipFilter("198.51.100.10/32"), VipFilter("2001:db8:10::/128", 1)]
    filters = [*sorted(RANGES, key=str), *blocks]
    assert Kernel(bal).apply([AddClsact("eth0"), *adds(filters)]) == []
    at_fe2, at_bal = fe2.socket(family, socket.SOCK_DGRAM), bal.socket(family, socket.SOCK_DGRAM)
    sender = client.socket(family, socket.SOCK_DGRAM)
    try:
        at_fe2.bind((vip, 57000))
        at_bal.bind((vip, 5060))
        for sock in (at_fe2, at_bal):
            sock.settimeout(3)
        sender.sendto(b"to fe2", (vip, 57000))  # in fe2's range: marked, forwarded
        sender.sendto(b"to the balancer", (vip, 5060))  # a service port: not marked
        assert at_fe2.recv(100) == b"to fe2"
        assert at_bal.recv(100) == b"to the balancer"
    finally:
        for sock in (at_fe2, at_bal, sender):
            sock.close()
    conns = " ".join(ipvsadm(bal, "-L", "-n", "-c").split())
    if ipv6:
        assert f"[{vip}]:57000 [{fe2.ip6}]:57000" in conns, conns
    else:
        assert f"{vip}:57000 {fe2.ip}:57000" in conns, conns
    stats = bal.run(
        ["tc", "-s", "filter", "show", "dev", "eth0", "ingress", "chain", str(TC_CHAIN)]
    )
    assert stats.stdout.count(" 1 pkt") == 1, stats.stdout  # one filter marked one datagram
    assert f"Sent {wire_bytes} bytes 1 pkt" in stats.stdout, stats.stdout
