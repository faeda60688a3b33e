"""The preflight check of a frontend (pure): what was found on this host in, one finding per
check out, each OK, WARN or FAIL with the fix in plain words.

An operator runs it on every frontend before going live (`IPVSHelper.py check`, with the
helper's own options), because a mistake in the manual set-up (a VIP missing from lo, the ARP
settings, the member map, another IPVS manager) shows only when traffic is lost. The facts are
gathered read-only by the shell (check.py); nothing here touches the host.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from attrs import frozen

from cgp_ipvs_helper.plan.model import KernelState, Service, Settings, is_ipv6
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE, local_member
from cgp_ipvs_helper.plan.planner import services
from cgp_ipvs_helper.plan.steering import MemberRange, is_our_mark

# Processes that program IPVS or take addresses by VRRP: a second manager of the same VIPs.
OTHER_MANAGERS = ("keepalived", "ldirectord", "pulse", "lvsd", "nanny", "ipvsman")


class Level(enum.IntEnum):
    """A finding's weight; the exit status of the check is the highest one found."""

    OK = 0
    WARN = 1
    FAIL = 2


@frozen
class Finding:
    """One check's verdict: what was found, and for WARN and FAIL what to do about it."""

    level: Level
    text: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.level.name:<4} {self.text}{fix}"


@frozen
class Facts:
    """What the shell found. `vips`/`members` are None when their file failed to load (the error
    text is in `vip_error`/`member_error`); `map_exists` is False when the member map is
    absent (no steering); `state` holds addresses, the settings of `sysctl_paths`, IPVS and
    our tc filters on -i;
    `helpers` and `managers` are (pid, name) of processes in this network namespace."""

    settings: Settings
    vips: tuple[str, ...] | None
    vip_error: str | None
    members: tuple[MemberRange, ...] | None
    member_error: str | None
    map_exists: bool
    iface_exists: bool
    state: KernelState
    ipvs_problem: str | None
    helpers: tuple[tuple[int, str], ...] = ()
    managers: tuple[tuple[int, str], ...] = ()


def sysctl_paths(iface: str) -> frozenset[str]:
    """Every /proc/sys setting the check reads."""
    names = ("arp_ignore", "arp_announce", "rp_filter")
    return frozenset(
        [f"net/ipv4/conf/{dev}/{n}" for dev in ("all", iface) for n in names] + [PORT_RANGE]
    )


def evaluate(facts: Facts) -> list[Finding]:
    """Every check, in the order an operator sets a frontend up."""
    found = [_vipfile(facts), _member_map(facts)]
    found += _this_host(facts)
    found += [_iface(facts), _lo(facts), _arp(facts), _rp_filter(facts), _ipvs(facts)]
    found += [_managers(facts), _dead_run(facts)]
    return found


def status(findings: Sequence[Finding]) -> int:
    """0 all OK, 1 a warning, 2 a failure: like other checkers."""
    return int(max((f.level for f in findings), default=Level.OK))


def _vipfile(facts: Facts) -> Finding:
    path = facts.settings.vipfile
    if facts.vips is None:
        return Finding(Level.FAIL, f"VIP file: {facts.vip_error}", f"fix {path}")
    if not facts.vips:
        return Finding(Level.FAIL, f"VIP file {path} lists no VIP", f"list the VIPs in {path}")
    v6 = sum(map(is_ipv6, facts.vips))
    return Finding(Level.OK, f"VIP file {path}: {len(facts.vips)} VIPs ({v6} IPv6)")


def _member_map(facts: Facts) -> Finding:
    path = facts.settings.member_map
    if facts.members is None:
        return Finding(Level.FAIL, f"member map: {facts.member_error}", f"fix {path}")
    if not facts.map_exists or not facts.members:
        return Finding(
            Level.WARN,
            f"no member map {path}: replies to connections a frontend opens from a VIP "
            "reach whichever member IPVS picks",
            f"write {path} (each member's address and ip_local_port_range) on every member",
        )
    return Finding(Level.OK, f"member map {path}: {len(facts.members)} members")


def _local_ips(facts: Facts) -> set[str]:
    return {a.ip for a in facts.state.addresses} - set(facts.vips or ())


