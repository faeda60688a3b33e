"""The helper's role as a state machine: one transition table, no I/O, time passed in.

Roles: STANDBY (sync backup, no services), ACTIVE (balancing, VIPs on the LAN interface),
DRAINING (VIPs already off the LAN interface, services and master sync kept for the drain period
so packets still arriving here are forwarded) and STOPPED (after QUIT). Every legal transition is
in TRANSITIONS; anything else is a bug, not a peer error.
"""

from __future__ import annotations

from collections.abc import Sequence

from .planner import Role

# (role, event) -> next role. "drained" fires when the drain period ends; "drained_quit" when
# it ends after a QUIT.
TRANSITIONS: dict[tuple[Role, str], Role] = {
    (Role.STANDBY, "activate"): Role.ACTIVE,
    (Role.ACTIVE, "activate"): Role.ACTIVE,
    (Role.DRAINING, "activate"): Role.ACTIVE,
    (Role.STANDBY, "deactivate"): Role.STANDBY,
    (Role.ACTIVE, "deactivate"): Role.DRAINING,
    (Role.DRAINING, "deactivate"): Role.DRAINING,
    (Role.DRAINING, "drained"): Role.STANDBY,
    (Role.DRAINING, "drained_quit"): Role.STOPPED,
    (Role.STANDBY, "quit"): Role.STOPPED,
    (Role.ACTIVE, "quit"): Role.DRAINING,
    (Role.DRAINING, "quit"): Role.DRAINING,
}

GARP_REPEATS = (1.1, 2.2)  # seconds after activation; Linux ignores ARP updates within 1 s


class Session:
    """Role, members and timers of one helper run."""

    def __init__(self, drain: float) -> None:
        self.drain = drain
        self.role = Role.STANDBY
        self.members: tuple[str, ...] = ()
        self.self_ip: str | None = None
        self.drain_until: float | None = None
        self.quitting = False
        self.garp_due: list[float] = []

    def _fire(self, event: str) -> Role:
        self.role = TRANSITIONS[(self.role, event)]
        return self.role

    def activate(self, members: Sequence[str], self_ip: str, now: float) -> None:
        """Become (or stay) the active balancer for `members`; cancels a drain."""
        self._fire("activate")
        self.members, self.self_ip = tuple(members), self_ip
        self.drain_until = None
        self.garp_due = [now + d for d in GARP_REPEATS]

    def deactivate(self, now: float) -> bool:
        """Leave the active role; True when this starts a drain (something to change)."""
        was = self.role
        self._fire("deactivate")
        if was is Role.ACTIVE:
            self.drain_until = now + self.drain
            self.garp_due = []
            return True
        return False

    def quit(self, now: float) -> None:
        """Stop: drain first if balancing; STOPPED at once otherwise."""
        self.quitting = True
        if self.role is Role.ACTIVE:
            self.deactivate(now)
        self._fire("quit")

    def drain_over(self, now: float) -> bool:
        """Fire the end of the drain if it is due; True when the role changed."""
        if self.role is not Role.DRAINING or self.drain_until is None or now < self.drain_until:
            return False
        self._fire("drained_quit" if self.quitting else "drained")
        self.drain_until = None
        if self.role is Role.STANDBY:
            self.members, self.self_ip = (), None
        return True

    def garp_repeat_due(self, now: float) -> bool:
        """True (once per repeat) when a scheduled gratuitous ARP repeat is due."""
        due = [t for t in self.garp_due if t <= now]
        self.garp_due = [t for t in self.garp_due if t > now]
        return bool(due) and self.role is Role.ACTIVE

    def deadlines(self) -> list[float]:
        return [t for t in (self.drain_until, *self.garp_due) if t is not None]
