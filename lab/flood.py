"""A flood of unsolicited TCP ACKs (or UDP datagrams), sent from a lab host in rounds of one
sendmmsg each.

Frames are built once (Ethernet to the given MAC, IPv4, TCP with only ACK set and a correct
checksum, or UDP without one, a new source address and port per frame) and sent over a packet
socket on the host's eth0 through `mmsg.Round`, so 100,000 of them cost about a hundred system
calls, not 100,000; the sender's kernel passes each one over the LAN and through the receiver's
ingress before the call returns, so the time a flood takes is mostly what its frames cost.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence

from cgp_ipvs_helper.kernel.frames import mmsg
from cgp_ipvs_helper.kernel.frames.arp import sockaddr_ll
from cgp_ipvs_helper.kernel.frames.nd import checksum

from .lan import Host

_ETH = struct.Struct("!6s6sH")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
ETH_P_IP = 0x0800
ACK = 0x10


def ack(src_mac: bytes, dst_mac: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    """One Ethernet frame: a TCP segment with only ACK set, of no connection anyone has."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = _TCP.pack(sport, dport, 1, 1, 5 << 4, ACK, 512, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    head = _IP.pack(0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0, s, d)
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return _ETH.pack(dst_mac, src_mac, ETH_P_IP) + head + tcp


def datagram(src_mac: bytes, dst_mac: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    """One Ethernet frame: an 8-byte UDP datagram (no checksum: allowed for IPv4)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = struct.pack("!HHHH", sport, dport, 16, 0) + b"flooding"
    head = _IP.pack(0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, s, d)
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return _ETH.pack(dst_mac, src_mac, ETH_P_IP) + head + udp


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ack_flood(
    host: Host,
    dst_mac: str,
    dst: str,
    ports: Sequence[int],
    sources: Sequence[str],
    count: int,
    make: Callable[[bytes, bytes, str, str, int, int], bytes] = ack,
    flows: int = 64000,
) -> int:
    """`count` ACKs (or what `make` makes) from `host` to `dst` (at `dst_mac`), destination
    ports cycling through `ports`, source addresses through `sources`, source ports 1024 up
    (`flows` of them); how many were sent."""
    index = host.ifindex("eth0")
    src_mac = _mac(host.mac)
    address = sockaddr_ll(index, ETH_P_IP)
    to, n = _mac(dst_mac), len(sources)
    frames = [
        make(src_mac, to, sources[i % n], dst, 1024 + i // n % flows, ports[i % len(ports)])
        for i in range(count)
    ]
    sent = 0
    with host.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        if not mmsg.available():
            for frame in frames:
                sent += sock.send(frame) > 0
            return sent
        burst = mmsg.Round([(address, frame) for frame in frames])
        while sent < count:
            sent += burst.send(sock.fileno(), sent)
    return sent
