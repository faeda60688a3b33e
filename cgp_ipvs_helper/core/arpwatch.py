"""Split-brain watch: while active, ARP on `-i` that claims one of our VIPs from another MAC.

Two balancers of a group active at once (CGP partitioned, or a stale balancer that never got
DEACTIVATE) fight over the VIPs' ARP entries at every refresh, and nothing else shows why. The
active helper listens for ARP requests and replies (gratuitous ones included) whose sender
address is one of our VIPs and whose sender MAC is not ours, and warns: once per VIP and MAC,
again at most every `repeat` seconds while the claims go on, and counts each such conflict. It
never answers back: CGP owns the election, and a helper that re-announced would only make the
fight faster.

A claim is reported only if this helper is still active `confirm` seconds after it arrived: on a
planned switch CGP sends ACTIVATE to the new balancer and DEACTIVATE to the old one at about the
same time, in any order, so the old one may hear the new one's first announcement a moment
before it is told to stand by. That is no conflict, and `reset()` on leaving the active role
drops it.

`ArpWatch` is the pure logic (time passed in); `ArpListener` is the packet socket that feeds it,
joined to the helper's one select loop: no thread, no process, nothing to do while the LAN is
quiet.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from attrs import define, frozen

from cgp_ipvs_helper.kernel.frames.arp import ARPHRD_ETHER, ETH_P_ARP, FRAME

CONFIRM = 0.5  # seconds: a planned switch's DEACTIVATE arrives well within this
REPEAT = 60.0  # seconds between two warnings for one VIP and MAC while the claims go on
MAX_CLAIMANTS = 1024  # (VIP, MAC) pairs tracked at once: a flood of forged MACs stays bounded
_ARP_OPS = (1, 2)  # request, reply
_BURST = 256  # frames read per wake-up, so a flood cannot starve requests on stdin


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def sender(frame: bytes) -> tuple[str, bytes] | None:
    """(sender IPv4 address, sender MAC) of an Ethernet ARP request or reply, else None."""
    if len(frame) < FRAME.size:
        return None
    _dst, _src, ethertype, htype, ptype, hlen, plen, op, sha, spa, _tha, _tpa = FRAME.unpack_from(
        frame
    )
    if (ethertype, htype, ptype, hlen, plen) != (ETH_P_ARP, ARPHRD_ETHER, 0x0800, 6, 4):
        return None
    if op not in _ARP_OPS:
        return None
    return socket.inet_ntoa(spa), sha


@frozen
class Conflict:
    """A warning due: `vip` claimed by `mac`; `frames` claims since the last warning."""

    vip: str
    mac: str
    frames: int
    again: bool  # a reminder: the claims went on since the first warning

    def __str__(self) -> str:
        if self.again:
            return (
                f"WARNING: ARP conflict goes on: {self.vip} claimed by {self.mac} "
                f"{self.frames} more times since the last warning"
            )
        return (
            f"WARNING: ARP conflict: {self.vip} is claimed by {self.mac} while this helper is "
            "the active balancer: two balancers are active (CGP decides; nothing is changed)"
        )


@define
class _Claim:
    first: float
    last: float
    frames: int = 1
    warned: float | None = None


class ArpWatch:
    """Claims of our VIPs by other MACs, turned into rate-limited warnings and a count."""

    def __init__(
        self, confirm: float = CONFIRM, repeat: float = REPEAT, limit: int = MAX_CLAIMANTS
    ) -> None:
        self.confirm, self.repeat, self.limit = confirm, repeat, limit
        self.vips: frozenset[str] = frozenset()
        self.conflicts = 0  # (VIP, MAC) conflicts warned about since start
        self._claims: dict[tuple[str, str], _Claim] = {}

    def watch(self, vips: Iterable[str]) -> None:
        """The VIPs this helper announces now (on activation or a reload)."""
        self.vips = frozenset(vips)

    def reset(self) -> None:
        """No longer active: forget every claim (unconfirmed ones were no conflict)."""
        self._claims.clear()

    def seen(self, ip: str, mac: bytes, now: float) -> None:
        """One ARP frame from another MAC with sender address `ip`."""
        if ip not in self.vips:
            return
        key = (ip, mac_text(mac))
        claim = self._claims.get(key)
        if claim is not None and now - claim.last <= self.repeat:
            claim.last = now
            claim.frames += 1
        elif claim is not None or len(self._claims) < self.limit:
            self._claims[key] = _Claim(first=now, last=now)

    def due(self, now: float) -> list[Conflict]:
        """The warnings due at `now`, in the order the claims were first seen."""
        out: list[Conflict] = []
        for (vip, mac), claim in list(self._claims.items()):
            if claim.warned is None:
                if now >= claim.first + self.confirm:
                    self.conflicts += 1
                    out.append(Conflict(vip, mac, claim.frames, again=False))
                    claim.warned, claim.frames = now, 0
            elif claim.frames and now >= claim.warned + self.repeat:
                out.append(Conflict(vip, mac, claim.frames, again=True))
                claim.warned, claim.frames = now, 0
            elif now - claim.last > self.repeat:
                del self._claims[(vip, mac)]  # over: a later claim is a new conflict
        return out

    def deadline(self) -> float | None:
        """When due() next has something to say, if claims are pending."""
        times = [
            c.first + self.confirm if c.warned is None else c.warned + self.repeat
            for c in self._claims.values()
            if c.warned is None or c.frames
        ]
        return min(times, default=None)


class ArpListener:
    """A packet socket on `iface` receiving every ARP frame, for the helper's select loop.

    Frames this host sends (PACKET_OUTGOING, or with `iface`'s own MAC as sender) are not
    claims by someone else.
    """

    def __init__(self, iface: str) -> None:
        self.iface = iface
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind((iface, ETH_P_ARP))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def claims(self) -> list[tuple[str, bytes]]:
        """(sender IP, sender MAC) of the ARP frames other hosts sent, as many as are queued
        (up to a burst)."""
        own = self.sock.getsockname()[4]  # the MAC now: a bond may change it
        found: list[tuple[str, bytes]] = []
        for _ in range(_BURST):
            try:
                frame, addr = self.sock.recvfrom(128)
            except BlockingIOError:
                break
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            claim = sender(frame)
            if claim is not None and claim[1] != own:
                found.append(claim)
        return found

    def close(self) -> None:
        self.sock.close()
