"""Unsolicited IPv6 neighbour advertisements: the gratuitous ARP of an IPv6 VIP.

An NA (ICMPv6 type 136) with the override flag set and our MAC as the target link-layer
address makes every host on the link that has a neighbour entry for the VIP point it at us
(RFC 4861 7.2.6); sent to all-nodes (ff02::1), hop limit 255 (or receivers drop it), solicited
flag clear (or receivers drop it, the destination being multicast). The frame is built whole and
sent on the same packet socket as the gratuitous ARP (arp.py), from the VIP itself as keepalived
does: no route, no source address selection and no raw socket are involved, and it goes out
while the VIP is still tentative or deprecated.
"""

from __future__ import annotations

import socket
import struct

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LL_ADDR = 2
HOP_LIMIT = 255
ALL_NODES = socket.inet_pton(socket.AF_INET6, "ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # 33:33 + the low 32 bits of ff02::1
_ETH = struct.Struct("!6s6sH")
_IPV6 = struct.Struct("!IHBB16s16s")  # version/class/flow, payload length, next header, hops
_NA = struct.Struct("!BBHI16sBB6s")  # type, code, checksum, flags, target, option, its length
_PSEUDO = struct.Struct("!16s16sI3xB")  # source, destination, upper-layer length, next header


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(target: bytes, mac: bytes) -> bytes:
    """The Ethernet frame of an unsolicited NA for the 16-byte address `target` from `mac`."""
    body = _NA.pack(
        ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE, target, ND_OPT_TARGET_LL_ADDR, 1, mac
    )
    pseudo = _PSEUDO.pack(target, ALL_NODES, len(body), IPPROTO_ICMPV6)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    header = _IPV6.pack(6 << 28, len(body), IPPROTO_ICMPV6, HOP_LIMIT, target, ALL_NODES)
    return _ETH.pack(ALL_NODES_MAC, mac, ETH_P_IPV6) + header + body
