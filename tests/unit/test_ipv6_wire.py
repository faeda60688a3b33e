"""IPv6 on the wire: the rtnetlink and IPVS encodings, the neighbour advertisement frame, and
the commands -m prints for them (in test_operations.py, with the IPv4 ones). The kernel's own
view is in tests/kernel/test_ipv6.py."""

from __future__ import annotations

import socket
import struct

from cgp_ipvs_helper import ipvswire, nd, nlwire
from cgp_ipvs_helper.model import Address, Dest, Service, ServiceKey

VIP6 = "2001:db8:10::1"
TCP6 = ServiceKey("tcp", VIP6, 0)
MAC = bytes.fromhex("020000000110")


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
