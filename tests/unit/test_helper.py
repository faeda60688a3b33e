"""The engine driven like CGP drives it, against the in-memory kernel and a fake clock."""

from __future__ import annotations

from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan import operations
from cgp_ipvs_helper.plan.model import Address, Daemon, KernelState, Role

from .conftest import SELF, VIPS, Clock, error, fresh_state, infos, kinds, make_helper, ok


def test_contract_example_transcript(clock: Clock) -> None:
    """The example of docs/protocol.md, verbatim (addresses from the contract, kernel in memory)."""
    vips = tuple(f"198.51.100.{i}" for i in range(8))
    kernel = FakeKernel(fresh_state(ip="192.168.1.80"))
    h = make_helper(kernel, clock, vips=vips)
    banner = render(h.start())
    assert banner[0] == (
        "* cgp-ipvs-helper 0.1.0: 8 VIPs from /etc/sysconfig/vipaddrs, "
        "iface eth0, persistence 15s, syncid 0, weight 100"
    )
    transcript = [
        ("00001 INTF 3", "00001 INTF 1"),
        (
            "00002 ACTIVATE 192.168.1.80 192.168.1.81 192.168.1.82",
            "00002 OK active vips=8 members=3",
        ),
        ("00003 ACTIVATE 192.168.1.80 192.168.1.82", "00003 OK active vips=8 members=2"),
        ("00004 DEACTIVATE", "00004 OK standby"),
        ("00005 QUIT", "00005 OK"),
    ]
    for request, expected in transcript:
        out = h.handle(request + "\n")
        if request.endswith("QUIT"):
            assert out.response is None, request
            clock.advance(5.0)
            out = h.tick()
        assert out.response is not None and render(out)[-1] == expected, request
    assert h.finished


def test_start_converges_to_standby(kernel: FakeKernel, clock: Clock) -> None:
    h = make_helper(kernel, clock)
    lines = h.start()
    ops = kernel.take()
    assert operations.AddAddress(Address("198.51.100.10", "lo")) in ops
    assert operations.StartDaemon(Daemon("backup", "eth0", 0)) in ops
    assert kernel.sysctls["net/ipv4/conf/eth0/arp_ignore"] == "1"
    assert kernel.sysctls["net/ipv4/vs/backup_only"] == "1"
    assert "ip address add 198.51.100.10/32 dev lo" in infos(lines)
    assert "ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 0" in infos(lines)
    assert not kernel.services and lines.response is None


def test_start_removes_leftovers_of_a_dead_run_but_nothing_foreign(clock: Clock) -> None:
    kernel = FakeKernel(fresh_state())
    h = make_helper(kernel, clock)
    h.start()
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    clock.advance(HANDOVER_S)
    h.tick()  # the takeover is over: a plain active balancer dies
    kernel.apply(operations.AddService(_foreign_service()))
    kernel.apply(operations.AddAddress(Address("203.0.113.9", "eth0")))
    dead = kernel.observe(frozenset(kernel.sysctls))
    restarted = FakeKernel(
        KernelState(
            addresses=dead.addresses,
            sysctls=dict(kernel.sysctls),
            services=dead.services,
            dests=dead.dests,
            daemons=dead.daemons,
        )
    )
    make_helper(restarted, Clock()).start()
    ops = restarted.take()
    assert {type(op) for op in ops} == {
        operations.DelAddress,
        operations.DelService,
        operations.StopDaemon,
        operations.StartDaemon,
    }
    assert {s.key.vip for s in restarted.services.values()} == {"203.0.113.80"}
    assert Address("203.0.113.9", "eth0") in restarted.addresses
    assert not any(a.dev == "eth0" and a.ip in VIPS for a in restarted.addresses)
    assert restarted.daemons == {Daemon("backup", "eth0", 0)}


def _foreign_service():
    from cgp_ipvs_helper.plan.model import Service, ServiceKey

    return Service(ServiceKey("tcp", "203.0.113.80", 80), "rr", 0)


