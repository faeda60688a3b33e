"""The netlink wire format every protocol shares: message headers, attributes, the generic
netlink header and family lookup, and the rtnetlink address messages.

Packed and parsed with `struct`, not with pyroute2's message classes: pyroute2 0.9.7 takes
0.36 ms on the host just to encode one IPVS message, these functions 3-4 us. pyroute2 supplies
the constants only.
"""

from __future__ import annotations

import errno
import socket
import struct

from pyroute2.netlink import CTRL_CMD_GETFAMILY

from cgp_ipvs_helper.plan.model import Address, is_ipv6

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA = struct.Struct("=HH")  # length, type
U16 = struct.Struct("=H")
U32 = struct.Struct("=I")
BE16 = struct.Struct("!H")
GENLMSGHDR = struct.Struct("=BBH")  # command, version, reserved
GENLHDR = 20  # nlmsghdr + genlmsghdr: where a generic netlink message's attributes start
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2

IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02  # ifa_flags: no duplicate address detection (`ip -6 address add ... nodad`)
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254
ADDRESS_DUMP = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)  # RTM_GETADDR: IPv4 and IPv6


# --- attributes ------------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    size = 4 + len(payload)
    return NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes from `offset` to the end, by type (the nested/byte-order bits dropped)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        size, kind = NLA.unpack_from(data, offset)
        if size < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return out


def string(raw: bytes) -> str:
    """A NUL-terminated string attribute."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def ipv4(ip: str) -> bytes:
    """The 4 bytes of an IPv4 address; OSError(EINVAL) for anything else."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError):
        raise OSError(errno.EINVAL, f"not an IPv4 address: {ip!r}") from None


def packed(ip: str) -> tuple[int, bytes]:
    """(address family, 4 or 16 bytes) of an IPv4 or IPv6 address; OSError(EINVAL) else."""
    if not is_ipv6(ip):
        return socket.AF_INET, ipv4(ip)
    try:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, TypeError):
        raise OSError(errno.EINVAL, f"not an IPv6 address: {ip!r}") from None


def unpacked(family: int, raw: bytes) -> str:
    """The text of a 4- or 16-byte address (IPVS pads IPv4 to 16 bytes: the first 4 count)."""
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntoa(raw[:4])


# --- generic netlink -------------------------------------------------------------------------


def genl(version: int, cmd: int, *attributes: bytes) -> bytes:
    """A generic netlink message body: genlmsghdr, then the attributes."""
    return GENLMSGHDR.pack(cmd, version, 0) + b"".join(attributes)


def family_request(name: str) -> bytes:
    """The controller's CTRL_CMD_GETFAMILY for a family name (sent to GENL_ID_CTRL)."""
    return genl(1, CTRL_CMD_GETFAMILY, nla(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))


def family_id(reply: bytes) -> int:
    """The family id in the controller's answer."""
    return U16.unpack(attrs(reply, GENLHDR)[CTRL_ATTR_FAMILY_ID])[0]


# --- rtnetlink addresses ---------------------------------------------------------------------


def ifaddr(address: Address, index: int) -> bytes:
    """What `ip address add|del A/P dev D` sends; scope host only for 127/8, as iproute2 does.
    An IPv6 address carries IFA_F_NODAD, as `ip -6 address add ... nodad` (the kernel reads the
    flags on adding only)."""
    family, raw = packed(address.ip)
    scope = RT_SCOPE_HOST if family == socket.AF_INET and raw[0] == 127 else RT_SCOPE_UNIVERSE
    flags = IFA_F_NODAD if family == socket.AF_INET6 else 0
    return (
        IFADDRMSG.pack(family, address.prefixlen, flags, scope, index)
        + nla(IFA_LOCAL, raw)
        + nla(IFA_ADDRESS, raw)
    )


def address_from(msg: bytes, names: dict[int, str]) -> Address | None:
    """The Address of an RTM_NEWADDR answer: IPv4, or IPv6 of global scope (a VIP never has
    another: ::1 and fe80::/10 are not the helper's business); None else, or on no device of
    `names`."""
    family, prefixlen, _flags, scope, index = IFADDRMSG.unpack_from(msg, 16)
    a = attrs(msg, 16 + IFADDRMSG.size)
    ip = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
    name = names.get(index)
    if not ip or not name:
        return None
    if family == socket.AF_INET or (family == socket.AF_INET6 and scope == RT_SCOPE_UNIVERSE):
        return Address(unpacked(family, ip), name, prefixlen)
    return None
