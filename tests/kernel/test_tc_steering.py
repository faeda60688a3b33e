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

from cgp_ipvs_helper import tc
from cgp_ipvs_helper.netlink import NETLINK_ROUTE, _Netlink
from cgp_ipvs_helper.operations import AddClsact, AddFilter, DelFilter
from cgp_ipvs_helper.steering import (
    TC_CHAIN,
    MemberRange,
    VipFilter,
    range_filters,
    vip_blocks,
)
from tests.lab.net import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.20"]
MEMBERS = [MemberRange("192.0.2.11", 50000, 54999), MemberRange("192.0.2.12", 55000, 59999)]
FILTERS = sorted(vip_blocks(VIPS), key=str) + sorted(range_filters(MEMBERS), key=str)
# steering filters first, so the foreign ones and ours share chain 0 in both orders
FOREIGN = [
    "tc filter add dev eth0 ingress protocol ip pref 100 flower dst_ip 203.0.113.1 action drop",
    "tc filter add dev eth0 ingress protocol ip pref 49152 flower ip_proto tcp action pass",
]


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan("tcst") as lan:
        yield lan


def netlink_in(host: Host) -> _Netlink:
    return host.call(_Netlink, NETLINK_ROUTE)


def apply(host: Host, requests: list[tc.Request]) -> dict[int, int]:
    nl = netlink_in(host)
    try:
        return nl.batch(requests)
    finally:
        nl.close()


def observe(host: Host) -> tuple[set[str], list[tc.Observed]]:
    nl = netlink_in(host)
    try:
        index = host.ifindex()
        kinds = {tc.ingress_kind(m, index) for m in nl.dump(*tc.dump_qdiscs())} - {None}
        found = [tc.parse_filter(m) for m in nl.dump(*tc.dump_filters(index))]
        return kinds, [f for f in found if f is not None]
    finally:
        nl.close()


def shown(host: Host) -> str:
    return host.run(["tc", "-d", "filter", "show", "dev", "eth0", "ingress"]).stdout


def sh(host: Host, commands: list[str]) -> None:
    host.run(["sh", "-ec", "\n".join(commands)])


def test_netlink_equals_printed_commands_and_reads_back(lan: Lan) -> None:
    by_netlink, by_shell = lan.add_host("a", "192.0.2.1"), lan.add_host("b", "192.0.2.2")
    assert observe(by_netlink) == (set(), [])
    index = by_netlink.ifindex()
    assert (
        apply(by_netlink, [tc.add_clsact(index)] + [tc.add_filter(index, f) for f in FILTERS]) == {}
    )
    sh(by_shell, [str(AddClsact("eth0"))] + [str(AddFilter("eth0", f)) for f in FILTERS])
    assert shown(by_netlink) == shown(by_shell)
    assert "dst_ip 198.51.100.10/31" in shown(by_netlink)
    assert "skbedit  mark 1128781528 pipe" in shown(by_netlink)
    for host in (by_netlink, by_shell):
        kinds, found = observe(host)
        assert kinds == {"clsact"}
        assert sorted(found, key=str) == sorted(((f.chain, f.handle, f) for f in FILTERS), key=str)
    # the same filter twice is refused (EEXIST), as `tc filter add` is
    assert apply(by_netlink, [tc.add_filter(index, FILTERS[0])]) == {0: 17}
    first = FILTERS[-1]
    assert apply(by_netlink, [tc.del_filter(index, first.chain, first.handle)]) == {}
    sh(by_shell, [str(DelFilter("eth0", first.chain, first.handle))])
    assert shown(by_netlink) == shown(by_shell)
    assert len(observe(by_netlink)[1]) == len(FILTERS) - 1


def test_foreign_qdisc_and_filters_are_untouched_and_changed_ones_are_found(lan: Lan) -> None:
    host = lan.add_host("a", "192.0.2.1")
    host.run(["tc", "qdisc", "add", "dev", "eth0", "ingress"])  # an operator's plain ingress
    sh(host, FOREIGN)
    before = shown(host)
    index = host.ifindex()
    assert observe(host) == ({"ingress"}, [])
    assert apply(host, [tc.add_filter(index, f) for f in FILTERS]) == {}
    # someone edits one of ours: it reads back as "not what we made", to be replaced
    sh(host, [
        f"tc filter del dev eth0 ingress protocol ip pref 65000 chain {TC_CHAIN} "
        f"handle {hex(FILTERS[-1].handle)} flower",
        f"tc filter add dev eth0 ingress protocol ip pref 65000 chain {TC_CHAIN} "
        f"handle {hex(FILTERS[-1].handle)} flower skip_hw ip_proto tcp dst_port 1-2 "
        "action skbedit mark 7",
    ])  # fmt: skip
    found = observe(host)[1]
    assert (FILTERS[-1].chain, FILTERS[-1].handle, None) in found and len(found) == len(FILTERS)
    assert apply(host, [tc.del_filter(index, chain, handle) for chain, handle, _ in found]) == {}
    assert observe(host) == ({"ingress"}, [])
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
    index = bal.ifindex()
    filters = [VipFilter(f"{vip}/32"), *sorted(range_filters(MEMBERS), key=str)]
    assert apply(bal, [tc.add_clsact(index)] + [tc.add_filter(index, f) for f in filters]) == {}
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