def _this_host(facts: Facts) -> list[Finding]:
    """This host in the map, and its ip_local_port_range the same as its range there."""
    if not facts.members:
        return []
    path = facts.settings.member_map
    local = local_member(facts.members, _local_ips(facts))
    if local is None:
        return [
            Finding(
                Level.FAIL,
                f"no address of this host is in the member map {path}",
                f"add a line '<this host's {facts.settings.iface} address> FIRST-LAST' "
                "on every member",
            )
        ]
    found = [Finding(Level.OK, f"this host is {local} in the member map")]
    now = (facts.state.sysctls.get(PORT_RANGE) or "").split()
    want = [str(local.first), str(local.last)]
    if now != want:
        found.append(
            Finding(
                Level.WARN,
                f"ip_local_port_range is {'-'.join(now) or 'unreadable'}, "
                f"not {local.first}-{local.last} (the helper sets it when it starts)",
                f"set net.ipv4.ip_local_port_range = {local.first} {local.last} in "
                "/etc/sysctl.d and the same range in CGP's Port Allocation",
            )
        )
    else:
        found.append(
            Finding(
                Level.OK,
                f"ip_local_port_range is {local.first}-{local.last} "
                "(CGP's Port Allocation must use the same range)",
            )
        )
    return found


def _iface(facts: Facts) -> Finding:
    iface = facts.settings.iface
    if not facts.iface_exists:
        return Finding(Level.FAIL, f"-i {iface}: no such interface", "give -i the LAN interface")
    vips = set(facts.vips or ())
    on = [a for a in facts.state.addresses_on(iface) if a.ip not in vips]
    v4 = [a.ip for a in on if not is_ipv6(a.ip)]
    if not v4:
        return Finding(
            Level.FAIL, f"-i {iface} has no IPv4 address", f"configure {iface}'s LAN address"
        )
    if any(map(is_ipv6, vips)):
        v6 = [a.ip for a in on if is_ipv6(a.ip)]
        local = local_member(facts.members or (), _local_ips(facts))
        if local is not None and local.ip6 and local.ip6 not in v6:
            return Finding(
                Level.FAIL,
                f"-i {iface} does not hold {local.ip6}, this host's IPv6 address in the member map",
                f"configure {local.ip6} on {iface} or correct the map",
            )
        if not v6:
            return Finding(
                Level.FAIL,
                f"-i {iface} has no global IPv6 address, and the VIP file has IPv6 VIPs",
                f"configure {iface}'s IPv6 LAN address",
            )
        return Finding(Level.OK, f"-i {iface}: {v4[0]}, {v6[0]}")
    return Finding(Level.OK, f"-i {iface}: {v4[0]}")


def _lo(facts: Facts) -> Finding:
    if not facts.vips:
        return Finding(Level.OK, "no VIP to hold on lo")
    on_lo = {a.ip for a in facts.state.addresses_on("lo")}
    missing = [v for v in facts.vips if v not in on_lo]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return Finding(
            Level.FAIL,
            f"VIP {missing[0]}{more} not on lo: traffic a balancer forwards here is dropped",
            "systemctl enable --now cgp-ipvs-vip.service (or cgp-ipvs-vip up)",
        )
    return Finding(Level.OK, f"all {len(facts.vips)} VIPs on lo")


def _effective(facts: Facts, name: str) -> int | None:
    """A conf setting as the kernel applies it to -i: the larger of `all` and the device's."""
    devs = ("all", facts.settings.iface)
    values = [facts.state.sysctls.get(f"net/ipv4/conf/{dev}/{name}") for dev in devs]
    numbers = [int(v) for v in values if v is not None and v.strip().isdigit()]
    return max(numbers) if numbers else None


def _arp(facts: Facts) -> Finding:
    iface = facts.settings.iface
    ignore, announce = _effective(facts, "arp_ignore"), _effective(facts, "arp_announce")
    if ignore not in (1, 2) or announce != 2:
        return Finding(
            Level.FAIL,
            f"ARP on {iface}: arp_ignore {ignore}, arp_announce {announce}: this host would "
            "answer ARP for the VIPs on lo and takes their traffic from the balancer",
            "net.ipv4.conf.all.arp_ignore = 1 and net.ipv4.conf.all.arp_announce = 2 "
            "(/usr/lib/sysctl.d/90-cgp-ipvs-helper.conf: systemctl restart systemd-sysctl)",
        )
    return Finding(Level.OK, f"ARP on {iface}: arp_ignore {ignore}, arp_announce {announce}")


