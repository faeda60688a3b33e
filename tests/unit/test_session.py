"""The session driven as the helper drives it, without a kernel: requests and timers in."""

from __future__ import annotations

import itertools

import pytest

from cgp_ipvs_helper.core.session import (
    FLUSH_S,
    GARP_REPEATS,
    HANDOVER_S,
    Event,
    IllegalTransition,
    Session,
    State,
)
from cgp_ipvs_helper.plan.model import Role

S, E = State, Event
# What the helper promises, per event: the state each state it is taken in turns into. Any
# other request is refused; any other timer never fires.
AFTER = {
    E.ACTIVATE: {S.STANDBY: S.ACTIVE, S.ACTIVE: S.ACTIVE, S.DRAINING: S.ACTIVE},  # ends a drain
    E.DEACTIVATE: {S.STANDBY: S.STANDBY, S.ACTIVE: S.DRAINING, S.DRAINING: S.DRAINING},
    E.QUIT: {S.STANDBY: S.STOPPED, S.ACTIVE: S.STOPPING, S.DRAINING: S.STOPPING},
    E.DRAINED: {S.DRAINING: S.STANDBY, S.STOPPING: S.STOPPED},
    E.GARP_REPEAT: {S.ACTIVE: S.ACTIVE},
    E.TAKEN_OVER: {S.ACTIVE: S.ACTIVE},  # the takeover's window ends
    E.FLUSHED: {S.STANDBY: S.STANDBY},  # after a short drain, the old master's flush ends
    E.REFRESH: {s: s for s in (S.STANDBY, S.ACTIVE, S.DRAINING, S.STOPPING)},
}
EXPECTED = {(state, event): to for event, row in AFTER.items() for state, to in row.items()}
# what the planner is asked for: stopping drains like a DEACTIVATE; a new balancer takes over
# for a while, and an old one whose drain was short still flushes its sync queue
ROLES = {S.STANDBY: {Role.STANDBY, Role.FLUSHING}, S.ACTIVE: {Role.ACTIVE, Role.TAKING_OVER}}
ROLES |= {S.DRAINING: {Role.DRAINING}, S.STOPPING: {Role.DRAINING}, S.STOPPED: {Role.STOPPED}}
REQUESTS = (E.ACTIVATE, E.DEACTIVATE, E.QUIT)
FE = "192.0.2.11"


def reach(state: State) -> Session:
    """A session brought to `state` through the calls the helper makes (drain 50 s, -t 15)."""
    s = Session(drain=50.0, refresh=15.0, now=0.0)
    if state in (S.ACTIVE, S.DRAINING, S.STOPPING):
        s.activate([FE], FE, 1.0)
    if state is S.DRAINING:
        s.deactivate(2.0)
    if state in (S.STOPPING, S.STOPPED):
        s.quit(2.0, "7")
    assert s.state is state
    return s


def request(s: Session, event: Event) -> None:
    if event is E.ACTIVATE:
        s.activate([FE, "192.0.2.12"], FE, 3.0)
    elif event is E.DEACTIVATE:
        s.deactivate(3.0)
    else:
        s.quit(3.0, "9")


def due(s: Session, timer: Event) -> float:
    """When `timer` is due in this session."""
    when = {
        E.DRAINED: s.drain_until,
        E.REFRESH: s.refresh_due,
        E.TAKEN_OVER: s.takeover_until,
        E.FLUSHED: s.flush_until,
    }.get(timer)
    if timer is E.GARP_REPEAT:
        when = s.garp_due[0]
    assert when is not None
    return when


@pytest.mark.parametrize(("state", "event"), list(EXPECTED), ids=str)
def test_each_promised_transition(state: State, event: Event) -> None:
    s, to = reach(state), EXPECTED[(state, event)]
    if event is E.FLUSHED:  # standby after a drain shorter than the old master's flush
        s.drain = 1.0
        s.activate([FE], FE, 1.0)
        s.deactivate(2.0)
        s.expire(3.0)
    if event in REQUESTS:
        request(s, event)
    else:
        assert event in s.expire(due(s, event))
    assert s.state is to
    assert s.quitting is (to in (S.STOPPING, S.STOPPED))
    assert s.role in ROLES[to]


ILLEGAL = [p for p in itertools.product(State, Event) if p not in EXPECTED]


@pytest.mark.parametrize(("state", "event"), [p for p in ILLEGAL if p[1] in REQUESTS], ids=str)
def test_a_request_the_state_does_not_take_is_refused_and_changes_nothing(
    state: State, event: Event
) -> None:
    s = reach(state)
    with pytest.raises(IllegalTransition, match=f"{event.value} in state {state.value}"):
        request(s, event)
    assert s.state is state


@pytest.mark.parametrize(("state", "event"), [p for p in ILLEGAL if p[1] not in REQUESTS], ids=str)
def test_a_timer_the_state_does_not_take_never_fires(state: State, event: Event) -> None:
    s = reach(state)
    for now in (3.0, 15.0, 60.0, 1000.0):
        assert event not in s.expire(now)


