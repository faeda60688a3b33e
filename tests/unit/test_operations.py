"""Each operation renders as the exact, safely quoted shell command -m prints (IPv4 and IPv6)."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgp_ipvs_helper.plan import operations as ops
from cgp_ipvs_helper.plan.model import Address, Daemon, Dest, Service, ServiceKey, Sysctl
from cgp_ipvs_helper.plan.rendering import Renders
from cgp_ipvs_helper.plan.steering import RangeFilter, VipFilter
from cgp_ipvs_helper.plan.tcops import AddFilter, DelFilter

TCP0 = ServiceKey("tcp", "198.51.100.10", 0)
UDP = ServiceKey("udp", "198.51.100.10", 5060)
VIP6 = "2001:db8:10::1"
TCP6 = ServiceKey("tcp", VIP6, 0)
UDP6 = ServiceKey("udp", VIP6, 5060)
MARK6 = ServiceKey.for_mark(0x4347C350, ipv6=True)

RENDERED = [
    (ops.AddAddress(Address("198.51.100.10", "lo")), "ip address add 198.51.100.10/32 dev lo"),
    (
        ops.DelAddress(Address("198.51.100.10", "eth0", 24)),
        "ip address del 198.51.100.10/24 dev eth0",
    ),
    (
        ops.SetSysctl(Sysctl("net/ipv4/conf/all/arp_ignore", "1")),
        "sysctl -w net.ipv4.conf.all.arp_ignore=1",
    ),
    (
        ops.SetSysctl(Sysctl("net/ipv4/conf/eth0.100/arp_announce", "2")),
        "sysctl -w net/ipv4/conf/eth0.100/arp_announce=2",
    ),
    (ops.AddService(Service(TCP0, "wlc", 15)), "ipvsadm -A -t 198.51.100.10:0 -s wlc -p 15"),
    (ops.EditService(Service(TCP0, "wlc", 30)), "ipvsadm -E -t 198.51.100.10:0 -s wlc -p 30"),
    (ops.AddService(Service(UDP, "wlc", 0)), "ipvsadm -A -u 198.51.100.10:5060 -s wlc"),
    (ops.DelService(Service(UDP, "wlc", 0)), "ipvsadm -D -u 198.51.100.10:5060"),
    (
        ops.AddDest(Dest(TCP0, "192.0.2.11", 100)),
        "ipvsadm -a -t 198.51.100.10:0 -r 192.0.2.11 -g -w 100",
    ),
    (
        ops.EditDest(Dest(UDP, "192.0.2.11", 0)),
        "ipvsadm -e -u 198.51.100.10:5060 -r 192.0.2.11 -g -w 0",
    ),
    (ops.DelDest(Dest(TCP0, "192.0.2.12", 100)), "ipvsadm -d -t 198.51.100.10:0 -r 192.0.2.12"),
    (
        ops.StartDaemon(Daemon("backup", "eth0", 7)),
        "ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 7",
    ),
    (ops.StopDaemon(Daemon("master", "eth0", 7)), "ipvsadm --stop-daemon master"),
    (ops.SendGarp("198.51.100.10", "eth0", False), "arping -U -c 1 -I eth0 198.51.100.10"),
    (ops.SendGarp("198.51.100.10", "eth0", True), "arping -A -c 1 -I eth0 198.51.100.10"),
    # IPv6: the same operations, as ip -6, bracketed ipvsadm addresses, and ndptool
    (ops.AddAddress(Address(VIP6, "lo")), "ip -6 address add 2001:db8:10::1/128 dev lo nodad"),
    (ops.DelAddress(Address(VIP6, "eth0")), "ip -6 address del 2001:db8:10::1/128 dev eth0"),
    (ops.AddService(Service(TCP6, "wlc", 15)), "ipvsadm -A -t '[2001:db8:10::1]:0' -s wlc -p 15"),
    (ops.DelService(Service(UDP6, "wlc", 0)), "ipvsadm -D -u '[2001:db8:10::1]:5060'"),
    (
        ops.AddDest(Dest(TCP6, "2001:db8::12", 100)),
        "ipvsadm -a -t '[2001:db8:10::1]:0' -r '[2001:db8::12]:0' -g -w 100",
    ),
    (
        ops.EditDest(Dest(UDP6, "2001:db8::12", 0)),
        "ipvsadm -e -u '[2001:db8:10::1]:5060' -r '[2001:db8::12]:5060' -g -w 0",
    ),
    (
        ops.DelDest(Dest(TCP6, "2001:db8::12", 1)),
        "ipvsadm -d -t '[2001:db8:10::1]:0' -r '[2001:db8::12]:0'",
    ),
    (ops.SendNa(VIP6, "eth0"), "ndptool -t na -U -i eth0 -T 2001:db8:10::1 send"),
    # the steering for IPv6 VIPs: the range's mark with -6, the filters at their own preference
    (ops.AddService(Service(MARK6, "wlc", 0)), "ipvsadm -A -f 1128776528 -6 -s wlc"),
    (
        ops.AddDest(Dest(MARK6, "2001:db8::11", 100)),
        "ipvsadm -a -f 1128776528 -6 -r '[2001:db8::11]:0' -g -w 100",
    ),
    (ops.DelService(Service(MARK6, "wlc", 0)), "ipvsadm -D -f 1128776528 -6"),
    (
        AddFilter("eth0", VipFilter("2001:db8:10::/124", 1)),
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower "
        "skip_hw dst_ip 2001:db8:10::/124 action goto chain 17223",
    ),
    (
        AddFilter("eth0", RangeFilter("tcp", 50000, 54999, ipv6=True, local=True)),
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 17223 handle 0x6c350 "
        "flower skip_hw ip_proto tcp dst_port 50000-54999 action skbedit mark 0x4347c350",
    ),
    (
        AddFilter(
            "eth0", RangeFilter("udp", 55000, 59999, True, "02:00:00:00:00:12", "02:00:00:00:00:11")
        ),
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 17223 handle 0x11d6d8 "
        "flower skip_hw ip_proto udp dst_port 55000-59999 action skbmod set dmac "
        "02:00:00:00:00:12 set smac 02:00:00:00:00:11 action mirred egress redirect dev eth0",
    ),
    (
        AddFilter("eth0", RangeFilter("tcp", 55000, 59999)),
        "tc filter add dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x6d6d8 "
        "flower skip_hw ip_proto tcp dst_port 55000-59999 action drop",
    ),
    (
        DelFilter("eth0", 65001, 0, 1),
        "tc filter del dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower",
    ),
]


@pytest.mark.parametrize(("op", "command"), RENDERED)
def test_render(op, command) -> None:
    assert str(op) == command
    assert shlex.split(str(op)) == op.argv()


def test_hostile_values_are_quoted() -> None:
    op = ops.AddAddress(Address("198.51.100.10", "eth0; rm -rf /"))
    assert str(op) == "ip address add 198.51.100.10/32 dev 'eth0; rm -rf /'"
    assert shlex.split(str(op))[-1] == "eth0; rm -rf /"


def test_operations_are_hashable_values() -> None:
    a = ops.AddAddress(Address("198.51.100.10", "lo"))
    assert a == ops.AddAddress(Address("198.51.100.10", "lo")) and len({a, a}) == 1


class _Words(Renders):
    def __init__(self, argv: list[str]) -> None:
        self._argv = argv

    def argv(self) -> list[str]:
        return self._argv


@given(st.lists(st.text(alphabet=st.sampled_from("az09_@%+=:,./- '\t\n\"$;é"), max_size=6)))
def test_rendering_is_shlex_join_whatever_the_words(argv: list[str]) -> None:
    assert str(_Words(argv)) == shlex.join(argv)


_VIP = st.sampled_from(["198.51.100.10", "2001:db8:10::5", "2001:db8::"])
_KEY = st.builds(ServiceKey, st.sampled_from(["tcp", "udp"]), _VIP, st.sampled_from([0, 25, 5060]))
_MARK = st.builds(ServiceKey.for_mark, st.sampled_from([0x4347C350, 7]))
_DEST = st.builds(
    Dest,
    st.one_of(_KEY, _MARK),
    st.sampled_from(["192.0.2.11", "2001:db8::12", "fe80::1", "x y", "'q'"]),
    st.sampled_from([0, 100, 7]),
)


@given(_DEST, st.sampled_from([ops.AddDest, ops.EditDest, ops.DelDest]))
def test_a_real_servers_line_is_shlex_join_of_its_words(dest: Dest, kind: type) -> None:
    """Real server lines are built from cached quoted parts: the same text as shlex.join."""
    op = kind(dest)
    assert str(op) == shlex.join(op.argv())


_FAMILY = st.sampled_from(
    [
        (["198.51.100.10", "198.51.100.11"], ["192.0.2.11", "192.0.2.12", "x y"]),
        (["2001:db8:10::5", "2001:db8::"], ["2001:db8::12", "fe80::1"]),
    ]
)


@given(_FAMILY, st.data())
def test_the_real_servers_of_an_activation_are_logged_as_each_one(family, data) -> None:
    """AddDests (EditDests, DelDests) logs from kept parts exactly what its AddDest (EditDest,
    DelDest) values render, in their order (a service's port is in an IPv6 real server's
    words: services of several ports)."""
    vips, ips = family
    keys = data.draw(
        st.lists(
            st.builds(
                ServiceKey,
                st.sampled_from(["tcp", "udp"]),
                st.sampled_from(vips),
                st.sampled_from([0, 25, 5060]),
            ),
            unique=True,
            max_size=6,
        )
    )
    servers = data.draw(
        st.lists(
            st.tuples(st.sampled_from(ips), st.sampled_from([0, 7, 100])),
            unique_by=lambda s: s[0],
            max_size=3,
        )
    )
    many, one = data.draw(
        st.sampled_from(
            [
                (ops.AddDests, ops.AddDest),
                (ops.EditDests, ops.EditDest),
                (ops.DelDests, ops.DelDest),
            ]
        )
    )
    block = many(tuple(keys), tuple(servers))
    each = [one(Dest(k, ip, w)) for k in keys for ip, w in servers]
    assert list(block.each()) == each and len(block) == len(each)
    assert [block.part(i) for i in range(len(each))] == each
    assert block.logged() == "".join(f"* {op}\n" for op in each).encode()
    assert str(block) == "\n".join(map(str, each))
    assert ops.each([ops.AddAddress(Address("198.51.100.10", "lo")), block]) == [
        ops.AddAddress(Address("198.51.100.10", "lo")),
        *each,
    ]
