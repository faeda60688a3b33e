"""The ACTIVATE from standby, planned while standby and kept: its log lines and messages too.

The planner plans an ACTIVATE from standby before its members are known (plan/takeover.py): all
of it but the real servers of the VIPs' services, which it then gives in one AddDests value per
family. `prepare()` has it planned as soon as the VIP file, the member map and the kernel's
state are known, with the announcement round, their log texts and the member checks of that
state (and the kernel builds their messages: `Kernel.prepare`); at ACTIVATE, `activation()`
takes the planner's operations for the members. None when the state holds a service of ours:
the helper plans in full then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from attrs import frozen

from cgp_ipvs_helper.core.members import Resolver
from cgp_ipvs_helper.core.protocol import logged
from cgp_ipvs_helper.plan.model import KernelState, Settings
from cgp_ipvs_helper.plan.operations import Operation, prepare_real_servers
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import announce
from cgp_ipvs_helper.plan.takeover import Takeover, takeover


@frozen(eq=False)
class Ready:
    """An ACTIVATE from standby planned against `state` for `vips`, `retired` and `member_map` (a
    copy of the member map as it was): the planner's `plan`, then the announcement `garp`;
    `logged` holds the info line of each operation planned, encoded; `members` checks the
    ACTIVATE's members against `state`."""

    state: KernelState
    vips: tuple[str, ...]
    retired: frozenset[str]
    member_map: MemberMap
    plan: Takeover
    garp: tuple[Operation, ...]
    logged: Mapping[Operation, bytes]
    members: Resolver

    def ops(self) -> tuple[Operation, ...]:
        """Every operation built ahead, for `Kernel.prepare`."""
        return self.plan.before + self.plan.after + self.garp

    def fits(
        self,
        vips: tuple[str, ...],
        retired: frozenset[str],
        member_map: MemberMap,
        state: KernelState,
    ) -> bool:
        """Still the plan for these VIPs, this member map and this state (the same values)?"""
        return (
            self.vips == vips
            and self.retired == retired
            and self.member_map == member_map
            and self.state == state
        )


def prepare(
    settings: Settings,
    vips: tuple[str, ...],
    retired: frozenset[str],
    member_map: MemberMap,
    state: KernelState,
) -> Ready | None:
    """Plan the ACTIVATE from `state` with no members yet; None if `state` holds a service of
    ours (then the real servers to plan depend on what is there): plan() in full then."""
    ahead = takeover(settings, vips, retired, member_map, state)
    if ahead is None:
        return None
    garp = announce(vips, settings.iface, ahead.members6)
    kept = {op: logged(op) for op in ahead.before + ahead.after + garp}
    prepare_real_servers(ahead.services())
    copy = attrs.evolve(member_map)
    checks = Resolver.of(settings, vips, state)
    return Ready(state, vips, retired, copy, ahead, garp, kept, checks)


def activation(
    ready: Ready, settings: Settings, members: Sequence[str], self_ip: str
) -> tuple[Operation, ...]:
    """The ACTIVATE's operations for `members`, the announcement last."""
    return ready.plan.ops(settings, members, self_ip) + ready.garp
