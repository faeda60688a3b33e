"""The steering filters in a real kernel: our rtnetlink messages equal the printed tc commands,
the mark they set reaches IPVS, and nobody else's qdisc or filter is touched.

Run inside user-mode Linux (tests.lab.uml), which loads sch_ingress, cls_flower, act_skbedit and
act_gact. (Its kernel has nf_tables without the ip/inet families, so nftables cannot be tested
here; see README, "Outgoing connections from a VIP".)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.model import TcState
from cgp_ipvs_helper.netlink import NetlinkKernel
from cgp_ipvs_helper.operations import AddClsact, AddFilter, DelFilter, Operation
from cgp_ipvs_helper.steering import (
    TC_CHAIN,
    MemberRange,
    VipFilter,
    range_filters,
    vip_blocks,
)
from tests.lab.lan import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.20"]
MEMBERS = [MemberRange("192.0.2.11", 50000, 54999), MemberRange("192.0.2.12", 55000, 59999)]
FILTERS = sorted(range_filters(MEMBERS), key=str) + sorted(vip_blocks(VIPS), key=str)
FOREIGN = [
    "tc filter add dev eth0 ingress protocol ip pref 100 flower dst_ip 203.0.113.1 action drop",
    "tc filter add dev eth0 ingress protocol ip pref 49152 flower ip_proto tcp action pass",
]


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan("tcst") as lan:
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
    return frozenset((f.chain, f.handle, f) for f in filters)


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
    assert k.tc() == TcState("clsact", mine(FILTERS))
    assert Kernel(by_shell).tc() == TcState("clsact", mine(FILTERS))
    # what exists is refused, as by tc
    assert [e.reason for e in k.apply([AddClsact("eth0"), *adds(FILTERS[:1])])] == [
        "File exists",
        "File exists",
    ]
    last = FILTERS[-1]
    assert k.apply([DelFilter("eth0", last.chain, last.handle)]) == []
    sh(by_shell, [str(DelFilter("eth0", last.chain, last.handle))])
    assert shown(by_netlink) == shown(by_shell)
    assert k.tc() == TcState("clsact", mine(FILTERS[:-1]))
    assert (
        k.apply([DelFilter("eth0", last.chain, last.handle)])[0].reason
        == "No such file or directory"
    )


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
        str(DelFilter("eth0", changed.chain, changed.handle)),
        f"tc filter add dev eth0 ingress protocol ip pref 65000 chain {TC_CHAIN} "
        f"handle {hex(changed.handle)} flower skip_hw ip_proto tcp dst_port 1-2 "
        "action skbedit mark 7",
    ])  # fmt: skip
    found = k.tc().filters
    assert found == mine(FILTERS[1:]) | {(changed.chain, changed.handle, None)}
    assert k.apply([DelFilter("eth0", chain, handle) for chain, handle, _ in found]) == []
    assert k.tc() == TcState("ingress", frozenset())
    assert shown(host) == before


def test_marks_reach_ipvs_fwmark_services(lan: Lan) -> None:
    """A datagram to a VIP port in fe2's range, reaching the balancer, is sent on to fe2."""
    bal, fe2 = lan.add_host("bal", "192.0.2.11"), lan.add_host("fe2", "192.0.2.12")
    client = lan.add_host("client", "192.0.2.100")
    vip = VIPS[0]
    bal.add_address(vip, dev="eth0")
    fe2.dr_real_server([vip])
    mark = str(MEMBERS[1].mark)
    ipvsadm(bal, "-A", "-f", mark, "-s", "wlc")
    ipvsadm(bal, "-a", "-f", mark, "-r", fe2.ip, "-g", "-w", "100")
    filters = [*sorted(range_filters(MEMBERS), key=str), VipFilter(f"{vip}/32")]
    assert Kernel(bal).apply([AddClsact("eth0"), *adds(filters)]) == []
    at_fe2, at_bal = fe2.socket(kind=socket.SOCK_DGRAM), bal.socket(kind=socket.SOCK_DGRAM)
    sender = client.socket(kind=socket.SOCK_DGRAM)
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
    conns = ipvsadm(bal, "-L", "-n", "-c")
    assert f"{vip}:57000 {fe2.ip}:57000" in " ".join(conns.split()), conns
    stats = bal.run(
        ["tc", "-s", "filter", "show", "dev", "eth0", "ingress", "chain", str(TC_CHAIN)]
    )
    assert "Sent 34 bytes 1 pkt" in stats.stdout, stats.stdout
