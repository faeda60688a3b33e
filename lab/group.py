"""A CGP load-balancer group in the lab: frontends, a client, a server, helpers, and failovers.

Frontends fe1..feN run the echo service on every VIP (CGP's services), each its own helper
started on demand (`start`); a client with many source addresses reaches the VIPs (incoming);
an optional server on the LAN is the far end of connections the frontends open from a VIP
(outgoing). `switch` (planned: DEACTIVATE the old balancer, ACTIVATE the new one) and `crash`
(the old balancer's cable pulled and its helper killed) move the balancer while long-lived
connections ping, and return what the clients saw as a frozen `Move`. The kernel tests, the demo
and the failover benchmark all use this one harness.

    with Group("t1", ["198.51.100.10"], sources=SOURCES, server=True) as g:
        h1, h2, _ = g.start_all("-t", "3")
        h1.request(f"ACTIVATE {g.members()}")
        move = g.switch(h1, h2, outgoing=4)
        assert move.kept == move.survivors, move.summary()
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from .driver import HelperProcess, write_vipfile
from .echo import EchoService
from .lan import Host, Lan
from .traffic import Answered, ConnStats, LongLived, LongLivedStats, outgoing, tcp_ask

SETTLE_S = 3.0  # the master sync daemon sends its connection table about every 2 s
ARP_WAIT_S = 3.0  # how long after the ACTIVATE the client's ARP entry is watched
TCP, UDP = 25, 5060
SERVER_IP = "192.0.2.200"


def expand(entries: Sequence[str]) -> list[str]:
    """The addresses of VIP-file entries ('198.51.100.20/30' is four), comments dropped."""
    out = []
    for entry in entries:
        text = entry.split("#", 1)[0].strip()
        if text:
            out += [str(a) for a in ipaddress.ip_network(text, strict=False)]
    return out


@dataclass(frozen=True)
class Move:
    """What the client (and, with `outgoing`, each frontend) saw while the balancer moved."""

    old: str  # the old balancer's host name
    new: str
    crashed: bool  # the old balancer vanished (cable pulled, helper killed)
    members: str  # the new balancer's ACTIVATE list
    before: Mapping[str, int]  # long-lived connections per serving frontend before the move
    stats: LongLivedStats  # the client's long-lived connections
    new_reply: str
    new_ok_s: float  # from writing the new balancer's ACTIVATE to reading its response
    old_reply: str | None  # the old balancer's response to DEACTIVATE (None after a crash)
    old_ok_s: float | None
    arp_s: float | None  # ACTIVATE written -> the client's ARP entry holds the new MAC
    outgoing: Mapping[str, LongLivedStats]  # per frontend: its connections from the VIP
    fresh: Mapping[str, int]  # new connections opened after the move, per answering frontend

    @property
    def survivors(self) -> tuple[ConnStats, ...]:
        """The connections not served by a crashed balancer (those die with it)."""
        return tuple(c for c in self.stats.conns if not self.crashed or c.frontend != self.old)

    @property
    def kept(self) -> int:
        return sum(not c.broken for c in self.survivors)

    @property
    def lost(self) -> Counter:
        """Broken connections per frontend that served them first."""
        return Counter(c.frontend for c in self.stats.conns if c.broken)

    @property
    def max_gap(self) -> float:
        """The longest time a surviving connection went without an answer."""
        return max((c.max_gap for c in self.survivors), default=0.0)

    @property
    def one_server_each(self) -> bool:
        """Every connection was answered by one frontend only: nothing bounced or re-scheduled."""
        return all(set(c.answers) == {c.frontend} for c in self.stats.conns)

    def summary(self) -> str:
        out = "".join(f"; outgoing {k}: {v.summary()}" for k, v in sorted(self.outgoing.items()))
        return (
            f"{self.old} -> {self.new} ({'crash' if self.crashed else 'switch'}): "
            f"{self.kept}/{len(self.survivors)} kept, longest gap {self.max_gap:.3f} s, "
            f"ACTIVATE answered in {self.new_ok_s * 1000:.0f} ms; {self.stats.summary()}{out}"
        )


class Group:
    """fe1..feN (192.0.2.11...), a client (192.0.2.100 + `sources`), optionally a server."""

    def __init__(
        self,
        prefix: str,
        entries: Sequence[str],
        sources: Sequence[str] = (),
        frontends: int = 3,
        vipfile: str | None = None,
        server: bool = False,
        udp: bool = True,
        ipv6: bool = False,
    ) -> None:
        """entries: the VIP file's lines (written to a temporary file unless `vipfile` is the
        file that holds them); the echo service answers TCP 25 (and UDP 5060) on every VIP.
        ipv6: the LAN carries IPv6 too (fe<i> 2001:db8::1<i>, the client 2001:db8::100)."""
        self.prefix, self.entries, self.sources = prefix, list(entries), list(sources)
        self.vips = expand(entries)
        self.count, self.given_vipfile, self.with_server = frontends, vipfile, server
        self.udp_ports = [UDP] if udp else []
        self.ipv6 = ipv6
        self.helpers: dict[str, HelperProcess] = {}
        self.services: list[EchoService] = []

    def __enter__(self) -> Group:
        self._tmp = tempfile.TemporaryDirectory()
        self.vipfile = self.given_vipfile or write_vipfile(
            os.path.join(self._tmp.name, "vipaddrs"), self.entries
        )
        self.lan = Lan(self.prefix, ipv6=self.ipv6)
        try:
            self.lan.open()
            self.fe = [
                self.lan.add_host(f"fe{i}", f"192.0.2.{10 + i}") for i in range(1, self.count + 1)
            ]
            self.client = self.lan.add_host("client", "192.0.2.100", extra_ips=self.sources)
            self.server = self.lan.add_host("server", SERVER_IP) if self.with_server else None
            self.services.append(EchoService(self.fe, self.vips, [TCP], self.udp_ports).start())
            if self.server is not None:
                self.services.append(EchoService([self.server], [], [TCP], [UDP]).start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.helpers.values():
            h.kill()
        for service in self.services:
            service.stop()
        self.lan.close()
        self._tmp.cleanup()

    # --- helpers ---------------------------------------------------------------------------

    def start(self, fe: Host, *args: str, vipfile: str | None = None) -> HelperProcess:
        """The helper on `fe` (-i eth0, the group's VIP file unless given), driven by the test."""
        h = HelperProcess(fe, "-i", "eth0", "-f", vipfile or self.vipfile, *args)
        self.helpers[fe.name] = h
        return h

    def start_all(self, *args: str, timeout: float = 60.0) -> list[HelperProcess]:
        """A helper on every frontend, each started (standby reached). Three Python start-ups
        at once can take tens of seconds in user-mode Linux on a busy host: the timeout is
        generous, as nothing here measures start-up."""
        helpers = [self.start(fe, *args) for fe in self.fe]
        for h in helpers:
            h.wait_started(timeout)
        return helpers

    def members(self, *hosts: Host) -> str:
        """The ACTIVATE member list (every frontend if none given)."""
        return " ".join(h.ip for h in hosts or self.fe)

    def helper_of(self, fe: Host) -> HelperProcess:
        return self.helpers[fe.name]

    # --- traffic ---------------------------------------------------------------------------

    def spread(self, sources: Sequence[str], vip: str | None = None) -> Counter:
        """One new TCP connection from each source address: who answered, how often."""
        return Counter(tcp_ask(self.client, vip or self.vips[0], TCP, src=s) for s in sources)

    def outgoing(
        self, vip: str | None = None, count: int = 12, hosts: Sequence[Host] = ()
    ) -> dict[str, Answered]:
        """From every frontend (or `hosts`), `count` TCP connections and UDP exchanges from
        `vip` to the server: answered/total per frontend name."""
        vip = vip or self.vips[0]
        return outgoing(hosts or self.fe, vip, self.server_ip(vip), TCP, UDP, count)

    def server_ip(self, vip: str) -> str:
        """The server's address of `vip`'s family: the far end of connections from `vip`."""
        assert self.server is not None, "Group(..., server=True) for outgoing traffic"
        ip = self.server.ip6 if ":" in vip else self.server.ip
        assert ip is not None, f"{vip}: an IPv6 VIP needs Group(..., ipv6=True)"
        return ip

    # --- moving the balancer ---------------------------------------------------------------

    def switch(
        self, old: HelperProcess, new: HelperProcess, members: str | None = None, **kw: Any
    ) -> Move:
        """Planned: DEACTIVATE to `old`, then (after `delay` s) ACTIVATE to `new`. See _move."""
        return self._move(old, new, members or self.members(), crash=False, **kw)

    def crash(
        self, old: HelperProcess, new: HelperProcess, members: str | None = None, **kw: Any
    ) -> Move:
        """Abrupt: `old`'s cable pulled and its helper killed, then ACTIVATE to `new`."""
        return self._move(old, new, members or self.members(*self._others(old)), crash=True, **kw)

    def _others(self, old: HelperProcess) -> list[Host]:
        return [fe for fe in self.fe if fe is not old.host]

    def _move(
        self,
        old: HelperProcess,
        new: HelperProcess,
        members: str,
        crash: bool,
        count: int = 12,
        delay: float = 0.0,
        window: float = 3.5,
        broken_after: float = 1.0,
        outgoing: int = 0,
        fresh: Sequence[str] = (),
        settle: float = SETTLE_S,
        outgoing_udp: int = 0,
        activate_first: bool = False,
    ) -> Move:
        """`count` long-lived connections from the client to the first VIP (and `outgoing` from
        each frontend's first VIP to the server, and `outgoing_udp` UDP flows, named
        "<frontend>/udp") ping every 20 ms; `settle` s after they are open the balancer moves
        (`activate_first`: the ACTIVATE written before the DEACTIVATE); they stop `window` s
        after the ACTIVATE was written. A connection is broken when it erred or had no answer
        in its last `broken_after` s. `fresh`: client addresses that each open one new
        connection once both balancers answered (inside the window)."""
        assert old.host is not None and new.host is not None
        vip = self.vips[0]
        runs = [(None, LongLived(self.client, vip, TCP, count, self.sources[:count]))]
        if outgoing:
            server = self.server_ip(vip)
            runs += [(fe.name, LongLived(fe, server, TCP, outgoing, [vip])) for fe in self.fe]
        if outgoing_udp:
            server = self.server_ip(vip)
            runs += [
                (
                    f"{fe.name}/udp",
                    LongLived(fe, server, UDP, outgoing_udp, [vip], kind=socket.SOCK_DGRAM),
                )
                for fe in self.fe
            ]
        with ExitStack() as stack:
            for _, run in runs:
                run.broken_after = broken_after
                stack.enter_context(run)
            before = dict(runs[0][1].snapshot().by_frontend)
            time.sleep(settle)
            if activate_first:
                start, t_new = time.monotonic(), time.time()
                new.send(f"00100 ACTIVATE {members}")
            t_old = time.time()
            if crash:
                old.host.link_down()
                old.kill()
            else:
                old.send("00100 DEACTIVATE")
            if not activate_first:
                time.sleep(delay)
                start, t_new = time.monotonic(), time.time()
                new.send(f"00100 ACTIVATE {members}")
            reply = new.wait_response("00100", 60, t_new)
            old_reply = None if crash else old.wait_response("00100", 60, t_old)
            arp = self._arp(new.host, start)
            spread = self.spread(fresh)
            time.sleep(max(0.0, start + window - time.monotonic()))
            stats = {name: run.stop() for name, run in runs}
        return Move(
            old.host.name,
            new.host.name,
            crash,
            members,
            before,
            stats.pop(None),
            reply.line,
            reply.seconds,
            None if old_reply is None else old_reply.line,
            None if old_reply is None else old_reply.seconds,
            arp,
            stats,
            dict(spread),
        )

    def _arp(self, new: Host, start: float) -> float | None:
        """Seconds from `start` until the client's ARP entry for the first VIP is new's MAC."""
        while time.monotonic() - start < ARP_WAIT_S:
            if self.client.neigh(self.vips[0]) == new.mac:
                return time.monotonic() - start
            time.sleep(0.01)
        return None
