"""The helper's engine: requests and timers in, typed replies out, changes through one `Kernel`.

It joins the pure parts (protocol, session, planner) with a kernel and a clock, and returns what
to say as a `Reply` (info values, then at most one response); it never reads stdin or writes
stdout itself (cli.py renders and writes), so every behaviour is testable with the in-memory
kernel and a fake clock. Its kernel side (reading, converging, logging) is in converge.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Callable

from cgp_ipvs_helper import __version__
from cgp_ipvs_helper.config.vipfile import load_vips
from cgp_ipvs_helper.core import members
from cgp_ipvs_helper.core.arpwatch import ArpWatch
from cgp_ipvs_helper.core.balance import Balance
from cgp_ipvs_helper.core.converge import Converger, Infos
from cgp_ipvs_helper.core.hostaddrs import interface_exists
from cgp_ipvs_helper.core.protocol import (
    INTF_VERSION,
    Activate,
    BadRequest,
    Deactivate,
    Info,
    Intf,
    Quit,
    Reply,
    Request,
    Response,
    Status,
    answer,
    internal_error,
    not_served,
    parse_line,
    shown,
)
from cgp_ipvs_helper.core.ready import Ready
from cgp_ipvs_helper.core.session import Event, Session, State
from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.model import KernelState, Settings, is_ipv6
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import sysctl_paths
from cgp_ipvs_helper.shown import escaped


class Helper(Converger):
    """One helper run. Call start(), then handle()/tick() as lines and time arrive."""

    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[str], tuple[str, ...]] = load_vips,
        link_exists: Callable[[str], bool] = interface_exists,
    ) -> None:
        self.settings, self.kernel, self.clock, self.load = settings, kernel, clock, load
        self.link_exists = link_exists
        self.arpwatch = ArpWatch()
        self.session = Session(settings.drain, settings.timeout, clock())
        self.paths = sysctl_paths(settings.iface)
        self.map = MemberMap(settings.member_map)
        self.member_file = members.MemberFile()
        self.vips: tuple[str, ...] = ()
        self.vip_error: VipFileError | None = None
        self.retired: frozenset[str] = frozenset()
        self.ipvs_problem: str | None = None
        self.ready: Ready | None = None  # while standby: the ACTIVATE planned ahead (ready.py)
        self.balance: Balance | None = None  # while active: the kernel as last made (balance.py)
        self.recheck_due: float | None = None  # when the steering is looked at again alone
        self.told_no_ipv6: set[str] = set()  # members said to lack an IPv6 address, once each
        s = settings
        self._options = f"persistence={s.persistence} syncid={s.syncid} weight={s.weight}"

    @property
    def finished(self) -> bool:
        """QUIT (or end of input) has run its course, answered: the process may exit."""
        return self.session.state is State.STOPPED

    # -- entry points -----------------------------------------------------------------------

    def start(self, notes: Sequence[str] = ()) -> Reply:
        """Load the VIP file and the member map, and converge to standby (removing what a dead
        run left). A bad VIP file stops balancing; a bad map only steering."""
        s = self.settings
        observed: Infos = []
        actual = self._observe(observed)
        try:
            self.vips = members.load_vips(s, self.load, actual)
        except VipFileError as exc:
            self.vip_error = exc
        else:
            self._read_map(self.vips)
        infos: Infos = [
            Info(
                f"cgp-ipvs-helper {__version__}: {len(self.vips)} VIPs from {escaped(s.vipfile)}, "
                f"iface {s.iface}, persistence {s.persistence}s, syncid {s.syncid}, "
                f"weight {s.weight}"
            )
        ]
        infos += [Info(note) for note in notes]
        infos += observed
        if self.vip_error is None and not self.vips:
            infos.append(Info(members.no_vips(s)))
        if self.vip_error is not None:
            infos.append(Info(members.refused(self.vip_error)))
        else:
            actual = self._observe(infos)  # again: the member map may add a sysctl to read
            notes = members.start_notes(s, self.vips, self.map, self.member_file, actual)
            infos += [Info(note) for note in notes]
            self._converge(infos, actual)
        return Reply(tuple(infos))

    def handle(self, line: str | bytes) -> Reply:
        """One request line → info values, then the response (none if the line had no seq)."""
        now = self.clock()  # (one read per request: a system call in some kernels)
        serving = self.session.request(now)
        try:
            request = parse_line(line)
        except BadRequest as exc:
            if not serving:
                return not_served(exc.seq, line)
            logged = (Info(f"not understood: {shown(line)}"),)
            return Reply(
                logged, None if exc.seq is None else Response(exc.seq, "ERROR", exc.reason)
            )
        if not serving:
            return not_served(request.seq, line)
        infos: Infos = []
        try:
            response = self._dispatch(request, infos, now)
        except Exception as exc:  # a bug must cost one request, not the helper
            if self.session.quit_seq == request.seq:
                self.session.quit_seq = None  # a QUIT answered here is not answered again
            error = Response(request.seq, "ERROR", f"internal error: {exc!r}")
            return Reply((internal_error(exc),), error)
        return Reply(tuple(infos), response)

    @property
    def watching(self) -> bool:
        """Whether ARP on -i is to be heard (split-brain warnings): while active, real mode."""
        return self.session.state is State.ACTIVE and not self.settings.dry_run

    def heard(self, claims: Sequence[tuple[str, bytes]]) -> Reply:
        """ARP frames from other MACs heard on -i (sender address, MAC): warnings when due."""
        now = self.clock()
        for ip, mac in claims:
            self.arpwatch.seen(ip, mac, now)
        return Reply(tuple(self._conflicts(now)))

    def end_of_input(self) -> Reply:
        """CGP went away (or SIGTERM): as QUIT, without a response."""
        infos: Infos = []
        if not self.session.quitting:
            self._quit(None, infos, self.clock())
        return Reply(tuple(infos))

    def reload(self) -> Reply:
        """SIGHUP: re-read the VIP file and the member map; apply the difference, or keep
        everything on an error in the VIP file. A bad map keeps the ranges in force."""
        infos: Infos = []
        try:
            new = members.load_vips(self.settings, self.load, self._observe(infos))
        except VipFileError as exc:
            infos.append(Info(f"ERROR {exc}; keeping the {len(self.vips)} VIPs in use"))
            return Reply(tuple(infos))
        seen = self.map.seen
        self._read_map(new)
        text = f"reloaded {escaped(self.settings.vipfile)}: {len(new)} VIPs"
        if self.member_file.error is not None:
            infos += [Info(text), Info(self.member_file.refused())]
        else:
            ranges = len(self.member_file.ranges)
            if ranges or seen:
                text += f"; {escaped(self.settings.member_map)}: {ranges} port ranges"
            infos.append(Info(text))
        if not new:
            infos.append(Info(members.no_vips(self.settings)))
        self.retired = (self.retired | frozenset(self.vips)) - frozenset(new)
        self.vips, self.vip_error = new, None
        self.arpwatch.watch(new)
        self.told_no_ipv6.clear()  # the map may have changed: say again who lacks IPv6
        self._converge(infos, garp=self.session.state is State.ACTIVE)
        return Reply(tuple(infos))

    def tick(self) -> Reply:
        """Run whatever timer is due: drain end, gratuitous ARP repeats, the -t refresh."""
        infos: Infos = []
        self._timers(infos)
        infos += self._conflicts(self.clock())
        return Reply(tuple(infos), self._quit_answer())

    def next_deadline(self) -> float:
        due = self.session.next_deadline()
        timers = (due, self.arpwatch.deadline(), self.recheck_due)
        return min(t for t in timers if t is not None)

    # -- timers -----------------------------------------------------------------------------

    def _timers(self, infos: Infos) -> None:
        mark = len(infos)
        try:
            for event in self.session.expire(self.clock()):
                if event is Event.DRAINED:
                    infos.append(Info(f"drain over: {self.session.role.value}"))
                    self._converge(infos)
                elif event is Event.FLUSHED:
                    infos.append(Info("flush over: the master sync daemon stops"))
                    self._converge(infos)
                elif event is Event.TAKEN_OVER:
                    infos.append(Info("takeover over: the backup sync daemon stops"))
                    self._taken_over(infos)
                elif event is Event.GARP_REPEAT:
                    self._garp_round("repeated", infos)
                else:
                    self._refresh(infos)
            if self.recheck_due is not None and self.clock() >= self.recheck_due:
                self._recheck(infos)
        except Exception as exc:  # the next tick or refresh tries again
            self.session.postpone_refresh(self.clock())
            del infos[mark:]
            infos.append(internal_error(exc))

    def _read_map(self, vips: Sequence[str]) -> None:
        self.member_file = self.member_file.read(self.settings, vips)
        self.map.update(self.member_file.ranges)

    def _refresh(self, infos: Infos) -> None:
        if self.member_file.error is not None:  # said again until it is fixed
            infos.append(Info(self.member_file.refused()))
        mark = len(infos)
        self._converge(infos)
        if len(infos) > mark:
            infos.insert(mark, Info("refresh: the kernel drifted from the desired state"))
        if self.session.state is State.ACTIVE:
            self._garp_round("refreshed", infos)

    # -- requests ---------------------------------------------------------------------------

    def _dispatch(self, request: Request, infos: Infos, now: float) -> Response | None:
        if isinstance(request, Intf):
            return Response(request.seq, "INTF", INTF_VERSION)
        if isinstance(request, Status):
            return Response(request.seq, "OK", self.status())
        if isinstance(request, Activate):
            return self._activate(request, infos, now)
        if isinstance(request, Deactivate):
            return self._deactivate(request, infos, now)
        if isinstance(request, Quit):
            return self._quit(request.seq, infos, now)
        raise TypeError(f"unhandled request {request!r}")

    def status(self) -> str:
        ses = self.session
        role = "active" if ses.state is State.ACTIVE else "standby"
        text = (
            f"role={role} vips={len(self.vips)} members={','.join(ses.members)} {self._options} "
            f"conflicts={self.arpwatch.conflicts}"
        )
        v6 = sum(is_ipv6(v) for v in self.vips)
        if v6:  # dual stack: the IPv6 VIPs, and the IPv6 real servers while balancing
            members6 = self.map.ipv6()
            listed = [members6[m] for m in ses.members if m in members6]
            text += f" vips6={v6} members6={','.join(listed)}"
        if self.member_file.error is not None:
            text += " map=error"
        return text

    def _activate(self, req: Activate, infos: Infos, now: float) -> Response:
        if self.vip_error is not None:
            return Response(req.seq, "ERROR", str(self.vip_error))
        iface = self.settings.iface
        if not self.link_exists(iface):  # it may come later (a bond, a VLAN): asked every time
            return Response(req.seq, "ERROR", f"-i {iface}: no such interface")
        # from standby, the state read at the last step, which ready was planned against;
        # while active, the kernel as this helper last made it
        ahead = self.ready if self.session.state is State.STANDBY else None
        held = self._held()
        actual: KernelState | None = None
        if ahead is not None:
            actual, resolver = ahead.state, ahead.members
        elif held is not None:
            resolver = held.members
        else:
            actual = self._observe(infos)
            resolver = members.Resolver.of(self.settings, self.vips, actual)
        try:
            balanced, self_ip = resolver.resolve(req.members)
        except VipFileError as exc:
            return Response(req.seq, "ERROR", str(exc))
        except BadRequest as exc:
            return Response(req.seq, "ERROR", exc.reason)
        self.session.activate(balanced, self_ip, now)
        self.arpwatch.watch(self.vips)
        if held is not None:
            failures = self._change(held, infos)
        else:
            failures = self._converge(infos, actual, True, ahead, resolver)
        text = f"active vips={len(self.vips)} members={len(balanced)}"
        if not self.vips:
            text += f" {members.no_vips(self.settings)}"
        return answer(req.seq, failures, text)

    def _conflicts(self, now: float) -> list[Info]:
        """Split-brain warnings due now; none once this helper is no longer active (a claim
        heard just before a DEACTIVATE came from the new balancer of a planned switch)."""
        if self.session.state is not State.ACTIVE:
            self.arpwatch.reset()
            return []
        return [Info(str(conflict)) for conflict in self.arpwatch.due(now)]

    def _deactivate(self, req: Deactivate, infos: Infos, now: float) -> Response:
        if not self.session.deactivate(now):
            return Response(req.seq, "OK", "standby")
        return answer(req.seq, self._converge(infos), "standby")

    def _quit(self, seq: str | None, infos: Infos, now: float) -> Response | None:
        """Drain if active, then stop; the answer waits for STOPPED (in a later tick if need be).

        The answer is OK even when the last step failed: CGP is stopping the helper either way,
        the FAILED lines say what was left, and the next start removes it as a dead run's.
        """
        self.session.quit(now, seq)
        if self.session.state is State.STOPPING:
            infos.append(Info(f"stopping: draining for {self.settings.drain:g}s first"))
        self._converge(infos)
        if self.session.state is State.STOPPING:
            self._timers(infos)
        return self._quit_answer()

    def _quit_answer(self) -> Response | None:
        seq = self.session.answer_quit()
        return None if seq is None else Response(seq, "OK")