def test_activate_programs_ipvs_before_taking_the_vips(helper, kernel: FakeKernel) -> None:
    out = helper.handle("7 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    assert out.response == ok("7", "active vips=2 members=3")
    ops = kernel.take()
    k = kinds(ops)
    last_ipvs = max(i for i, n in enumerate(k) if n in ("AddService", "AddDest"))
    assert k.index("SetSysctl") == 0  # backup_only 0: the backup daemon stays while taking over
    assert "StopDaemon" not in k and k.index("StartDaemon") > last_ipvs
    first_vip_on_lan = k.index("AddAddress")
    assert first_vip_on_lan > k.index("AddGuard") > k.index("StartDaemon")
    assert k.index("SendGarp") > max(i for i, n in enumerate(k) if n == "AddAddress")
    assert kinds(ops).count("AddService") == 4  # 2 VIPs x TCP/UDP, port 0
    assert kinds(ops).count("AddDest") == 12
    assert kernel.daemons == {Daemon("backup", "eth0", 0), Daemon("master", "eth0", 0)}
    assert kernel.sysctls["net/ipv4/vs/backup_only"] == "0" and kernel.guards
    garps = [op for op in ops if isinstance(op, operations.SendGarp)]
    assert {(g.ip, g.reply) for g in garps} == {(v, r) for v in VIPS for r in (False, True)}
    weights = {d.ip: d.weight for d in kernel.dests.values()}
    assert weights == {"192.0.2.11": 100, "192.0.2.12": 100, "192.0.2.13": 100}
    svc = next(iter(kernel.services.values()))
    assert (svc.key.port, svc.persistence, svc.scheduler) == (0, 15, "wlc")


def test_the_takeover_ends_with_the_backup_stopped_then_backup_only(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    kernel.take()
    assert helper.next_deadline() == clock.now + 1.1  # the first GARP repeat comes first
    clock.advance(HANDOVER_S - 0.1)
    helper.tick()
    assert "StopDaemon" not in kinds(kernel.take())
    clock.advance(0.1)
    lines = helper.tick()
    assert kinds(kernel.take()) == ["StopDaemon", "SetSysctl", "DelGuard"]
    assert "takeover over: the backup sync daemon stops" in infos(lines)
    assert kernel.daemons == {Daemon("master", "eth0", 0)} and not kernel.guards
    assert kernel.sysctls["net/ipv4/vs/backup_only"] == "1"
    assert helper.session.role is Role.ACTIVE
    helper.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")  # active already: no takeover again
    assert helper.session.role is Role.ACTIVE


def test_deactivate_while_taking_over_ends_the_takeover(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    kernel.take()
    helper.handle("2 DEACTIVATE")
    k = kinds(kernel.take())
    assert k.index("StopDaemon") < k.index("SetSysctl") and "DelGuard" in k
    assert kernel.daemons == {Daemon("master", "eth0", 0)} and not kernel.guards
    assert helper.session.role is Role.DRAINING


def test_repeated_activate_changes_nothing_but_announces(helper, kernel: FakeKernel) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    kernel.take()
    out = helper.handle("2 ACTIVATE 192.0.2.12 192.0.2.11 192.0.2.12")
    assert out.response == ok("2", "active vips=2 members=2")
    assert set(kinds(kernel.take())) == {"SendGarp"}


def test_member_change_applies_only_the_difference(helper, kernel: FakeKernel) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    kernel.take()
    helper.handle("2 ACTIVATE 192.0.2.11 192.0.2.13 192.0.2.14")
    ops = [op for op in kernel.take() if not isinstance(op, operations.SendGarp)]
    assert {type(op) for op in ops} == {operations.AddDest, operations.DelDest}
    assert {op.dest.ip for op in ops if isinstance(op, operations.DelDest)} == {"192.0.2.12"}
    assert {op.dest.ip for op in ops if isinstance(op, operations.AddDest)} == {"192.0.2.14"}


def test_implicit_self_and_weight(kernel: FakeKernel, clock: Clock) -> None:
    h = make_helper(kernel, clock, weight=0)
    h.start()
    out = h.handle("1 ACTIVATE 192.0.2.12 192.0.2.13")
    assert out.response == ok("1", "active vips=2 members=3")
    weights = {d.ip: d.weight for d in kernel.dests.values()}
    assert weights == {SELF: 0, "192.0.2.12": 100, "192.0.2.13": 100}
    assert "members=192.0.2.12,192.0.2.13,192.0.2.11" in h.handle("2 STATUS").response.text


def test_empty_member_list_means_this_server_alone(helper, kernel: FakeKernel) -> None:
    assert helper.handle("1 ACTIVATE").response == ok("1", "active vips=2 members=1")
    assert {d.ip for d in kernel.dests.values()} == {SELF}


def test_bad_members_answer_error_and_change_nothing(helper, kernel: FakeKernel) -> None:
    bad = [
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "0.0.0.0",
        "198.51.100.10",
        "::1",
        "192.0.2.256",
        "192.0.2",
        "192.0.2.1;reboot",
        "$(id)",
        "01.2.3.4",
    ]
    for i, member in enumerate(bad):
        out = helper.handle(f"{i} ACTIVATE 192.0.2.12 {member}")
        assert out.response is not None, member
        assert (out.response.seq, out.response.kind) == (str(i), "ERROR"), member
    assert kernel.take() == []
    assert helper.session.role is Role.STANDBY


def test_no_local_member_and_no_lan_address(clock: Clock) -> None:
    kernel = FakeKernel(KernelState(addresses=(Address("127.0.0.1", "lo", 8),)))
    h = make_helper(kernel, clock)
    h.start()
    kernel.take()
    out = h.handle("1 ACTIVATE 192.0.2.12")
    assert out.response == error("1", "no listed member is local and eth0 has no IPv4 address")
    assert kernel.take() == []
