"""A change of the members while active: the real servers that change, planned against the kernel
as the helper last made it (balance.py), equal to the full plan; drift still repaired."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, Dest, KernelState, Role, Settings
from cgp_ipvs_helper.plan.operations import AddDest, DelDest, EditDest, EditDests, each
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import desired, plan, weights
from cgp_ipvs_helper.plan.realservers import families, real_server_changes
from cgp_ipvs_helper.plan.steering import MemberRange

from .conftest import SELF, Clock, fresh_state, make_helper
from .test_helper import infos, ok

VIPS = [f"203.0.113.{i}" for i in (9, 1, 200)] + ["2001:db8::5", "2001:db8::1:6"]
HOSTS = ["192.0.2.11", "192.0.2.2", "192.0.2.130", "192.0.2.12", "192.0.2.99"]
IP6 = {"192.0.2.11": "2001:db8::b", "192.0.2.2": "2001:db8::1:0", "192.0.2.130": "2001:db8::a"}
DEST_OPS = (AddDest, EditDest, DelDest)


@st.composite
def changes(draw):
    vips = draw(st.lists(st.sampled_from(VIPS), unique=True, min_size=1, max_size=5))
    options = Settings(
        persistence=draw(st.sampled_from([0, 15])),
        weight=draw(st.sampled_from([0, 100, 7])),
        ports=draw(st.sampled_from([(), (("tcp", 25), ("udp", 5060))])),
    )
    members6 = draw(st.sampled_from([{}, IP6]))

    def group():
        members = draw(st.lists(st.sampled_from(HOSTS), unique=True, min_size=1, max_size=5))
        return members, draw(st.sampled_from(members))

    return options, tuple(vips), members6, group(), group()


@settings(max_examples=300, deadline=None)
@given(changes())
def test_the_real_servers_that_change_are_what_the_full_plan_changes(case) -> None:
    """From the kernel as the members `before` left it, the changes to the members `after`
    (expanded) are the full plan's real server operations, in its order."""
    options, vips, members6, (before, self_before), (after, self_after) = case
    ranges = tuple(MemberRange(m, 40000 + i * 1000, 40999 + i * 1000, ip6)
                   for i, (m, ip6) in enumerate(members6.items()))  # fmt: skip
    member_map = MemberMap("members", ranges, bool(ranges))
    old = desired(options, vips, Role.ACTIVE, before, self_before, frozenset(), member_map)
    new = desired(options, vips, Role.ACTIVE, after, self_after, frozenset(), member_map)
    held = KernelState(services=old.services, dests=old.dests)
    expected = [op for op in plan(new, held) if isinstance(op, DEST_OPS)]
    by_family = families(s.key for s in old.services)
    changed = real_server_changes(
        by_family,
        weights(options, Role.ACTIVE, before, self_before),
        weights(options, Role.ACTIVE, after, self_after),
        members6,
    )
    assert each(changed) == expected
    assert all(len(op) for op in changed)  # no empty one
    assert len(changed) <= 3 * len(by_family)  # one value per family and kind at most
    held = KernelState(services=old.services)  # a takeover: every real server is new
    fresh = real_server_changes(
        by_family, {}, weights(options, Role.ACTIVE, after, self_after), members6
    )
    assert each(fresh) == [op for op in plan(new, held) if isinstance(op, DEST_OPS)]


class Counting(FakeKernel):
    """A fake kernel that counts the helper's reads."""

    reads = tables = 0  # reads, and those of the IPVS tables

    def observe(self, *args, **kwargs):
        self.reads += 1
        self.tables += kwargs.get("tables", True)
        return super().observe(*args, **kwargs)


def _helper(clock: Clock, **options):
    state = fresh_state()
    state = KernelState(  # a second address of this host on the LAN
        addresses=(*state.addresses, Address("192.0.2.15", "eth0", 24)), sysctls=state.sysctls
    )
    kernel = Counting(state)
    h = make_helper(kernel, clock, **options)
    h.start()
    return h, kernel


def _desired(h) -> tuple[Dest, ...]:
    ses = h.session
    d = desired(h.settings, h.vips, ses.role, ses.members, ses.self_ip)
    return tuple(sorted(d.dests, key=str))


def _held(kernel) -> tuple[Dest, ...]:
    return tuple(sorted(kernel.dests.values(), key=str))


