"""The engine's timers and its end: drain, gratuitous ARP repeats, refresh, retry, QUIT."""

from __future__ import annotations

from cgp_ipvs_helper.core.protocol import Response
from cgp_ipvs_helper.core.session import FLUSH_S, HANDOVER_S
from cgp_ipvs_helper.plan.model import Daemon, Role
from cgp_ipvs_helper.plan.operations import AddService

from .conftest import VIPS, infos, kinds, make_helper, ok


def test_deactivate_drains_then_returns_to_standby(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    clock.advance(HANDOVER_S)
    helper.tick()
    kernel.take()
    out = helper.handle("2 DEACTIVATE")
    assert out.response == ok("2", "standby")
    assert set(kinds(kernel.take())) == {"DelAddress", "EditDest"}
    assert kernel.services and kernel.daemons == {Daemon("master", "eth0", 0)}
    assert "role=standby" in helper.handle("3 STATUS").response.text
    clock.advance(4.9)
    helper.tick()
    assert kernel.services
    clock.advance(0.2)
    helper.tick()
    assert not kernel.services
    assert kernel.daemons == {Daemon("backup", "eth0", 0)}
    assert helper.handle("4 STATUS").response == ok(
        "4", "role=standby vips=2 members= persistence=15 syncid=0 weight=100 conflicts=0"
    )


def test_after_a_short_drain_the_master_stays_until_it_has_sent_its_queue(kernel, clock) -> None:
    helper = make_helper(kernel, clock, drain=1.0)
    helper.start()
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    clock.advance(HANDOVER_S)
    helper.tick()
    helper.handle("2 DEACTIVATE")
    kernel.take()
    clock.advance(1.0)
    helper.tick()
    assert not kernel.services and kernel.sysctls["net/ipv4/vs/backup_only"] == "1"
    assert kernel.daemons == {Daemon("backup", "eth0", 0), Daemon("master", "eth0", 0)}
    kernel.take()
    clock.advance(FLUSH_S - 1.0)
    lines = helper.tick()
    assert kinds(kernel.take()) == ["StopDaemon"] and kernel.daemons == {
        Daemon("backup", "eth0", 0)
    }
    assert "flush over: the master sync daemon stops" in infos(lines)


def test_activate_during_drain_cancels_it(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    helper.handle("2 DEACTIVATE")
    clock.advance(2)
    kernel.take()
    assert helper.handle("3 ACTIVATE 192.0.2.11 192.0.2.12").response == ok(
        "3", "active vips=2 members=2"
    )
    # a takeover again: the backup daemon comes back (the old balancer may be another now)
    assert {type(op).__name__ for op in kernel.take()} == {
        "SetSysctl",
        "EditDest",
        "StartDaemon",
        "AddGuard",
        "AddAddress",
        "SendGarp",
    }
    clock.advance(10)
    helper.tick()
    assert kernel.services and helper.session.role is Role.ACTIVE


def test_garp_repeats_after_the_response(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11")
    kernel.take()
    assert helper.next_deadline() == clock.now + 1.1
    clock.advance(1.1)
    helper.tick()
    assert set(kinds(kernel.take())) == {"SendGarp"}
    clock.advance(1.1)
    helper.tick()
    assert len(kernel.take()) == 4
    clock.advance(1.1)
    helper.tick()
    assert kernel.take() == []


def test_refresh_repairs_drift_and_reannounces(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    clock.advance(HANDOVER_S)
    helper.tick()
    kernel.take()
    # somebody removed a VIP from eth0 and a real server, and reset a sysctl
    vip_addr = next(a for a in kernel.addresses if a.dev == "eth0" and a.ip == VIPS[0])
    kernel.addresses.remove(vip_addr)
    del kernel.dests[next(iter(kernel.dests))]
    kernel.sysctls["net/ipv4/conf/all/arp_ignore"] = "0"
    clock.advance(15)
    lines = helper.tick()
    ops = kernel.take()
    assert {type(op).__name__ for op in ops} == {"AddAddress", "AddDest", "SetSysctl", "SendGarp"}
    assert "refresh: the kernel drifted from the desired state" in infos(lines)


def test_kernel_failure_answers_error_and_retries_at_refresh(helper, kernel, clock) -> None:
    kernel.fail[AddService] = "Operation not permitted"
    out = helper.handle("1 ACTIVATE 192.0.2.11")
    assert out.response is not None
    assert (out.response.seq, out.response.kind) == ("1", "ERROR")
    assert out.response.text.startswith(
        "ipvsadm -A -t 198.51.100.10:0 -s wlc -p 15: Operation not permitted (and "
    )
    assert "FAILED ipvsadm -A -t 198.51.100.10:0 -s wlc -p 15: Operation not permitted" in infos(
        out
    )
    del kernel.fail[AddService]
    clock.advance(15)
    helper.tick()
    assert len(kernel.services) == 4 and len(kernel.dests) == 4


def test_quit_when_active_drains_before_answering(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    out = helper.handle("2 QUIT")
    assert out.response is None
    assert not any(a.dev == "eth0" and a.ip in VIPS for a in kernel.addresses)
    assert helper.handle("3 STATUS").response == Response("3", "ERROR", "stopping")
    clock.advance(5)
    out = helper.tick()
    assert out.response == ok("2") and helper.finished
    assert not kernel.services and not kernel.daemons
    assert {a.ip for a in kernel.addresses if a.dev == "lo"} >= set(VIPS)


def test_quit_from_standby_stops_the_backup_daemon_at_once(helper, kernel) -> None:
    assert helper.handle("9 QUIT").response == ok("9")
    assert helper.finished and not kernel.daemons
    assert kernel.sysctls["net/ipv4/conf/all/arp_ignore"] == "1"


def test_end_of_input_is_quit_without_a_response(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE")
    assert helper.end_of_input().response is None
    clock.advance(5)
    assert helper.tick().response is None and helper.finished
    assert not kernel.services
