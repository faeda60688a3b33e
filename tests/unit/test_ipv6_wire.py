"""IPv6 on the wire: the rtnetlink and IPVS encodings, the neighbour advertisement frame, the
steering's IPv6 filters and firewall-mark services, and the commands -m prints for them (in
test_operations.py, with the IPv4 ones). The kernel's own view is in tests/kernel/test_ipv6.py
and tests/kernel/test_tc_steering.py."""

from __future__ import annotations

import socket
import struct

import pytest

from cgp_ipvs_helper.kernel.frames import nd
from cgp_ipvs_helper.kernel.netlink import ipvs as ipvswire
from cgp_ipvs_helper.kernel.netlink import tc
from cgp_ipvs_helper.kernel.netlink import wire as nlwire
from cgp_ipvs_helper.plan.model import Address, Dest, Service, ServiceKey
from cgp_ipvs_helper.plan.steering import RangeFilter, VipFilter

VIP6 = "2001:db8:10::1"
TCP6 = ServiceKey("tcp", VIP6, 0)
MAC = bytes.fromhex("020000000110")
MARK6 = ServiceKey.for_mark(0x4347C350, ipv6=True)


def test_an_address_is_a_host_route_of_its_family_by_default() -> None:
    assert Address(VIP6, "lo").prefixlen == 128
    assert Address("198.51.100.10", "lo").prefixlen == 32


def test_ifaddr_of_an_ipv6_address_is_af_inet6_with_nodad() -> None:
    body = nlwire.ifaddr(Address(VIP6, "eth0"), 7)
    family, plen, flags, scope, index = nlwire.IFADDRMSG.unpack_from(body)
    assert (family, plen, flags, scope, index) == (socket.AF_INET6, 128, nlwire.IFA_F_NODAD, 0, 7)
    a = nlwire.attrs(body, nlwire.IFADDRMSG.size)
    assert a[nlwire.IFA_LOCAL] == a[nlwire.IFA_ADDRESS] == socket.inet_pton(socket.AF_INET6, VIP6)


def _newaddr(family: int, plen: int, scope: int, raw: bytes) -> bytes:
    body = nlwire.IFADDRMSG.pack(family, plen, 0, scope, 3) + nlwire.nla(nlwire.IFA_ADDRESS, raw)
    return nlwire.NLMSGHDR.pack(16 + len(body), 20, 0, 1, 0) + body


def test_observed_ipv6_addresses_are_the_global_ones() -> None:
    pton = socket.inet_pton
    names = {3: "eth0"}
    glob = _newaddr(socket.AF_INET6, 128, 0, pton(socket.AF_INET6, "2001:DB8:10::1"))
    link = _newaddr(socket.AF_INET6, 64, 253, pton(socket.AF_INET6, "fe80::1"))
    assert nlwire.address_from(glob, names) == Address(VIP6, "eth0", 128)
    assert nlwire.address_from(link, names) is None


def test_an_ipv6_service_is_af_inet6_with_16_bytes_and_persistence_per_address() -> None:
    body = ipvswire.service_attrs(Service(TCP6, "wlc", 15))
    a = nlwire.attrs(nlwire.attrs(body, 0)[ipvswire.IPVS_CMD_ATTR_SERVICE], 0)
    assert struct.unpack("=H", a[ipvswire.IPVS_SVC_ATTR_AF]) == (socket.AF_INET6,)
    assert a[ipvswire.IPVS_SVC_ATTR_ADDR] == socket.inet_pton(socket.AF_INET6, VIP6)
    assert struct.unpack("=I", a[ipvswire.IPVS_SVC_ATTR_NETMASK]) == (128,)  # prefix length


def test_an_ipv6_service_and_real_server_read_back_as_sent() -> None:
    svc = Service(TCP6, "wlc", 15)
    answer = b"\0" * nlwire.GENLHDR + ipvswire.service_attrs(svc)
    assert ipvswire.service_from(answer) == svc
    dest = Dest(TCP6, "2001:db8::12", 100)
    body = ipvswire.dest_request(ipvswire.CMD_NEW_DEST, dest, True)  # genlmsghdr, service, dest
    answer = b"\0" * nlwire.GENLHDR + body[4 + len(ipvswire.key_attrs(TCP6)) :]
    assert ipvswire.dest_from(TCP6, answer) == dest


def test_the_neighbour_advertisement_frame() -> None:
    target = socket.inet_pton(socket.AF_INET6, VIP6)
    f = nd.frame(target, MAC)
    assert len(f) == 14 + 40 + 32
    assert f[:14] == bytes.fromhex("333300000001") + MAC + b"\x86\xdd"
    ver, length, nxt, hops, src, dst = struct.unpack("!IHBB16s16s", f[14:54])
    assert (ver >> 28, length, nxt, hops) == (6, 32, 58, 255)
    assert (src, dst) == (target, socket.inet_pton(socket.AF_INET6, "ff02::1"))
    kind, code, _sum, flags, tgt, opt, optlen, lladdr = struct.unpack("!BBHI16sBB6s", f[54:])
    assert (kind, code, tgt, opt, optlen, lladdr) == (136, 0, target, 2, 1, MAC)
    assert flags == 0x20000000  # override; not solicited, not router
    pseudo = src + dst + struct.pack("!I3xB", 32, 58)
    assert nd.checksum(pseudo + f[54:]) == 0


