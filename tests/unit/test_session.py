"""The session's transition table and timers, without a kernel: (state, event) -> state."""

from __future__ import annotations

import itertools

import pytest

from cgp_ipvs_helper.core.session import (
    FLUSH_S,
    GARP_REPEATS,
    HANDOVER_S,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Session,
    State,
)
from cgp_ipvs_helper.plan.model import Role

S, E = State, Event
TABLE = [
    (S.STANDBY, E.ACTIVATE, S.ACTIVE),
    (S.ACTIVE, E.ACTIVATE, S.ACTIVE),
    (S.DRAINING, E.ACTIVATE, S.ACTIVE),
    (S.STANDBY, E.DEACTIVATE, S.STANDBY),
    (S.ACTIVE, E.DEACTIVATE, S.DRAINING),
    (S.DRAINING, E.DEACTIVATE, S.DRAINING),
    (S.STANDBY, E.QUIT, S.STOPPED),
    (S.ACTIVE, E.QUIT, S.STOPPING),
    (S.DRAINING, E.QUIT, S.STOPPING),
    (S.DRAINING, E.DRAINED, S.STANDBY),
    (S.STANDBY, E.FLUSHED, S.STANDBY),
    (S.STOPPING, E.DRAINED, S.STOPPED),
    (S.ACTIVE, E.GARP_REPEAT, S.ACTIVE),
    (S.ACTIVE, E.TAKEN_OVER, S.ACTIVE),
    (S.STANDBY, E.REFRESH, S.STANDBY),
    (S.ACTIVE, E.REFRESH, S.ACTIVE),
    (S.DRAINING, E.REFRESH, S.DRAINING),
    (S.STOPPING, E.REFRESH, S.STOPPING),
]


def session_in(state: State) -> Session:
    s = Session(drain=5.0, refresh=15.0, now=0.0)
    s.state = state
    return s


def test_the_table_is_exactly_these_rows() -> None:
    assert TRANSITIONS == {(state, event): to for state, event, to in TABLE}


@pytest.mark.parametrize(("state", "event", "to"), TABLE)
def test_each_row(state: State, event: Event, to: State) -> None:
    s = session_in(state)
    assert s.fire(event) is to and s.state is to
    assert s.quitting is (to in (S.STOPPING, S.STOPPED))


ILLEGAL = [pair for pair in itertools.product(State, Event) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_transitions_raise_and_change_nothing(state: State, event: Event) -> None:
    s = session_in(state)
    with pytest.raises(IllegalTransition, match=f"{event.value} in state {state.value}"):
        s.fire(event)
    assert s.state is state


def test_every_row_fires_through_the_public_calls() -> None:
    """No dead row: driving sessions as the helper does reaches every transition."""
    fired: list[tuple[State, Event]] = []

    def recorded() -> Session:
        s = Session(drain=20.0, refresh=15.0, now=0.0)
        fire = s.fire

        def recording(event: Event) -> State:
            fired.append((s.state, event))
            return fire(event)

        s.fire = recording  # type: ignore[method-assign]
        return s

    s = recorded()  # drain 20 s, refresh 15 s
    s.expire(15.0)  # refresh while standby
    s.deactivate(16.0)  # standby stays standby
    s.activate(["192.0.2.11"], "192.0.2.11", 20.0)
    s.activate(["192.0.2.11", "192.0.2.12"], "192.0.2.11", 20.5)
    s.expire(21.6)  # GARP repeat
    s.expire(36.0)  # the second repeat, and a refresh while active
    s.deactivate(40.0)
    s.deactivate(41.0)
    s.expire(52.0)  # refresh while draining
    s.activate(["192.0.2.11"], "192.0.2.11", 56.0)  # cancels the drain
    s.deactivate(57.0)
    s.expire(77.0)  # drained
    s.activate(["192.0.2.11"], "192.0.2.11", 78.0)
    s.quit(79.0, "9")  # from active: drain first
    s.expire(99.0)  # drained: stopped
    s = recorded()
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    s.deactivate(2.0)
    s.quit(3.0, None)  # from draining
    s.expire(15.0)  # refresh while stopping
    s.expire(22.0)  # drained: stopped
    recorded().quit(1.0, "1")  # from standby: at once
    s = recorded()
    s.drain = 1.0  # shorter than the old master's flush
    s.activate(["192.0.2.11"], "192.0.2.11", 1.0)
    s.deactivate(2.0)
    s.expire(3.0)  # drained: the master still flushes
    s.expire(2.0 + FLUSH_S)  # flushed
    assert set(fired) == set(TRANSITIONS)


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