def test_activation_schedules_garp_repeats_once_each() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 10.0)
    assert s.next_deadline() == 10.0 + GARP_REPEATS[0]
    assert s.expire(11.0) == []
    assert s.expire(11.1) == [Event.GARP_REPEAT]
    assert s.expire(11.2) == []
    assert s.expire(12.2) == [Event.GARP_REPEAT]
    assert s.garp_due == ()


def test_two_repeats_due_at_once_make_one_round() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 10.0)
    assert s.expire(13.0) == [Event.GARP_REPEAT] and s.garp_due == ()


def test_drain_ends_in_standby_and_forgets_the_members() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11", "192.0.2.12"], "192.0.2.11", 1.0)
    assert s.deactivate(2.0) is True and s.role is Role.DRAINING
    assert s.garp_due == () and s.next_deadline() == 7.0
    assert s.deactivate(3.0) is False  # already draining: nothing new to do
    assert s.expire(6.9) == []
    assert s.expire(7.0) == [Event.DRAINED]
    assert (s.state, s.members, s.self_ip, s.drain_until) == (S.STANDBY, (), None, None)


def test_activate_cancels_the_drain() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    s.deactivate(2.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 3.0)
    assert s.drain_until is None
    assert Event.DRAINED not in s.expire(30.0)
    assert s.state is S.ACTIVE


def test_quit_while_active_drains_as_draining_then_stops_and_is_answered_once() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    s.quit(2.0, "00005")
    assert s.state is S.STOPPING and s.role is Role.DRAINING and s.quitting
    assert s.answer_quit() is None  # not before STOPPED
    assert s.request(3.0) is False  # no request is served after QUIT
    assert s.expire(7.0) == [Event.DRAINED]
    assert s.state is S.STOPPED and s.role is Role.STOPPED
    assert s.answer_quit() == "00005" and s.answer_quit() is None


def test_quit_from_standby_stops_at_once() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.quit(1.0, None)
    assert s.state is S.STOPPED and s.drain_until is None and s.answer_quit() is None
    assert s.expire(100.0) == []  # no refresh once stopped


def test_requests_postpone_the_refresh_unless_a_retry_is_owed() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    assert s.next_deadline() == 15.0
    assert s.request(10.0) is True and s.next_deadline() == 25.0
    assert s.expire(24.9) == []
    assert s.expire(25.0) == [Event.REFRESH] and s.next_deadline() == 40.0
    s.settled = False  # the last change left failures behind
    s.request(39.0)
    assert s.next_deadline() == 40.0 and s.expire(40.0) == [Event.REFRESH]
    s.settled = True
    s.request(50.0)
    assert s.next_deadline() == 65.0


def test_timers_fire_in_order_drain_end_takeover_end_garp_repeat_refresh() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    s.deactivate(1.5)
    s.activate(["192.0.2.11"], "192.0.2.11", 2.0)
    assert s.expire(20.0) == [Event.TAKEN_OVER, Event.GARP_REPEAT, Event.REFRESH]
    s.deactivate(21.0)
    assert s.expire(40.0) == [Event.DRAINED, Event.REFRESH]


def test_becoming_active_is_a_takeover_for_a_while_staying_active_is_not() -> None:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    assert s.role is Role.TAKING_OVER and s.next_deadline() == 1.0 + GARP_REPEATS[0]
    s.activate(["192.0.2.11"], "192.0.2.11", 2.0)  # repeated: the takeover keeps its end
    assert s.expire(1.0 + HANDOVER_S - 0.01) == [Event.GARP_REPEAT]  # both repeats: one round
    assert s.role is Role.TAKING_OVER and s.next_deadline() == 1.0 + HANDOVER_S
    assert s.expire(1.0 + HANDOVER_S) == [Event.TAKEN_OVER]
    assert s.role is Role.ACTIVE and s.state is State.ACTIVE
    s.activate(["192.0.2.11"], "192.0.2.11", 10.0)
    assert s.role is Role.ACTIVE
    s.deactivate(11.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 12.0)  # from a drain: a takeover again
    assert s.role is Role.TAKING_OVER
    s.quit(13.0, "9")  # leaving ends it
    assert s.role is Role.DRAINING and s.takeover_until is None


def test_the_old_master_outlives_a_short_drain_not_a_long_one() -> None:
    s = Session(drain=1.0, refresh=15.0, now=0.0)
    s.activate(["192.0.2.11"], "192.0.2.11", 0.0)
    s.expire(HANDOVER_S)
    s.deactivate(10.0)
    assert s.role is Role.DRAINING and s.next_deadline() == 11.0
    assert s.expire(11.0) == [Event.DRAINED]
    assert s.role is Role.FLUSHING and s.next_deadline() == 10.0 + FLUSH_S
    assert s.expire(10.0 + FLUSH_S) == [Event.FLUSHED]
    assert s.role is Role.STANDBY
    long = Session(drain=FLUSH_S + 2, refresh=15.0, now=0.0)
    long.activate(["192.0.2.11"], "192.0.2.11", 0.0)
    long.deactivate(1.0)
    assert long.next_deadline() == 3.0 + FLUSH_S  # the drain end; no flush timer of its own
    assert long.expire(3.0 + FLUSH_S) == [Event.DRAINED] and long.role is Role.STANDBY
