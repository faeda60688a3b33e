"""The helper's engine: requests in, lines out, kernel changes through one `Kernel`.

It joins the pure parts (protocol, session, planner) with a kernel and a clock, and returns the
lines to write; it never reads stdin or writes stdout itself (cli.py does), so every behaviour
is testable with the in-memory kernel and a fake clock. Each kernel operation is logged as an
info line holding its shell equivalent, the same text in real mode and in -m mode.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Callable

from . import protocol
from .errors import KernelError, VipFileError
from .executor import execute
from .kernel import Kernel
from .memberfile import load_members
from .model import KernelState, Settings, is_ipv6
from .operations import Operation
from .outgoing import MemberMap, ipv6_note
from .planner import DEFAULT_PORTS, Role, announce, desired_state, plan, sysctl_paths
from .protocol import Activate, BadRequest, Deactivate, Intf, Quit, Request, Status
from .session import Session
from .steering import MemberRange
from .vipfile import load_vips

VERSION = "0.1.0"


class Helper:
    """One helper run. Call start(), then handle()/tick() as lines and time arrive."""

    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[str], tuple[str, ...]] = load_vips,
    ) -> None:
        self.settings, self.kernel, self.clock, self.load = settings, kernel, clock, load
        self.session = Session(settings.drain)
        self.paths = sysctl_paths(settings.iface)
        self.map = MemberMap(settings.member_map)
        self.vips: tuple[str, ...] = ()
        self.vip_error: VipFileError | None = None
        self.retired: frozenset[str] = frozenset()
        self.refresh_due = clock() + settings.timeout
        self.pending_quit: str | None = None
        self.finished = False
        self.ipvs_problem: str | None = None
        self.told_no_ipv6: set[str] = set()  # members said to lack an IPv6 address, once each

    # -- entry points -----------------------------------------------------------------------

    def start(self, notes: Sequence[str] = ()) -> list[str]:
        """Load the VIP file and converge to standby (removing what a dead run left)."""
        s = self.settings
        lines: list[str] = []
        try:
            self.vips, members = self._load()
            self.map.update(members)
        except VipFileError as exc:  # the VIP file or the member map
            self.vip_error = exc
        lines += protocol.info(
            f"cgp-ipvs-helper {VERSION}: {len(self.vips)} VIPs from {s.vipfile}, iface {s.iface}, "
            f"persistence {s.persistence}s, syncid {s.syncid}, weight {s.weight}"
        )
        for note in notes:
            lines += protocol.info(note)
        if self.vip_error is not None:
            lines += protocol.info(
                f"ERROR {self.vip_error}; nothing is changed until it is fixed "
                "(then send SIGHUP or restart the helper)"
            )
            return lines
        actual = self._observe(lines)
        local_ips = {a.ip for a in actual.addresses} - set(self.vips)
        for note in self.map.notes(local_ips):
            lines += protocol.info(note)
        v6 = sum(is_ipv6(v) for v in self.vips)
        if v6:
            lines += protocol.info(ipv6_note(v6, len(self.map.ipv6()), self.settings.member_map))
        body, _ = self._converge(actual=actual)
        return lines + body

    def handle(self, line: str | bytes) -> list[str]:
        """One request line → info lines, then the response (none if the line had no seq)."""
        self.refresh_due = self.clock() + self.settings.timeout
        if self.pending_quit is not None or self.finished:
            return protocol.info("request after QUIT ignored")
        try:
            request = protocol.parse_line(line)
        except BadRequest as exc:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            logged = protocol.info(f"not understood: {text.rstrip()}")
            if exc.seq is None:
                return logged
            return [*logged, protocol.error(exc.seq, exc.reason)]
        try:
            return self._dispatch(request)
        except Exception as exc:  # a bug must cost one request, not the helper
            return [*_internal(exc), protocol.error(request.seq, f"internal error: {exc!r}")]

    def end_of_input(self) -> list[str]:
        """CGP went away (or SIGTERM): as QUIT, without a response."""
        if self.pending_quit is None and not self.finished:
            return self._quit(None)
        return []

    def reload(self) -> list[str]:
        """SIGHUP: re-read the VIP file; apply the difference, or keep everything on error."""
        try:
            new, members = self._load()
        except VipFileError as exc:  # the VIP file or the member map
            return protocol.info(f"ERROR {exc}; keeping the {len(self.vips)} VIPs in use")
        text = f"reloaded {self.settings.vipfile}: {len(new)} VIPs"
        if members or self.map.seen:
            text += f"; {self.settings.member_map}: {len(members)} port ranges"
        lines = protocol.info(text)
        self.retired = (self.retired | frozenset(self.vips)) - frozenset(new)
        self.vips, self.vip_error = new, None
        self.map.update(members)
        self.told_no_ipv6.clear()  # the map may have changed: say again who lacks IPv6
        body, _ = self._converge(garp=self.session.role is Role.ACTIVE)
        return lines + body

    def tick(self) -> list[str]:
        """Run whatever timer is due: drain end, gratuitous ARP repeats, the -t refresh."""
        try:
            return self._timers()
        except Exception as exc:  # the next tick or refresh tries again
            self.refresh_due = self.clock() + self.settings.timeout
            return _internal(exc)

    def _timers(self) -> list[str]:
        now = self.clock()
        lines: list[str] = []
        if self.session.drain_over(now):
            lines += protocol.info(f"drain over: {self.session.role.value}")
            body, _ = self._converge()
            lines += body
            if self.session.role is Role.STOPPED:
                lines += self._finish()
        if self.session.garp_repeat_due(now):
            lines += self._garp_round("repeated")
        if now >= self.refresh_due and not self.finished and self.vip_error is None:
            self.refresh_due = now + self.settings.timeout
            body, _ = self._converge()
            if body:
                lines += protocol.info("refresh: the kernel drifted from the desired state")
            lines += body
            if self.session.role is Role.ACTIVE:
                lines += self._garp_round("refreshed")
        return lines

    def next_deadline(self) -> float:
        return min([self.refresh_due, *self.session.deadlines()])

    # -- requests ---------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> list[str]:
        if isinstance(request, Intf):
            return [protocol.intf(request.seq)]
        if isinstance(request, Status):
            return [protocol.ok(request.seq, self.status())]
        if isinstance(request, Activate):
            return self._activate(request)
        if isinstance(request, Deactivate):
            return self._deactivate(request)
        if isinstance(request, Quit):
            return self._quit(request.seq)
        raise TypeError(f"unhandled request {request!r}")

    def status(self) -> str:
        s, ses = self.settings, self.session
        role = "active" if ses.role is Role.ACTIVE else "standby"
        return (
            f"role={role} vips={len(self.vips)} members={','.join(ses.members)} "
            f"persistence={s.persistence} syncid={s.syncid} weight={s.weight}"
        )

    def _activate(self, req: Activate) -> list[str]:
        if self.vip_error is not None:
            return [protocol.error(req.seq, str(self.vip_error))]
        lines: list[str] = []
        actual = self._observe(lines)
        try:
            members, self_ip = self._members(req.members, actual)
        except BadRequest as exc:
            return [*lines, protocol.error(req.seq, exc.reason)]
        self.session.activate(members, self_ip, self.clock())
        body, failures = self._converge(actual=actual, garp=True)
        return (
            lines
            + body
            + [
                self._reply(
                    req.seq, failures, f"active vips={len(self.vips)} members={len(members)}"
                )
            ]
        )

    def _members(self, listed: Sequence[str], actual: KernelState) -> tuple[list[str], str]:
        vips = frozenset(self.vips)
        for m in listed:
            if m in vips:
                raise BadRequest(None, f"member {m} is a VIP")
        local = {a.ip for a in actual.addresses} - vips
        members = list(listed)
        self_ip = next((m for m in members if m in local), None)
        if self_ip is None:
            self_ip = actual.primary_ip(self.settings.iface, excluding=vips)
            if self_ip is None:
                raise BadRequest(
                    None, f"no listed member is local and {self.settings.iface} has no IPv4 address"
                )
            members.append(self_ip)
        return members, self_ip

    def _deactivate(self, req: Deactivate) -> list[str]:
        if not self.session.deactivate(self.clock()):
            return [protocol.ok(req.seq, "standby")]
        lines, failures = self._converge()
        return lines + [self._reply(req.seq, failures, "standby")]

    def _quit(self, seq: str | None) -> list[str]:
        self.session.quit(self.clock())
        self.pending_quit = seq or ""
        lines: list[str] = []
        if self.session.role is Role.DRAINING:
            lines += protocol.info(f"stopping: draining for {self.settings.drain:g}s first")
        lines += self._converge()[0]
        if self.session.role is Role.STOPPED:
            return lines + self._finish()
        return lines + self.tick()

    def _finish(self) -> list[str]:
        self.finished = True
        seq, self.pending_quit = self.pending_quit, None
        return [protocol.ok(seq)] if seq else []

    # -- kernel -----------------------------------------------------------------------------

    def _load(self) -> tuple[tuple[str, ...], tuple[MemberRange, ...]]:
        """The VIP file, then the member map checked against it; VipFileError from either."""
        vips = self.load(self.settings.vipfile)
        ports = [port for _, port in self.settings.ports or DEFAULT_PORTS]
        return vips, load_members(self.settings.member_map, ports, vips)

    def _converge(
        self, actual: KernelState | None = None, garp: bool = False
    ) -> tuple[list[str], list[KernelError]]:
        """Bring the kernel to the desired state of the current role; log each operation."""
        if self.vip_error is not None:
            return [], []
        lines: list[str] = []
        if actual is None:
            actual = self._observe(lines)
        ses = self.session
        members6 = self.map.ipv6()
        desired = desired_state(
            self.settings, self.vips, ses.role, ses.members, ses.self_ip, self.retired, members6
        )
        balancing = ses.role in (Role.ACTIVE, Role.DRAINING)
        if balancing:
            lines += self._without_ipv6(ses.members, members6)
        desired = self.map.desired(desired, balancing, self.vips, actual)
        ops: list[Operation] = list(plan(desired, actual))
        if garp and ses.role is Role.ACTIVE:
            ops += announce(self.vips, self.settings.iface, members6)
        failures = execute(ops, self.kernel)
        if not failures:
            self.retired = frozenset()
        return lines + self._log(ops, failures), failures

    def _observe(self, lines: list[str]) -> KernelState:
        """Read the kernel; log once (per change) why IPVS cannot be used, if it cannot."""
        tc_dev = self.map.tc_dev(self.settings.iface)
        if tc_dev is None:
            actual = self.kernel.observe(self.paths)
        else:
            actual = self.kernel.observe(self.paths | self.map.paths(), tc_dev)
        problem = None if actual.ipvs else getattr(self.kernel, "ipvs_problem", None)
        if problem != self.ipvs_problem:
            lines += protocol.info(f"IPVS: {problem}" if problem else "IPVS: available again")
            self.ipvs_problem = problem
        return actual

    def _without_ipv6(self, members: Sequence[str], members6: Mapping[str, str]) -> list[str]:
        """Say once per member that it is left out of the IPv6 services (balanced IPv6 VIPs)."""
        if not members6 or not any(is_ipv6(v) for v in self.vips):
            return []
        lines: list[str] = []
        for m in members:
            if m not in members6 and m not in self.told_no_ipv6:
                self.told_no_ipv6.add(m)
                lines += protocol.info(
                    f"member {m} has no IPv6 address in {self.settings.member_map}: "
                    "left out of the IPv6 services"
                )
        return lines

    def _garp_round(self, what: str) -> list[str]:
        ops = announce(self.vips, self.settings.iface, self.map.ipv6())
        failures = execute(ops, self.kernel)
        lines = protocol.info(
            f"gratuitous ARP {what} for {len(self.vips)} VIPs on {self.settings.iface}"
        )
        return lines + self._log((), failures)

    @staticmethod
    def _log(ops: Sequence[Operation], failures: Sequence[KernelError]) -> list[str]:
        failed = {f.op: f.reason for f in failures}
        lines: list[str] = []
        for op in ops:
            if op in failed:
                continue
            lines += protocol.info(str(op))
        for f in failures:
            lines += protocol.info(f"FAILED {f.op}: {f.reason}")
        return lines

    @staticmethod
    def _reply(seq: str, failures: Sequence[KernelError], text: str) -> str:
        if not failures:
            return protocol.ok(seq, text)
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return protocol.error(seq, f"{first.op}: {first.reason}{more}")


def _internal(exc: BaseException) -> list[str]:
    """Info lines for an unexpected error: where it happened, for a bug report."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return protocol.info(f"internal error{at}: {exc!r}")