def test_leave_join_and_a_weight_change_read_nothing_and_leave_the_plan(clock: Clock) -> None:
    h, kernel = _helper(clock, weight=50)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.15 192.0.2.12 192.0.2.13")
    kernel.take()
    reads = kernel.reads
    steps = [
        ("2 ACTIVATE 192.0.2.11 192.0.2.15 192.0.2.12", "members=3", {"DelDest"}),  # leaves
        ("3 ACTIVATE 192.0.2.11 192.0.2.15 192.0.2.12 192.0.2.14", "members=4", {"AddDest"}),
        ("4 ACTIVATE 192.0.2.15 192.0.2.11 192.0.2.12 192.0.2.14", "members=4", {"EditDest"}),
    ]
    for request, members, kinds in steps:
        out = h.handle(request)
        assert out.response == ok(request[0], f"active vips=2 members={members[-1]}")
        ops = kernel.take()
        assert {type(op).__name__ for op in ops} == kinds | {"SendGarp"}, request
        assert _held(kernel) == _desired(h), request  # the kernel table is the plan
        logged = [line for line in infos(out) if line.startswith(("ipvsadm", "arping"))]
        assert logged == [str(op) for op in ops], request
    assert kernel.reads == reads  # the kernel was not read back
    weights_now = {d.ip: d.weight for d in kernel.dests.values()}
    assert weights_now == {"192.0.2.15": 50, SELF: 100, "192.0.2.12": 100, "192.0.2.14": 100}
    assert isinstance(
        h.balance.change(h.settings, ["192.0.2.11", "192.0.2.15"], "192.0.2.11")[0][0], EditDests
    )


def test_a_change_that_fails_reads_the_kernel_and_repairs_it_at_once(clock: Clock) -> None:
    h, kernel = _helper(clock)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    gone = next(k for k, d in kernel.dests.items() if d.ip == "192.0.2.13")
    del kernel.dests[gone]  # behind the helper's back: a real server it is about to delete
    kernel.dests.pop(next(k for k, d in kernel.dests.items() if d.ip == "192.0.2.12"))
    reads = kernel.reads
    out = h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")
    assert out.response == ok("2", "active vips=2 members=2")
    text = infos(out)
    assert any(line.startswith("FAILED ipvsadm -d") for line in text)
    assert "the kernel differs from what this helper made: reading it again" in text
    assert kernel.reads == reads + 1 and _held(kernel) == _desired(h)


def test_a_change_behind_the_helpers_back_is_repaired_by_the_refresh(clock: Clock) -> None:
    h, kernel = _helper(clock)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    clock.advance(HANDOVER_S)
    h.tick()  # the takeover's end
    key = next(k for k, d in kernel.dests.items() if d.ip == "192.0.2.12")
    kernel.dests[key] = Dest(key[0], key[1], 3)  # re-weighted by hand: nothing fails for it
    h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")
    assert _held(kernel) != _desired(h)  # trusted until the refresh
    kernel.take()
    clock.advance(15)
    lines = h.tick()
    assert "refresh: the kernel drifted from the desired state" in infos(lines)
    assert {type(op).__name__ for op in kernel.take()} == {"EditDest", "SendGarp"}
    assert _held(kernel) == _desired(h)


def test_the_takeovers_end_reads_no_ipvs_table_and_keeps_what_was_made(clock: Clock) -> None:
    h, kernel = _helper(clock)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    key = next(k for k, d in kernel.dests.items() if d.ip == "192.0.2.12")
    kernel.dests[key] = Dest(key[0], key[1], 3)  # by hand: left for the refresh
    kernel.take()
    reads, tables = kernel.reads, kernel.tables
    clock.advance(HANDOVER_S)
    assert "takeover over: the backup sync daemon stops" in infos(h.tick())
    assert (kernel.reads, kernel.tables) == (reads + 1, tables)
    done = {type(op).__name__ for op in kernel.take()}
    assert "StopDaemon" in done and done <= {"StopDaemon", "SetSysctl", "DelGuard", "SendGarp"}
    assert {d.state for d in kernel.daemons} == {"master"} and not kernel.guards
    assert kernel.sysctls["net/ipv4/vs/backup_only"] == "1"
    assert h.balance is not None and h.session.settled
    h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")  # still trusted: a change, no read
    assert kernel.reads == reads + 1 and _held(kernel) != _desired(h)
    clock.advance(15)
    assert "refresh: the kernel drifted from the desired state" in infos(h.tick())
    assert _held(kernel) == _desired(h)


def test_a_reloaded_member_map_is_planned_in_full(clock: Clock) -> None:
    h, kernel = _helper(clock)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert h.balance is not None and h.balance.fits(h.vips, h.retired, h.map)
    h.map.update((MemberRange("192.0.2.12", 50000, 50999),))
    assert not h.balance.fits(h.vips, h.retired, h.map)  # a copy: the map it was made for
    assert h.balance.member_map == MemberMap(h.settings.member_map)
    reads = kernel.reads
    h.handle("2 ACTIVATE 192.0.2.11")
    assert kernel.reads == reads + 1