def _rp_filter(facts: Facts) -> Finding:
    iface = facts.settings.iface
    value = _effective(facts, "rp_filter")
    if value == 1:
        return Finding(
            Level.WARN,
            f"strict reverse-path filter on {iface} (rp_filter 1): packets to a VIP from "
            f"clients routed through another interface are dropped",
            f"net.ipv4.conf.all.rp_filter = 2 and net.ipv4.conf.{iface}.rp_filter = 2 "
            "(loose), unless every client is reached through it",
        )
    return Finding(Level.OK, f"rp_filter on {iface}: {value}")


def _ipvs(facts: Facts) -> Finding:
    if not facts.state.ipvs:
        return Finding(
            Level.FAIL,
            f"IPVS: {facts.ipvs_problem}",
            "modprobe ip_vs ip_vs_wlc (the RPM loads them at boot: "
            "/usr/lib/modules-load.d/cgp-ipvs-helper.conf)",
        )
    return Finding(Level.OK, "IPVS available")


def _ours(facts: Facts) -> frozenset[Service]:
    return services(facts.settings, facts.vips or ())


def _foreign(facts: Facts) -> list[Service]:
    """IPVS services on our VIPs that this helper would not make: another manager's."""
    vips, ours = set(facts.vips or ()), _ours(facts)
    return sorted((s for s in facts.state.services if s.key.vip in vips and s not in ours), key=str)


def _managers(facts: Facts) -> Finding:
    foreign = _foreign(facts)
    names = ", ".join(f"{name} ({pid})" for pid, name in facts.managers)
    if foreign:
        first = foreign[0].key
        return Finding(
            Level.FAIL,
            f"{len(foreign)} IPVS services on our VIPs are not the helper's (first: {first})"
            + (f"; running: {names}" if names else ""),
            "let one manager own the VIPs: remove them from the other one's configuration "
            f"(ipvsadm -D {'-t' if first.proto == 'tcp' else '-u'} {first.vip}:{first.port})",
        )
    if names:
        return Finding(
            Level.WARN,
            f"another IPVS/VRRP manager runs: {names}",
            "make sure it manages none of the VIPs, or stop it",
        )
    return Finding(Level.OK, "no other IPVS manager")


def _dead_run(facts: Facts) -> Finding:
    """What a helper that stopped without QUIT (killed, crashed) leaves: services, a sync
    daemon, VIPs on -i, our tc filters. While a helper runs, they are its own."""
    if facts.helpers:
        pids = ", ".join(str(pid) for pid, _ in facts.helpers)
        return Finding(Level.OK, f"a helper runs here (pid {pids}): the IPVS state is its own")
    iface, vips = facts.settings.iface, set(facts.vips or ())
    on_iface = [a.ip for a in facts.state.addresses_on(iface) if a.ip in vips]
    left = []
    services_left = [s for s in facts.state.services if s in _ours(facts) or _marked(s)]
    if services_left:
        left.append(f"{len(services_left)} IPVS services")
    if facts.state.daemons:
        left.append("a sync daemon")
    tc = facts.state.tc
    if tc is not None and tc.filters:
        left.append(f"{len(tc.filters)} tc filters")
    if on_iface:
        return Finding(
            Level.FAIL,
            f"no helper runs, yet VIP {on_iface[0]} is on {iface}: this host still takes the "
            "VIPs' traffic" + (f" ({', '.join(left)} left)" if left else ""),
            "start the helper (it clears what a stopped run left), or "
            f"ip address del {on_iface[0]}/{32 if not is_ipv6(on_iface[0]) else 128} dev {iface}",
        )
    if left:
        return Finding(
            Level.WARN,
            f"no helper runs, yet {', '.join(left)} of a stopped run are left",
            "start the helper (it clears them at start), or ipvsadm --stop-daemon and remove "
            "the services",
        )
    return Finding(Level.OK, "nothing left by a stopped run")


def _marked(service: Service) -> bool:
    return bool(service.key.fwmark) and is_our_mark(service.key.fwmark)
