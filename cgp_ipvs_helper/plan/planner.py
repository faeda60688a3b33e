"""Pure planning: the desired kernel state for a role (`desired()`: the role's own, with the
member map's steering), and the operations that reach it (takeover.py plans an ACTIVATE from
standby ahead of its members from these).

`plan()` compares desired with observed and returns only the difference, in an order that keeps
traffic flowing: lo aliases and ARP sysctls first; VIPs leave the LAN interface before anything
else changes; IPVS services and real servers are ready (and stale ones gone), and the sync
daemons switched, before a VIP is taken on the LAN interface; the steering filters (outgoing.py)
are set once their firewall-mark services exist and removed before those go; `backup_only` is
raised only after the backup daemon it would block stopped. Deletions are
limited to `scope` (our VIPs), firewall-mark services with our marks, our filters, and sync
daemons on our interface and SyncID: nothing not ours is ever touched.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs

from cgp_ipvs_helper.plan.guard import guards
from cgp_ipvs_helper.plan.model import (
    Address,
    Daemon,
    DesiredState,
    Dest,
    KernelState,
    Role,
    Service,
    ServiceKey,
    Settings,
    Sysctl,
    TcState,
    balanced_vips,
    host_prefixlen,
    is_ipv6,
)
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddDest,
    AddService,
    DelAddress,
    DelDest,
    DelService,
    EditDest,
    EditService,
    Operation,
    SendGarp,
    SendNa,
    SetSysctl,
    StartDaemon,
    StopDaemon,
)
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.realservers import NO_IPV6, ip_order, key_order, real_servers
from cgp_ipvs_helper.plan.steering import is_our_mark
from cgp_ipvs_helper.plan.tcops import AddClsact, AddGuard, DelGuard, filter_changes

OTHER_WEIGHT = 100
DRAIN_SELF_WEIGHT = 100
SCHEDULER = "wlc"

# With -p 0 IPVS cannot balance "all ports" (port 0 needs persistence), so one service per port
# of CommuniGate Pro's usual set: SMTP, HTTP, POP, IMAP, LDAP, HTTPS, SMTPS, submission, LDAPS,
# IMAPS, POP3S, SIP, SIP/TLS, XMPP (c2s, legacy TLS, s2s), CGP admin and CGP's HTTP user port.
DEFAULT_PORTS: tuple[tuple[str, int], ...] = tuple(
    [
        ("tcp", p)
        for p in (
            25,
            80,
            110,
            143,
            389,
            443,
            465,
            587,
            636,
            993,
            995,
            5060,
            5061,
            5222,
            5223,
            5269,
            8100,
            9100,
        )
    ]
    + [("udp", 5060)]
)


BACKUP_ONLY = "net/ipv4/vs/backup_only"


def sysctls(iface: str, role: Role = Role.STANDBY) -> tuple[Sysctl, ...]:
    """The settings every member keeps; a path the kernel lacks is skipped, not created.

    `backup_only` is 0 only while taking over: the backup daemon still runs then, and the
    balancer must forward."""
    return (
        # answer ARP only for addresses on the interface asked: a VIP on lo stays silent
        Sysctl("net/ipv4/conf/all/arp_ignore", "1"),
        Sysctl(f"net/ipv4/conf/{iface}/arp_ignore", "1"),
        # source ARP requests from the interface's own address, never from a VIP on lo
        Sysctl("net/ipv4/conf/all/arp_announce", "2"),
        Sysctl(f"net/ipv4/conf/{iface}/arp_announce", "2"),
        # a sync backup that is also a real server must not forward synced connections again,
        # or SYNs loop between directors (kernel >= 4.5 and RHEL 7+ have it)
        Sysctl(BACKUP_ONLY, "0" if role is Role.TAKING_OVER else "1"),
        # connections to a member that left expire at once, so its clients reconnect elsewhere
        Sysctl("net/ipv4/vs/expire_nodest_conn", "1"),
    )


def sysctl_paths(iface: str) -> frozenset[str]:
    return frozenset(s.path for s in sysctls(iface))


def services(settings: Settings, vips: Iterable[str]) -> frozenset[Service]:
    """Per VIP: TCP and UDP on port 0 with persistence, or the per-port set without it."""
    if settings.persistence > 0:
        ports: Sequence[tuple[str, int]] = (("tcp", 0), ("udp", 0))
    else:
        ports = settings.ports or DEFAULT_PORTS
    return frozenset(
        Service(ServiceKey(proto, vip, port), SCHEDULER, settings.persistence)
        for vip in vips
        for proto, port in ports
    )


def _weight(settings: Settings, role: Role, is_self: bool) -> int:
    """Relative weight of a real server.

    While draining, this server takes every new connection itself and quiesces the others
    (weight 0: their existing connections are still forwarded). A new connection reaching a
    draining balancer was either sent by a client that has not yet seen the new balancer's
    gratuitous ARP, or forwarded here by the new balancer as to a real server: scheduling it
    elsewhere again would make it bounce between the two directors.
    """
    if role is Role.DRAINING:
        return DRAIN_SELF_WEIGHT if is_self else 0
    return settings.weight if is_self else OTHER_WEIGHT


def weights(
    settings: Settings, role: Role, members: Iterable[str], self_ip: str | None
) -> dict[str, int]:
    """Each member's weight as a real server of the VIPs' services."""
    return {m: _weight(settings, role, m == self_ip) for m in members}


BALANCING = (Role.ACTIVE, Role.TAKING_OVER, Role.DRAINING)  # roles with IPVS services
ANNOUNCING = (Role.ACTIVE, Role.TAKING_OVER)  # roles with the VIPs on the LAN interface
# The sync daemons of each role. The old balancer's master sends what it queued for up to a few
# seconds after the switch (it batches entries until a message is full, or for 2 s), and those
# are its youngest connections: taking over, the new balancer keeps its backup daemon, and
# after a short drain the old one keeps its master until then (session.FLUSH_S).
DAEMONS: Mapping[Role, tuple[str, ...]] = MappingProxyType(
    {
        Role.STANDBY: ("backup",),
        Role.ACTIVE: ("master",),
        Role.TAKING_OVER: ("backup", "master"),
        Role.DRAINING: ("master",),
        Role.FLUSHING: ("backup", "master"),
        Role.STOPPED: (),
    }
)


def _role_state(
    settings: Settings,
    vips: Sequence[str],
    role: Role,
    members: Sequence[str],
    self_ip: str | None,
    retired: frozenset[str],
    members6: Mapping[str, str],
) -> DesiredState:
    """What the kernel should hold for `role` but the member map's steering.

    `members6` maps a member (named by IPv4, as CGP names it) to its IPv6 address on -i's link
    (the member map's third column): an IPv6 VIP's real servers. A member without one is left
    out of the IPv6 services; with no IPv6 member at all, IPv6 VIPs are held on lo only.
    """
    balancing = role in BALANCING
    balanced = balanced_vips(vips, members6)
    svcs = services(settings, balanced) if balancing else frozenset()
    weight = weights(settings, role, members, self_ip)
    dests = frozenset(
        Dest(s.key, ip, weight[m])
        for s in svcs
        for m in members
        for ip in real_servers(m, s.key.vip, members6)
    )
    daemons = frozenset(Daemon(d, settings.iface, settings.syncid) for d in DAEMONS[role])
    return DesiredState(
        iface=settings.iface,
        syncid=settings.syncid,
        on_lo=frozenset(vips),
        on_iface=frozenset(balanced) if role in ANNOUNCING else frozenset(),
        sysctls=sysctls(settings.iface, role),
        services=svcs,
        dests=dests,
        daemons=daemons,
        scope=frozenset(vips) | retired,
        guards=guards(balanced) if role is Role.TAKING_OVER else frozenset(),
    )


def desired(
    settings: Settings,
    vips: Sequence[str],
    role: Role,
    members: Sequence[str],
    self_ip: str | None,
    retired: frozenset[str] = frozenset(),
    member_map: MemberMap | None = None,
    actual: KernelState | None = None,
) -> DesiredState:
    """What the kernel should hold for `role`, the member map's part (its IPv6 addresses, its
    steering: outgoing.py) as it stands against `actual`, the kernel read, included; `retired`
    VIPs left the file and are cleaned up."""
    if member_map is None:
        return _role_state(settings, vips, role, members, self_ip, retired, NO_IPV6)
    state = _role_state(settings, vips, role, members, self_ip, retired, member_map.ipv6())
    steering = member_map.steering(role in BALANCING, vips, actual or KernelState())
    if steering is None:
        return state
    return attrs.evolve(
        state,
        sysctls=state.sysctls + steering.sysctls,
        services=state.services | steering.services,
        dests=state.dests | steering.dests,
        filters=steering.filters,
    )


def holds_ours(state: KernelState, scope: frozenset[str]) -> bool:
    """Whether `state` holds an IPVS service of ours (see `plan`)."""
    return any(_our_service(s.key, scope) for s in state.services)


def _our_service(key: ServiceKey, scope: frozenset[str]) -> bool:
    """A service of one of our VIPs, or a firewall-mark service with our marks (steering)."""
    return is_our_mark(key.fwmark) if key.fwmark else key.vip in scope


def _dest_order(k: tuple[ServiceKey, str]) -> tuple[tuple[int, bytes, str, int], bytes]:
    return (key_order(k[0]), ip_order(k[1]))


def plan(desired: DesiredState, actual: KernelState) -> tuple[Operation, ...]:
    """The operations that turn `actual` into `desired`, and nothing else."""
    ops: list[Operation] = []
    iface, scope = desired.iface, desired.scope

    on_lo = {a.ip for a in actual.addresses_on("lo")}
    ops += [AddAddress(Address(ip, "lo")) for ip in sorted(desired.on_lo - on_lo, key=ip_order)]

    blocking: list[Operation] = []  # backup_only raised: only once the backup daemon stopped
    for s in desired.sysctls:
        current = actual.sysctls.get(s.path)
        if current is not None and current.split() != s.value.split():  # "a\tb" is "a b"
            (blocking if s.path == BACKUP_ONLY and s.value == "1" else ops).append(SetSysctl(s))

    ours_on_iface = [a for a in actual.addresses_on(iface) if _ours(a, scope)]
    ops += [DelAddress(a) for a in ours_on_iface if a.ip not in desired.on_iface]

    have: dict[ServiceKey, Service] = {
        s.key: s for s in actual.services if _our_service(s.key, scope)
    }
    want: dict[ServiceKey, Service] = {s.key: s for s in desired.services}
    for key in sorted(want, key=key_order):
        if key not in have:
            ops.append(AddService(want[key]))
        elif have[key] != want[key]:
            ops.append(EditService(want[key]))

    have_d = {(d.service, d.ip): d for d in actual.dests if d.service in have}
    want_d = {(d.service, d.ip): d for d in desired.dests}
    wanted = sorted(want_d, key=_dest_order)
    ops += [AddDest(want_d[k]) for k in wanted if k not in have_d]  # new ones first
    ops += [EditDest(want_d[k]) for k in wanted if k in have_d and have_d[k] != want_d[k]]
    ops += [
        DelDest(have_d[k])
        for k in sorted(have_d, key=_dest_order)
        if k not in want_d and k[0] in want
    ]

    ops += _filter_ops(desired, actual)  # marks only for services that exist
    ops += [DelService(have[k]) for k in sorted(have, key=key_order) if k not in want]

    ours_daemons = {d for d in actual.daemons if d.iface == iface and d.syncid == desired.syncid}
    ops += [StopDaemon(d) for d in sorted(ours_daemons - desired.daemons, key=_daemon_order)]
    ops += [StartDaemon(d) for d in sorted(desired.daemons - actual.daemons, key=_daemon_order)]
    ops += blocking
    ops += _guard_ops(desired, actual, ops)

    on_iface = {a.ip for a in ours_on_iface}
    ops += [
        AddAddress(Address(ip, iface)) for ip in sorted(desired.on_iface - on_iface, key=ip_order)
    ]

    ops += [
        DelAddress(a)
        for a in actual.addresses_on("lo")
        if _ours(a, scope) and a.ip not in desired.on_lo
    ]
    return tuple(ops)


def _filter_ops(desired: DesiredState, actual: KernelState) -> list[Operation]:
    # nothing while the member map never had entries (`desired.filters` None)
    if desired.filters is None or actual.tc is None:
        return []
    return filter_changes(desired.iface, desired.filters, actual.tc)


def recheck(
    member_map: MemberMap, dev: str, vips: Sequence[str], local_ips: Collection[str], tc: TcState
) -> list[Operation]:
    """A balancer's steering looked at again alone (`tc` read without IPVS): the filters the
    MACs now known change."""
    wanted = member_map.filters(vips, local_ips, tc)
    return [] if wanted is None else filter_changes(dev, wanted, tc)


def _guard_ops(
    desired: DesiredState, actual: KernelState, before: Sequence[Operation]
) -> list[Operation]:
    """The reset guard's filters: ours that differ go, the desired ones come (after the clsact
    qdisc, unless `before` adds it already). Nothing if the egress was not read; no additions
    where an ingress qdisc (no egress hook) is in the way."""
    state, iface = actual.guard, desired.iface
    if state is None:
        return []
    have = {(pref, handle): what for pref, handle, what in state.guards}
    want = {(g.pref, g.handle): g for g in desired.guards}
    ops: list[Operation] = [
        DelGuard(iface, *key) for key in sorted(have) if want.get(key) != have[key]
    ]
    adds = [AddGuard(iface, want[key]) for key in sorted(want) if have.get(key) != want[key]]
    if not adds or state.qdisc == "ingress":
        return ops
    if state.qdisc is None and AddClsact(iface) not in before:
        ops.append(AddClsact(iface))
    return ops + adds


def _ours(a: Address, scope: frozenset[str]) -> bool:
    """An address this helper may take away: a /32 (/128) of one of its VIPs, as it adds them.
    An address with any other prefix is the host's own (a LAN address listed as a VIP by
    mistake, or a range someone put on lo), whatever the VIP file says."""
    return a.prefixlen == host_prefixlen(a.ip) and a.ip in scope


def _daemon_order(d: Daemon) -> int:
    # stop/start the backup before the master: the backup's backup_only blocks forwarding
    return 0 if d.state == "backup" else 1


def announce(
    vips: Iterable[str], iface: str, members6: Mapping[str, str] = NO_IPV6
) -> tuple[SendGarp | SendNa, ...]:
    """An announcement round for the balanced VIPs: per IPv4 VIP a gratuitous ARP in request
    and reply form (peers differ in what they learn), per IPv6 VIP one unsolicited neighbour
    advertisement (one form: override, to all-nodes)."""
    ops: list[SendGarp | SendNa] = []
    for ip in sorted(balanced_vips(vips, members6), key=ip_order):
        if is_ipv6(ip):
            ops.append(SendNa(ip, iface))
        else:
            ops += [SendGarp(ip, iface, False), SendGarp(ip, iface, True)]
    return tuple(ops)
