"""An ACTIVATE from standby planned before its members are known: the planner's plan of a
takeover, less the real servers of the VIPs' services, which are then given in one AddDests value
per family (every real server is new)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

from attrs import frozen

from cgp_ipvs_helper.plan.model import KernelState, Role, ServiceKey, Settings
from cgp_ipvs_helper.plan.operations import AddService, Operation
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import desired, holds_ours, plan, weights
from cgp_ipvs_helper.plan.realservers import Families, families, real_server_changes


@frozen(eq=False)
class Takeover:
    """An ACTIVATE from a kernel holding no IPVS service of ours, planned before its members are
    known (see `takeover`): `before` ends with the services' additions, the VIPs' real servers
    come next, `after` follows them; `families`: the VIPs' services by family."""

    before: tuple[Operation, ...]
    after: tuple[Operation, ...]
    families: Families
    members6: Mapping[str, str]

    def services(self) -> Iterable[ServiceKey]:
        """The VIPs' services, which get the members as real servers."""
        return chain.from_iterable(keys for _v6, keys in self.families)

    def ops(
        self, settings: Settings, members: Sequence[str], self_ip: str
    ) -> tuple[Operation, ...]:
        """The plan for `members`: every real server is new, one AddDests value per family."""
        weight = weights(settings, Role.TAKING_OVER, members, self_ip)
        dests = real_server_changes(self.families, {}, weight, self.members6)
        return self.before + dests + self.after


def takeover(
    settings: Settings,
    vips: Sequence[str],
    retired: frozenset[str],
    member_map: MemberMap,
    actual: KernelState,
) -> Takeover | None:
    """The ACTIVATE from `actual` less what depends on its members: only the real servers of
    the VIPs' services do, when `actual` holds no service of ours (None otherwise: there are
    real servers to keep, change or delete, and `plan` decides). With its AddDests values
    expanded (`operations.each`), `ops()` is `plan(desired(.., TAKING_OVER, members, ..),
    actual)`: the member map's services and filters are the map's, whoever is listed."""
    want = desired(settings, vips, Role.TAKING_OVER, (), None, retired, member_map, actual)
    if holds_ours(actual, want.scope):
        return None
    ops = plan(want, actual)
    split = max((i + 1 for i, op in enumerate(ops) if isinstance(op, AddService)), default=0)
    services = (
        op.service.key
        for op in ops[:split]
        if isinstance(op, AddService) and not op.service.key.fwmark  # steering: the map's own
    )
    return Takeover(ops[:split], ops[split:], families(services), member_map.ipv6())
