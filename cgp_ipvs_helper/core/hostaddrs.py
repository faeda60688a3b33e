"""This host's own addresses and interfaces: what a VIP or a member may not be.

The helper adds and removes VIPs and makes members real servers; an easy typo (the frontend's
LAN address in the VIP list, the LAN's broadcast address among the members) must be refused
before anything is planned, since nothing later can tell the host's own address from a VIP.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence

from cgp_ipvs_helper.config.vipfile import vip_error
from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.plan.model import Address, KernelState, host_prefixlen


def interface_exists(name: str) -> bool:
    """Whether this host (its network namespace) has an interface `name` now. Asked at every
    ACTIVATE, on a socket kept for it: if_nametoindex() opens and closes one each time (3
    system calls instead of 1)."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
        return False
    try:
        fcntl.ioctl(_asking(), SIOCGIFINDEX, _IFREQ.pack(raw, 0))
    except OSError:
        return False
    return True


IFNAMSIZ = 16
SIOCGIFINDEX = 0x8933  # struct ifreq: the name, then the index the kernel fills in
_IFREQ = struct.Struct(f"{IFNAMSIZ}si20x")


@functools.lru_cache(maxsize=1)
def _asking() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def local_clashes(vips: Iterable[str], actual: KernelState, iface: str) -> list[Address]:
    """The host's own addresses that are VIPs: on any device but lo, other than as a /32 (/128)
    on `iface` (what an active run adds, and a dead one leaves). Taking such a VIP would take
    the address off its interface on the next DEACTIVATE or start."""
    wanted = frozenset(vips)
    return [
        a
        for a in actual.addresses
        if a.ip in wanted
        and a.dev != "lo"
        and not (a.dev == iface and a.prefixlen == host_prefixlen(a.ip))
    ]


def clash_error(
    vips: Iterable[str], actual: KernelState, iface: str, path: str
) -> VipFileError | None:
    """The VIP file error for the first VIP that is an address of this host, naming its line
    and the interface that holds it; None if there is none."""
    clash = local_clashes(vips, actual, iface)
    if not clash:
        return None
    a = clash[0]
    return vip_error(
        path,
        a.ip,
        f"already an address of this host on {a.dev} ({a.ip}/{a.prefixlen}): "
        "a VIP must be an address of its own, or the helper would take it away",
    )


def subnet_edges(on_iface: Sequence[Address]) -> dict[str, str]:
    """The broadcast and network addresses of the IPv4 subnets on -i, each with what it is: no
    host, as 255.255.255.255 is none (a real server there is every host of the LAN, or none).
    The first subnet listed names an address two share."""
    edges: dict[str, str] = {}
    for a in on_iface:
        own = _ipv4_int(a.ip) if a.prefixlen <= 30 else None
        if own is None:
            continue
        hostbits = 32 - a.prefixlen
        first = own >> hostbits << hostbits
        net = ipaddress.IPv4Network((first, a.prefixlen))
        last = first | ((1 << hostbits) - 1)
        for value, what in ((first, "network"), (last, "broadcast")):
            edges.setdefault(
                socket.inet_ntoa(value.to_bytes(4, "big")),
                f"{what} address of {a.dev}'s subnet {net}",
            )
    return edges


def _ipv4_int(ip: str) -> int | None:
    """A dotted-quad IPv4 address as a number; None for anything else."""
    if ":" in ip:
        return None
    try:
        return int.from_bytes(socket.inet_aton(ip), "big")
    except OSError:
        return None
