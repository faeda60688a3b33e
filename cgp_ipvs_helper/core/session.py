"""The helper's life as a state machine: one transition table and its timers; no I/O, time in.

States: STANDBY (sync backup, no services), ACTIVE (balancing, VIPs on the LAN interface),
DRAINING (VIPs already off the LAN interface, services and master sync kept for the drain period
so packets still arriving here are forwarded), STOPPING (draining after a QUIT) and STOPPED.
Events are the three requests that change the role and the five timers: the drain's end, the
old master's flush, the end of a takeover, the gratuitous ARP repeats after an activation, and
the -t refresh. The connection entries of the old balancer's sync master leave it up to a few
seconds after a switch (planner.DAEMONS): taking over (ACTIVE from STANDBY or DRAINING, for
HANDOVER_S) the new balancer keeps its backup sync daemon, and the old one keeps its master for
FLUSH_S after the DEACTIVATE, past a shorter drain (the FLUSHING role of a STANDBY).
Everything that moves the state is in TRANSITIONS; a pair that is not there raises
IllegalTransition, a bug in the caller (the helper answers requests after a QUIT itself, so no
peer line can cause one).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from cgp_ipvs_helper.plan.model import Role


class State(enum.Enum):
    STANDBY = "standby"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Event(enum.Enum):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    QUIT = "quit"
    DRAINED = "drained"  # timer: the drain period is over
    TAKEN_OVER = "taken over"  # timer: the old balancer's last entries have had their time
    FLUSHED = "flushed"  # timer: this old balancer's master has sent what it queued
    GARP_REPEAT = "garp repeat"  # timer: announce the VIPs again after an activation
    REFRESH = "refresh"  # timer: -t seconds without a request


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.STANDBY, E.ACTIVATE): S.ACTIVE,
    (S.ACTIVE, E.ACTIVATE): S.ACTIVE,
    (S.DRAINING, E.ACTIVATE): S.ACTIVE,  # cancels the drain
    (S.STANDBY, E.DEACTIVATE): S.STANDBY,
    (S.ACTIVE, E.DEACTIVATE): S.DRAINING,
    (S.DRAINING, E.DEACTIVATE): S.DRAINING,
    (S.STANDBY, E.QUIT): S.STOPPED,
    (S.ACTIVE, E.QUIT): S.STOPPING,
    (S.DRAINING, E.QUIT): S.STOPPING,
    (S.DRAINING, E.DRAINED): S.STANDBY,
    (S.STANDBY, E.FLUSHED): S.STANDBY,
    (S.STOPPING, E.DRAINED): S.STOPPED,
    (S.ACTIVE, E.GARP_REPEAT): S.ACTIVE,
    (S.ACTIVE, E.TAKEN_OVER): S.ACTIVE,
    (S.STANDBY, E.REFRESH): S.STANDBY,
    (S.ACTIVE, E.REFRESH): S.ACTIVE,
    (S.DRAINING, E.REFRESH): S.DRAINING,
    (S.STOPPING, E.REFRESH): S.STOPPING,
}
del S, E

# What the planner is asked for in each state: stopping drains like a DEACTIVATE.
ROLES = {
    State.STANDBY: Role.STANDBY,
    State.ACTIVE: Role.ACTIVE,
    State.DRAINING: Role.DRAINING,
    State.STOPPING: Role.DRAINING,
    State.STOPPED: Role.STOPPED,
}

GARP_REPEATS = (1.1, 2.2)  # seconds after activation; Linux ignores ARP updates within 1 s
# How long a new balancer keeps its backup sync daemon: the old balancer's master sends a
# message once it is full, or when its oldest entry is 2 s old, checked once a second (IPVS's
# IPVS_SYNC_FLUSH_TIME and IPVS_SYNC_CHECK_PERIOD): every entry it holds has left after 3 s.
HANDOVER_S = 3.5
# How long an old balancer keeps its master daemon after a DEACTIVATE, a drain shorter or not:
# stopping it drops every entry it has not sent yet.
FLUSH_S = 3.0


class IllegalTransition(Exception):
    """An event the state does not take: a bug in the caller, never a peer's error."""


