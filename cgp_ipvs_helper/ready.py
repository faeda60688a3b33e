"""The ACTIVATE from standby, planned while standby: everything but its real servers.

Of what an ACTIVATE from standby changes, only the real servers depend on the member list it
brings: the services, the sync daemons' switch, the VIPs on the LAN interface and the gratuitous
ARP round are known as soon as the VIP file and the kernel's state are. `prepare()` plans them
then, with their log lines (and the kernel builds their messages: `Kernel.prepare`); at
ACTIVATE, `activation()` adds one real server per service and member, already in plan order,
instead of planning thousands of values again.

It equals `plan(desired_state(.., ACTIVE, members, ..), state)` plus the announcement exactly
when `state` holds no service of ours (then there is no real server to keep, change or delete):
`prepare()` returns None otherwise, and the helper plans in full. tests/unit/test_ready.py
checks the equality on generated states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import frozen

from .model import Dest, KernelState, Role, ServiceKey, Settings, is_ipv6
from .operations import AddDest, AddService, Operation, prepare_real_servers
from .planner import _weight, announce, desired_state, ip_order, plan
from .protocol import command_line


@frozen(eq=False)
class Ready:
    """An ACTIVATE from standby planned against `state` for `vips` and `retired`, less its real
    servers: `before` ends with the services' additions, `after` follows the real servers,
    `garp` is the announcement; `lines` holds the info line of each, by id()."""

    state: KernelState
    vips: tuple[str, ...]
    retired: frozenset[str]
    before: tuple[Operation, ...]
    after: tuple[Operation, ...]
    garp: tuple[Operation, ...]
    services: tuple[ServiceKey, ...]
    lines: Mapping[int, str]

    def ops(self) -> tuple[Operation, ...]:
        """Every operation built ahead, for `Kernel.prepare`."""
        return self.before + self.after + self.garp

    def fits(self, vips: tuple[str, ...], retired: frozenset[str], state: KernelState) -> bool:
        """Still the plan for these VIPs and this state (the same values)?"""
        return (
            self.vips == vips
            and self.retired == retired
            and self.state == state
            and dict(self.state.sysctls) == dict(state.sysctls)
        )


def prepare(
    settings: Settings, vips: tuple[str, ...], retired: frozenset[str], state: KernelState
) -> Ready | None:
    """Plan the ACTIVATE from `state` with no members yet; None if `state` holds a service of
    ours (then the real servers to plan depend on what is there) or a VIP is IPv6 (its real
    servers are the members' IPv6 addresses): plan() in full then."""
    if any(is_ipv6(v) for v in vips):  # their real servers come from the member map
        return None
    desired = desired_state(settings, vips, Role.ACTIVE, (), None, retired)
    if any(s.key.vip in desired.scope for s in state.services):
        return None
    ops = plan(desired, state)
    split = max((i + 1 for i, op in enumerate(ops) if isinstance(op, AddService)), default=0)
    services = tuple(op.service.key for op in ops[:split] if isinstance(op, AddService))
    garp = announce(vips, settings.iface)
    lines = {id(op): command_line(op) for op in ops + garp}
    prepare_real_servers(services)
    return Ready(state, vips, retired, ops[:split], ops[split:], garp, services, lines)


def activation(
    ready: Ready, settings: Settings, members: Sequence[str], self_ip: str
) -> tuple[Operation, ...]:
    """The ACTIVATE's operations for `members`, the announcement last."""
    weights = [
        (m, _weight(settings, Role.ACTIVE, m == self_ip)) for m in sorted(members, key=ip_order)
    ]
    dests = tuple(AddDest(Dest(key, m, w)) for key in ready.services for m, w in weights)
    return ready.before + dests + ready.after + ready.garp
