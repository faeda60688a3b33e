"""The engine's kernel side: read the kernel, bring it to the desired state of the role, and
keep what was made (the ACTIVATE planned ahead while standby, the kernel as made while active).

Each kernel operation is logged as an info line holding its shell equivalent, the same text in
real mode and in -m mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, Union

import attrs

from cgp_ipvs_helper.core import members
from cgp_ipvs_helper.core.balance import Balance
from cgp_ipvs_helper.core.protocol import Commands, Info
from cgp_ipvs_helper.core.ready import Ready, activation, prepare
from cgp_ipvs_helper.core.session import Session, State
from cgp_ipvs_helper.errors import KernelError, VipFileError
from cgp_ipvs_helper.kernel.executor import execute
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.model import KernelState, Role, ServiceKey, Settings
from cgp_ipvs_helper.plan.operations import Operation, each
from cgp_ipvs_helper.plan.outgoing import RESOLVED_WITHIN, MemberMap, unresolved
from cgp_ipvs_helper.plan.planner import BALANCING, announce, desired, plan, recheck, weights
from cgp_ipvs_helper.plan.realservers import Families, families

Infos = list[Union[Info, Commands]]  # what one call has to say so far, in order
RECHECKED = "steering: the members' MACs read again, the filters they change follow"


class Converger:
    """The kernel side of `Helper` (engine.py), which sets these attributes."""

    settings: Settings
    kernel: Kernel
    clock: Callable[[], float]
    session: Session
    paths: frozenset[str]
    map: MemberMap
    vips: tuple[str, ...]
    vip_error: VipFileError | None
    retired: frozenset[str]
    ipvs_problem: str | None
    ready: Ready | None
    balance: Balance | None
    recheck_due: float | None
    told_no_ipv6: set[str]

    def _held(self) -> Balance | None:
        """The kernel as this helper last made it while active, if it still may be trusted (a
        failure forgets it; a range dropped for want of its owner's MAC does not: it only asks
        for the neighbours to be read again, _recheck)."""
        held = self.balance
        if held is None or self.session.state is not State.ACTIVE:
            return None
        return held if held.fits(self.vips, self.retired, self.map) else None

    def _change(self, held: Balance, infos: Infos) -> list[KernelError]:
        """An ACTIVATE while active, the kernel as last made: only the real servers that change,
        and the announcement round. An operation that fails says the kernel was changed behind
        the helper's back: it is read and brought to the desired state at once."""
        ses = self.session
        assert ses.self_ip is not None  # (active)
        self._ipv6_notes(infos, held.member_map.ipv6())
        changes, after = held.change(self.settings, ses.members, ses.self_ip)
        failures = execute((*changes, *held.garp), self.kernel)
        if not failures:
            if changes:
                infos.append(Commands(changes))
            infos.append(Commands(held.garp, built=held.logged))
            self.balance = after
            return []
        self._log((*changes, *held.garp), failures, infos)
        self.balance = None
        infos.append(Info("the kernel differs from what this helper made: reading it again"))
        return self._converge(infos)

    def _ipv6_notes(self, infos: Infos, members6: Mapping[str, str]) -> None:
        """While balancing: say once per member that it lacks an IPv6 address, if it matters
        (the map's members own a range service each, listed or not)."""
        told, listed = self.told_no_ipv6, [*self.session.members, *self.map.ips()]
        notes = members.without_ipv6(self.settings, self.vips, listed, members6, told)
        infos += [Info(note) for note in notes]

    def _converge(
        self,
        infos: Infos,
        actual: KernelState | None = None,
        garp: bool = False,
        ready: Ready | None = None,
        resolver: members.Resolver | None = None,
    ) -> list[KernelError]:
        """Bring the kernel to the desired state of the current role; log each operation.
        `ready`: an ACTIVATE from standby planned against `actual`; `resolver`: the member
        checks of `actual`, if made.

        Returns the failures, each also logged as a FAILED line. A request waiting for this
        step (ACTIVATE, DEACTIVATE) is answered ERROR with the first one. For the steps no
        request waits for (start, SIGHUP, drain end, refresh, QUIT) the FAILED lines are the
        report. Either way the desired state stays, retired VIPs stay in scope, and the session
        is left unsettled, so the next refresh retries at most -t seconds later even while
        requests keep arriving (a QUIT's last step excepted: the helper exits).
        """
        if self.vip_error is not None:
            return []
        if actual is None:
            actual = self._observe(infos)
        ses = self.session
        ahead, self.ready, self.balance = self.ready, None, None
        known: Mapping[Operation, bytes] = {}
        members6 = self.map.ipv6()
        balancing = ses.role in BALANCING
        if balancing:
            self._ipv6_notes(infos, members6)
        services: Iterable[ServiceKey] = ()
        if ready is not None and ses.self_ip is not None:
            ops: Sequence[Operation] = activation(ready, self.settings, ses.members, ses.self_ip)
            known, garps = ready.logged, ready.garp
        else:
            want = desired(
                self.settings,
                self.vips,
                ses.role,
                ses.members,
                ses.self_ip,
                self.retired,
                self.map,
                actual,
            )
            services = (s.key for s in want.services if not s.key.fwmark)  # steering: the map's
            ops = plan(want, actual)
            garps = announce(self.vips, self.settings.iface, members6)
            if garp and ses.state is State.ACTIVE:
                ops += garps
        failures = execute(ops, self.kernel)
        # a range newly dropped for want of its owner's MAC (asked for by the last read): read
        # again soon, once (then every -t), whether it is dropped now or in the ACTIVATE ahead
        recheck = balancing and unresolved(ops)
        if not failures:
            self.retired = frozenset()
            if ses.state is State.STANDBY:  # what it did is all that changed: read it again
                self._plan_ahead(ahead, self._read() if ops else actual)
                recheck = self._unresolved(self.ready) and not self._unresolved(ahead)
            elif ses.state is State.ACTIVE:
                by_family = ready.plan.families if ready is not None else families(services)
                checks = resolver or members.Resolver.of(self.settings, self.vips, actual)
                self._hold(by_family, garps, checks, known)
        ses.settled = not failures
        if recheck:
            due = self.clock() + RESOLVED_WITHIN
            self.recheck_due = due if self.recheck_due is None else min(self.recheck_due, due)
        self._log(ops, failures, infos, known)
        return failures

    def _recheck(self, infos: Infos) -> None:
        """A second after a plan dropped a range for want of its owner's MAC: the steering
        looked at again alone (planner.recheck), not the kernel read and planned in full,
        which would hold up the next request. Active as last made: only the filters the MACs
        now known change; standby: the ACTIVATE ahead planned again if they changed. Else (a
        drain, a failure forgotten) the kernel is read and brought to the desired state."""
        self.recheck_due = None
        held, dev = self._held(), self.settings.iface
        ahead = self.ready if self.session.state is State.STANDBY else None
        if held is None and ahead is None:
            self._converge(infos)
            return
        tc = self.kernel.read_tc(dev, self.map.neighbours())
        if ahead is not None:
            self._plan_ahead(ahead, attrs.evolve(ahead.state, tc=tc))
            return
        assert held is not None
        ops = recheck(self.map, dev, self.vips, held.members.local, tc)
        if not ops:
            return
        infos.append(Info(RECHECKED))
        failures = execute(ops, self.kernel)
        if failures:  # the refresh retries
            self.session.settled = False
        self._log(ops, failures, infos)

    def _taken_over(self, infos: Infos) -> None:
        """The takeover's end: the backup sync daemon stops, backup_only and the reset guards
        go back. IPVS's services and real servers stay as this helper made them (trusted as a
        member change trusts them): read without them, and only the rest planned, so a request
        arriving meanwhile is not held up by a read of the whole table. Not trusted: in full."""
        held = self._held()
        if held is None:
            self._converge(infos)
            return
        ses, actual = self.session, self._observe(infos, tables=False)
        want = desired(self.settings, self.vips, ses.role, (), None, self.retired, self.map, actual)
        ops = plan(attrs.evolve(want, services=frozenset(), dests=frozenset()), actual)
        failures = execute(ops, self.kernel)
        if failures:
            self.balance = None  # the refresh reads it all
        ses.settled = not failures
        self._log(ops, failures, infos)

    def _hold(
        self,
        by_family: Families,
        garp: tuple[Operation, ...],
        checks: members.Resolver,
        known: Mapping[Operation, bytes],
    ) -> None:
        """Active, and the kernel as desired: remember it (balance.py); the announcement round
        is built for the kernel, whose last preparation (standby's) is of no more use."""
        ses = self.session
        held = weights(self.settings, Role.ACTIVE, ses.members, ses.self_ip)
        lines = {op: known[op] for op in garp} if known else None
        self.balance = Balance.of(
            self.vips, self.retired, self.map, by_family, held, garp, checks, lines
        )
        if not known:
            self.kernel.prepare(garp)

    def _unresolved(self, ready: Ready | None) -> bool:
        return self.map.seen and ready is not None and unresolved(ready.ops())

    def _plan_ahead(self, last: Ready | None, state: KernelState) -> None:
        """While standby: plan the ACTIVATE against `state` now, and have the kernel build its
        messages (the last plan is kept while it still fits: a quiet refresh costs nothing)."""
        if last is None or not last.fits(self.vips, self.retired, self.map, state):
            last = prepare(self.settings, self.vips, self.retired, self.map, state)
            if last is not None:
                self.kernel.prepare(last.ops())
        self.ready = last

    def _observe(self, infos: Infos, tables: bool = True) -> KernelState:
        """Read the kernel; log once (per change) why IPVS cannot be used, if it cannot."""
        actual = self._read(tables)
        problem = None if actual.ipvs else self.kernel.ipvs_problem
        if problem != self.ipvs_problem:
            infos.append(Info(f"IPVS: {problem}" if problem else "IPVS: available again"))
            self.ipvs_problem = problem
        return actual

    def _read(self, tables: bool = True) -> KernelState:
        tc_dev, iface = self.map.tc_dev(self.settings.iface), self.settings.iface
        if tc_dev is None:
            return self.kernel.observe(self.paths, guard_dev=iface, tables=tables)
        paths, neighbours = self.paths | self.map.paths(), self.map.neighbours()
        return self.kernel.observe(paths, tc_dev, neighbours, iface, tables=tables)

    def _garp_round(self, what: str, infos: Infos) -> None:
        """A repeat or refresh announcement; a failed frame is logged, the next round resends."""
        failures = execute(announce(self.vips, self.settings.iface, self.map.ipv6()), self.kernel)
        infos.append(
            Info(f"gratuitous ARP {what} for {len(self.vips)} VIPs on {self.settings.iface}")
        )
        self._log((), failures, infos)

    @staticmethod
    def _log(
        ops: Sequence[Operation],
        failures: Sequence[KernelError],
        infos: Infos,
        known: Mapping[Operation, bytes] | None = None,
    ) -> None:
        """The operations done (as shell commands; `known` has some lines already),
        then one FAILED line per failure."""
        if failures:
            failed = {f.op for f in failures}
            ops = [op for op in each(ops) if op not in failed]
        if ops:
            infos.append(Commands(tuple(ops), known or {}))
        infos += [Info(f"FAILED {f.op}: {f.reason}") for f in failures]
