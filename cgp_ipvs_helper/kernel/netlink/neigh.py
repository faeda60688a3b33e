"""The rtnetlink messages the steering reads the LAN interface with: its MAC (RTM_GETLINK) and
its neighbours' MACs (RTM_GETNEIGH), and the request that has the kernel resolve or confirm a
neighbour (RTM_NEWNEIGH with NTF_USE, include/uapi/linux/neighbour.h: "use" the entry as a
packet to it would, so it sends its ARP request or neighbour solicitation, or probes a stale
entry, and the answer updates the table).

Resolving through the kernel, not by a probe of our own: the kernel's entry is then right (or
FAILED) by the kernel's own rules, the answer needs no socket of ours, and a MAC that changes
later (a replaced NIC, a bond failing over) reaches the same table through the member's
gratuitous ARP or the kernel's next probe, where the next read finds it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Collection, Iterable

from pyroute2.netlink import NLM_F_CREATE, NLM_F_REPLACE

from cgp_ipvs_helper.kernel.netlink.wire import attrs, nla, packed, unpacked

RTM_NEWNEIGH, RTM_GETNEIGH, RTM_GETLINK = 28, 30, 18
NDMSG = struct.Struct("=BBHiHBB")  # family, pad, pad, ifindex, state, flags, type
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
NDA_DST, NDA_LLADDR, IFLA_ADDRESS = 1, 2, 1
NTF_USE = 0x01
# NUD_VALID: the states whose link-layer address the kernel reports and uses (reachable,
# stale, delay, probe, noarp, permanent); an incomplete or failed entry has none
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80
# NUD_FIXED: an entry set by hand (permanent, noarp): never asked to be resolved, which would
# make a permanent one (kernels from 5.16) an ordinary entry that a silent member loses
NUD_FIXED = 0x40 | 0x80

Request = tuple[int, int, bytes]


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def dump_links() -> tuple[int, bytes]:
    return RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def link_mac(msgs: Iterable[bytes], ifindex: int) -> str | None:
    """The MAC of device `ifindex` among the RTM_NEWLINK answers (None: not an Ethernet one)."""
    for msg in msgs:
        _family, _type, index, _flags, _change = IFINFOMSG.unpack_from(msg, 16)
        if index == ifindex:
            raw = attrs(msg, 16 + IFINFOMSG.size).get(IFLA_ADDRESS, b"")
            return mac_text(raw) if len(raw) == 6 else None
    return None


def dump_neighbours() -> tuple[int, bytes]:
    return RTM_GETNEIGH, NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0)


def neighbours(msgs: Iterable[bytes], ifindex: int) -> tuple[dict[str, str], set[str]]:
    """Address -> MAC of the usable entries on `ifindex` among the RTM_NEWNEIGH answers, and
    the addresses of those set by hand (NUD_FIXED)."""
    out, fixed = {}, set()
    for msg in msgs:
        family, _p1, _p2, index, state, _flags, _type = NDMSG.unpack_from(msg, 16)
        if index != ifindex or not state & NUD_VALID:
            continue
        found = attrs(msg, 16 + NDMSG.size)
        raw = found.get(NDA_LLADDR, b"")
        if NDA_DST in found and len(raw) == 6:
            ip = unpacked(family, found[NDA_DST])
            out[ip] = mac_text(raw)
            if state & NUD_FIXED:
                fixed.add(ip)
    return out, fixed


def use(ips: Collection[str], ifindex: int) -> list[Request]:
    """Per address: resolve it (a new or failed entry) or confirm it (a stale one)."""
    requests = []
    for ip in sorted(ips):
        family, raw = packed(ip)
        body = NDMSG.pack(family, 0, 0, ifindex, 0, NTF_USE, 0) + nla(NDA_DST, raw)
        requests.append((RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body))
    return requests
