"""The engine given bad lines, a bad VIP file, a missing IPVS, a bug, and SIGHUP reloads."""

from __future__ import annotations

from cgp_ipvs_helper.core.protocol import Reply, Response
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, KernelState, Role
from cgp_ipvs_helper.plan.operations import AddAddress, DelAddress

from .conftest import VIPS, Clock, error, fresh_state, infos, make_helper, ok


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

        def observe(self, sysctls, *args, **kwargs):
            state = super().observe(sysctls, *args, **kwargs)
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