class Session:
    """State, members and timers of one helper run.

    `settled` is False while the last change left failed operations behind: then requests do
    not postpone the refresh, so the retry comes at most -t seconds after the failure.
    """

    def __init__(self, drain: float, refresh: float, now: float) -> None:
        self.drain, self.refresh = drain, refresh
        self.state = State.STANDBY
        self.members: tuple[str, ...] = ()
        self.self_ip: str | None = None
        self.refresh_due = now + refresh
        self.drain_until: float | None = None
        self.takeover_until: float | None = None  # taking over: the backup daemon still runs
        self.flush_until: float | None = None  # left the active role: the master still sends
        self.garp_due: tuple[float, ...] = ()
        self.quit_seq: str | None = None  # the QUIT that waits for STOPPED to be answered
        self.quitting = False  # STOPPING or STOPPED: a QUIT was taken, no request is served
        self.settled = True

    @property
    def role(self) -> Role:
        if self.takeover_until is not None:  # only ever set while ACTIVE
            return Role.TAKING_OVER
        if self.flush_until is not None and self.state is State.STANDBY:
            return Role.FLUSHING
        return ROLES[self.state]

    def fire(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalTransition(f"{event.value} in state {self.state.value}") from None
        # derived here, once per transition, not by every request that asks
        self.quitting = self.state in (State.STOPPING, State.STOPPED)
        return self.state

    # -- requests ---------------------------------------------------------------------------

    def request(self, now: float) -> bool:
        """A request line arrived: the refresh waits -t seconds more, unless a retry is owed.

        False once a QUIT (or end of input) has been taken: no request is served any more."""
        if self.settled:
            self.refresh_due = now + self.refresh
        return not self.quitting

    def activate(self, members: Sequence[str], self_ip: str, now: float) -> None:
        """Become (or stay) the active balancer for `members`; cancels a drain. Becoming it
        (from standby or a drain) starts a takeover."""
        was = self.state
        self.fire(Event.ACTIVATE)
        if was is not State.ACTIVE:
            self.takeover_until = now + HANDOVER_S
        self.flush_until = None  # a takeover keeps both daemons anyway
        self.members, self.self_ip = tuple(members), self_ip
        self.drain_until = None
        self.garp_due = tuple(now + d for d in GARP_REPEATS)

    def deactivate(self, now: float) -> bool:
        """Leave the active role; True when this starts a drain (something to change)."""
        was = self.state
        self.fire(Event.DEACTIVATE)
        if was is State.ACTIVE:
            self._drain(now)
            return True
        return False

    def quit(self, now: float, seq: str | None) -> None:
        """Stop: drain first if balancing, STOPPED at once otherwise; `seq` waits for STOPPED."""
        was = self.state
        self.fire(Event.QUIT)
        self.quit_seq = seq
        if was is State.ACTIVE:
            self._drain(now)

    def _drain(self, now: float) -> None:
        self.drain_until = now + self.drain
        self.garp_due = ()
        self.takeover_until = None
        self.flush_until = now + FLUSH_S

    def answer_quit(self) -> str | None:
        """Once STOPPED: the seq of the QUIT to answer (given out once), else None."""
        if self.state is not State.STOPPED:
            return None
        seq, self.quit_seq = self.quit_seq, None
        return seq

    # -- timers -----------------------------------------------------------------------------

    def expire(self, now: float) -> list[Event]:
        """Fire every timer due at `now`, in the order drain end, flush end, takeover end, GARP
        repeat, refresh.

        Two GARP repeats due at once make one round. A refresh that fires is due again -t
        seconds later, whatever the helper then does with it.
        """
        fired: list[Event] = []
        flushing = self.role is Role.FLUSHING  # (a flush that ends with the drain needs no event)
        if self.drain_until is not None and now >= self.drain_until:
            self.fire(Event.DRAINED)
            fired.append(Event.DRAINED)
            self.drain_until = None
            if self.state is State.STANDBY:
                self.members, self.self_ip = (), None
            else:  # stopped: QUIT stops the master with the rest
                self.flush_until = None
        if self.flush_until is not None and now >= self.flush_until:
            self.flush_until = None
            if flushing:
                self.fire(Event.FLUSHED)
                fired.append(Event.FLUSHED)
        if self.takeover_until is not None and now >= self.takeover_until:
            self.takeover_until = None
            self.fire(Event.TAKEN_OVER)
            fired.append(Event.TAKEN_OVER)
        if self.garp_due and self.garp_due[0] <= now:
            self.garp_due = tuple(t for t in self.garp_due if t > now)
            fired.append(Event.GARP_REPEAT)
            self.fire(Event.GARP_REPEAT)
        if now >= self.refresh_due and self.state is not State.STOPPED:
            self.fire(Event.REFRESH)
            fired.append(Event.REFRESH)
            self.refresh_due = now + self.refresh
        return fired

    def postpone_refresh(self, now: float) -> None:
        """After an unexpected error: the refresh tries again -t seconds from now."""
        self.refresh_due = now + self.refresh

    def next_deadline(self) -> float:
        flush = self.flush_until if self.state is State.STANDBY else None  # else: at drain end
        timers = (self.refresh_due, self.drain_until, self.takeover_until, flush, *self.garp_due)
        return min(t for t in timers if t is not None)
