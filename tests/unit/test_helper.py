"""The engine driven like CGP drives it, against the in-memory kernel and a fake clock."""

from __future__ import annotations

from cgp_ipvs_helper.core.protocol import Reply, Response, render
from cgp_ipvs_helper.core.session import FLUSH_S, HANDOVER_S
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, Daemon, KernelState, Role
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddDest,
    AddService,
    DelAddress,
    DelDest,
    DelService,
    SendGarp,
    StartDaemon,
    StopDaemon,
)

from .conftest import SELF, VIPS, Clock, fresh_state, make_helper


def ok(seq: str, text: str = "") -> Response:
    return Response(seq, "OK", text)


def error(seq: str, text: str) -> Response:
    return Response(seq, "ERROR", text)


def infos(reply: Reply) -> list[str]:
    """The text of each info line, in order (operations as their shell commands)."""
    return [text for i in reply.infos for text in i.texts()]


def kinds(ops) -> list[str]:
    return [type(op).__name__ for op in ops]


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
    assert AddAddress(Address("198.51.100.10", "lo")) in ops
    assert StartDaemon(Daemon("backup", "eth0", 0)) in ops
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
    kernel.apply(AddService(_foreign_service()))
    kernel.apply(AddAddress(Address("203.0.113.9", "eth0")))
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
    assert {type(op) for op in ops} == {DelAddress, DelService, StopDaemon, StartDaemon}
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
    garps = [op for op in ops if isinstance(op, SendGarp)]
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
    ops = [op for op in kernel.take() if not isinstance(op, SendGarp)]
    assert {type(op) for op in ops} == {AddDest, DelDest}
    assert {op.dest.ip for op in ops if isinstance(op, DelDest)} == {"192.0.2.12"}
    assert {op.dest.ip for op in ops if isinstance(op, AddDest)} == {"192.0.2.14"}


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


def test_unknown_and_malformed_lines(helper, kernel) -> None:
    assert helper.handle("5 FROB x").response == error("5", "unknown command: FROB")
    assert helper.handle("6").response == error("6", "no command")
    assert helper.handle("").response is None
    assert helper.handle("   \t ").response is None
    assert helper.handle("7 STATUS extra").response == error("7", "unexpected argument: 'extra'")
    assert helper.handle("8 INTF").response == error("8", "INTF needs one version number")
    assert "not understood: 5 FROB x" in infos(helper.handle("5 FROB x"))
    assert kernel.take() == []


def test_tabs_crlf_and_padded_seq(helper) -> None:
    assert helper.handle("00042\tINTF\t3\r\n") == Reply((), Response("00042", "INTF", "1"))
    status = helper.handle("x-1  status\r\n").response
    assert (status.seq, status.kind) == ("x-1", "OK") and status.text.startswith("role=standby")


def test_bad_vip_file_leaves_the_helper_inert(kernel, clock) -> None:
    from cgp_ipvs_helper.errors import VipFileError

    def load(path: str):
        raise VipFileError(path, 3, "10.0.0.0/8", "mask /8 is below /24")

    h = make_helper(kernel, clock)
    h.load = load
    lines = h.start()
    assert kernel.take() == []
    assert any(
        "/etc/sysconfig/vipaddrs:3: '10.0.0.0/8': mask /8 is below /24" in i for i in infos(lines)
    )
    out = h.handle("1 ACTIVATE 192.0.2.11")
    assert out.response == error(
        "1", "/etc/sysconfig/vipaddrs:3: '10.0.0.0/8': mask /8 is below /24"
    )
    assert h.handle("2 QUIT").response == ok("2")
    assert kernel.take() == []


def test_sighup_reload_applies_the_difference(helper, kernel, clock) -> None:
    helper.handle("1 ACTIVATE 192.0.2.11")
    kernel.take()
    helper.load = lambda _p: ("198.51.100.11", "198.51.100.12")
    lines = helper.reload()
    ops = kernel.take()
    added = {op.address.ip for op in ops if isinstance(op, AddAddress)}
    removed = {op.address.ip for op in ops if isinstance(op, DelAddress)}
    assert added == {"198.51.100.12"} and removed == {"198.51.100.10"}
    assert {s.key.vip for s in kernel.services.values()} == {"198.51.100.11", "198.51.100.12"}
    assert "reloaded /etc/sysconfig/vipaddrs: 2 VIPs" in infos(lines)


def test_sighup_with_a_bad_file_keeps_everything(helper, kernel) -> None:
    from cgp_ipvs_helper.errors import VipFileError

    def load(path: str):
        raise VipFileError(path, 1, "x", "not an IPv4 address")

    helper.load = load
    lines = helper.reload()
    assert kernel.take() == [] and helper.vips == VIPS
    assert any(i.startswith("ERROR /etc/sysconfig/vipaddrs:1") for i in infos(lines))


def test_a_missing_ipvs_is_said_once_and_when_it_is_back(clock: Clock) -> None:
    class NoIpvs(FakeKernel):
        ipvs_problem = "IPVS is not available: load the ip_vs kernel module"

        def observe(self, sysctls, tc_dev=None, guard_dev=None):
            state = super().observe(sysctls, tc_dev, guard_dev)
            return KernelState(addresses=state.addresses, sysctls=state.sysctls, ipvs=False)

    kernel = NoIpvs(fresh_state())
    h = make_helper(kernel, clock)
    problem = "IPVS: IPVS is not available: load the ip_vs kernel module"
    assert infos(h.start()).count(problem) == 1
    assert problem not in infos(h.handle("1 ACTIVATE 192.0.2.11"))
    kernel.__class__ = FakeKernel
    clock.advance(15)
    assert "IPVS: available again" in infos(h.tick())


def test_not_understood_lines_are_logged_verbatim(helper) -> None:
    line = "7 FROB " + "x" * 3000
    logged = "".join(i for i in infos(helper.handle(line)))
    assert logged == f"not understood: {line}"


def test_an_unexpected_error_costs_one_request_not_the_helper(helper, kernel, clock) -> None:
    def broken(_arg):
        raise OSError(105, "No buffer space available")

    # (an ACTIVATE from standby reads nothing: it plans from the state read at start)
    kernel.apply_many = broken
    out = helper.handle("1 ACTIVATE 192.0.2.11")
    assert out.response == error("1", "internal error: OSError(105, 'No buffer space available')")
    assert infos(out)[0].startswith("internal error at ")
    clock.advance(15)
    assert infos(helper.tick())[0].startswith("internal error at ")
    del kernel.apply_many
    assert helper.handle("2 ACTIVATE 192.0.2.11").response == ok("2", "active vips=2 members=1")


def test_a_vip_that_became_an_address_of_this_host_is_refused_at_each_activate(
    helper, kernel, clock
) -> None:
    kernel.addresses.append(Address(VIPS[1], "eth1", 24))  # someone gave it to another device
    clock.advance(15)
    helper.tick()  # the refresh reads it: the ACTIVATE planned ahead is checked against it
    kernel.take()
    reason = f"already an address of this host on eth1 ({VIPS[1]}/24)"
    for seq in ("1", "2"):  # the same answer each time, from what standby worked out
        out = helper.handle(f"{seq} ACTIVATE 192.0.2.11")
        assert out.response is not None and out.response.kind == "ERROR", out
        assert (
            out.response.text.startswith("/etc/sysconfig/vipaddrs") and reason in out.response.text
        )
    assert kernel.take() == [] and helper.session.role is Role.STANDBY