# What tc 6.1 sends (strace in the lab kernel, ifindex 3) for
#   tc filter add dev d0 ingress protocol ipv6 pref 65001 chain 17223 handle 0x11c350 flower \
#       skip_hw ip_proto udp dst_port 50000-54999 action skbedit mark 0x4347c350
#   tc filter add dev d0 ingress protocol ipv6 pref 65001 chain 0 handle 0x2 flower \
#       skip_hw dst_ip 2001:db8:20::/120 action goto chain 17223
# (the rtnetlink body after the 16-byte header)
TC_SENT = [
    (
        RangeFilter("udp", 50000, 54999, ipv6=True, local=True),
        "000000000300000050c31100f2ffffff86dde9fd08000b00474300000b000100666c6f776572000064000200"
        "050009001100000006005900c350000006005a00d6d7000038000300340001000c000100736b626564697400"
        "240002801800020000000000000000000300000000000000000000000800050050c347430800160001000000"
        "0600080086dd0000",
    ),
    (
        VipFilter("2001:db8:20::/120", 2),
        "000000000300000002000000f2ffffff86dde9fd08000b00000000000b000100666c6f77657200006c000200"
        "1400100020010db800200000000000000000000014001100ffffffffffffffffffffffffffffff0030000300"
        "2c0001000900010067616374000000001c000280180002000000000000000000474300200000000000000000"
        "08001600010000000600080086dd0000",
    ),
]


@pytest.mark.parametrize(("f", "sent"), TC_SENT, ids=["range", "vip-block"])
def test_ipv6_filters_are_the_bytes_tc_sends_and_read_back(f, sent: str) -> None:
    kind, flags, body = tc.add_filter(3, f)
    assert (kind, flags, body) == (tc.RTM_NEWTFILTER, 0x600, bytes.fromhex(sent))
    assert tc.parse_filter(b"\0" * 16 + body) == (65001, f.chain, f.handle, f)


@pytest.mark.parametrize(
    "f",
    [
        RangeFilter("tcp", 55000, 59999, False, "02:00:00:00:00:12", "02:00:00:00:00:11"),
        RangeFilter("udp", 55000, 59999, True, "02:00:00:00:00:12", "02:00:00:00:00:11"),
        RangeFilter("tcp", 55000, 59999, True),
    ],
    ids=["redirect", "redirect6", "drop"],
)
def test_redirect_and_drop_filters_read_back_as_made(f: RangeFilter) -> None:
    body = tc.add_filter(3, f)[2]
    assert tc.parse_filter(b"\0" * 16 + body) == (f.pref, f.chain, f.handle, f)
    # on device 3, redirecting out of device 4: not one we make (replaced)
    other = tc.add_filter(4, f)[2]
    moved = other[:4] + (3).to_bytes(4, "little") + other[8:]
    assert tc.parse_filter(b"\0" * 16 + moved)[3] == (None if f.dmac else f)


def test_a_range_filter_of_each_family_has_its_own_preference_and_protocol() -> None:
    v4, v6 = RangeFilter("udp", 50000, 54999), RangeFilter("udp", 50000, 54999, ipv6=True)
    found = {tc.parse_filter(b"\0" * 16 + tc.add_filter(3, f)[2]) for f in (v4, v6)}
    assert found == {(65000, 17223, v4.handle, v4), (65001, 17223, v6.handle, v6)}
    # an IPv6 filter at the IPv4 preference is not one of ours as it stands: replaced
    body = bytearray(tc.add_filter(3, v6)[2])
    body[18:20] = (65000).to_bytes(2, "little")
    assert tc.parse_filter(b"\0" * 16 + bytes(body)) == (65000, 17223, v6.handle, None)


def test_an_ipv6_firewall_mark_service_is_af_inet6_and_reads_back_as_sent() -> None:
    svc = Service(MARK6, "wlc", 0)
    body = ipvswire.service_attrs(svc)
    a = nlwire.attrs(nlwire.attrs(body, 0)[ipvswire.IPVS_CMD_ATTR_SERVICE], 0)
    assert struct.unpack("=H", a[ipvswire.IPVS_SVC_ATTR_AF]) == (socket.AF_INET6,)
    assert ipvswire.IPVS_SVC_ATTR_ADDR not in a  # the mark alone, as ipvsadm -f -6 sends
    assert ipvswire.service_from(b"\0" * nlwire.GENLHDR + body) == svc
    dest = Dest(MARK6, "2001:db8::11", 100)
    body = ipvswire.dest_request(ipvswire.CMD_NEW_DEST, dest, True)  # genlmsghdr, service, dest
    answer = b"\0" * nlwire.GENLHDR + body[4 + len(ipvswire.key_attrs(MARK6)) :]
    assert ipvswire.dest_from(MARK6, answer) == dest
