"""The preflight check's verdicts, facts in, findings out: a correct frontend is all OK, and each
mistake of the set-up is the one FAIL (or WARN) that names it, with its fix."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from cgp_ipvs_helper.check import _is_helper, report
from cgp_ipvs_helper.core.preflight import Facts, Level, evaluate, status
from cgp_ipvs_helper.plan.model import Address, Daemon, KernelState, Service, ServiceKey, Settings
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE
from cgp_ipvs_helper.plan.planner import services
from cgp_ipvs_helper.plan.steering import MemberRange

VIPS = ("198.51.100.10", "198.51.100.11", "2001:db8:10::10")
MEMBERS = (
    MemberRange("192.0.2.11", 40000, 44999, "2001:db8::11"),
    MemberRange("192.0.2.12", 45000, 49999, "2001:db8::12"),
)
GOOD_SYSCTLS = {
    "net/ipv4/conf/all/arp_ignore": "1",
    "net/ipv4/conf/eth0/arp_ignore": "0",
    "net/ipv4/conf/all/arp_announce": "2",
    "net/ipv4/conf/eth0/arp_announce": "0",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/eth0/rp_filter": "2",
    PORT_RANGE: "40000\t44999",
}


def good() -> Facts:
    addresses = [Address("127.0.0.1", "lo", 8)] + [Address(v, "lo") for v in VIPS]
    addresses += [Address("192.0.2.11", "eth0", 24), Address("2001:db8::11", "eth0", 64)]
    return Facts(
        settings=Settings(),
        vips=VIPS,
        vip_error=None,
        members=MEMBERS,
        member_error=None,
        map_exists=True,
        iface_exists=True,
        state=KernelState(addresses=tuple(addresses), sysctls=dict(GOOD_SYSCTLS)),
        ipvs_problem=None,
    )


def with_state(**changes: object) -> Callable[[Facts], Facts]:
    return lambda f: attrs.evolve(f, state=attrs.evolve(f.state, **changes))


def with_sysctl(path: str, value: str) -> Callable[[Facts], Facts]:
    return lambda f: attrs.evolve(
        f, state=attrs.evolve(f.state, sysctls={**f.state.sysctls, path: value})
    )


def without(ip: str, dev: str) -> Callable[[Facts], Facts]:
    return lambda f: attrs.evolve(
        f,
        state=attrs.evolve(
            f.state, addresses=tuple(a for a in f.state.addresses if (a.ip, a.dev) != (ip, dev))
        ),
    )


def moved(ip: str, dev: str, to: str) -> Callable[[Facts], Facts]:
    return lambda f: with_state(addresses=(*without(ip, dev)(f).state.addresses, Address(ip, to)))(
        f
    )


def test_a_correct_frontend_is_all_ok() -> None:
    findings = evaluate(good())
    assert [f.line() for f in findings if f.level is not Level.OK] == []
    assert status(findings) == 0
    assert report(findings).endswith(f"check: OK ({len(findings)} OK, 0 WARN, 0 FAIL)\n")


FOREIGN = Service(ServiceKey("tcp", "198.51.100.10", 80), "rr", 0)
OURS = sorted(services(Settings(), VIPS), key=str)


@pytest.mark.parametrize(
    ("name", "change", "level", "words"),
    [
        ("bad VIP file", lambda f: attrs.evolve(f, vips=None, vip_error="x:3: bad"), 2, "x:3"),
        ("empty VIP file", lambda f: attrs.evolve(f, vips=()), 2, "lists no VIP"),
        ("bad map", lambda f: attrs.evolve(f, members=None, member_error="m:2: no"), 2, "m:2"),
        ("no map", lambda f: attrs.evolve(f, members=(), map_exists=False), 1, "no member map"),
        ("not in map", lambda f: attrs.evolve(f, members=MEMBERS[1:]), 2, "no address of this"),
        ("port range", with_sysctl(PORT_RANGE, "32768\t60999"), 1, "32768-60999"),
        ("no -i", lambda f: attrs.evolve(f, iface_exists=False), 2, "no such interface"),
        ("no IPv4 on -i", moved("192.0.2.11", "eth0", "eth1"), 2, "no IPv4 address"),
        ("no IPv6 on -i", without("2001:db8::11", "eth0"), 2, "2001:db8::11"),
        ("VIP off lo", without("198.51.100.11", "lo"), 2, "198.51.100.11 not on lo"),
        ("arp_ignore", with_sysctl("net/ipv4/conf/all/arp_ignore", "0"), 2, "arp_ignore 0"),
        ("arp_announce", with_sysctl("net/ipv4/conf/all/arp_announce", "1"), 2, "arp_announce 1"),
        ("rp_filter", with_sysctl("net/ipv4/conf/eth0/rp_filter", "1"), 1, "rp_filter 1"),
        ("no ip_vs", with_state(ipvs=False), 2, "IPVS"),
        ("keepalived", lambda f: attrs.evolve(f, managers=((7, "keepalived"),)), 1, "keepalived"),
        ("foreign service", with_state(services=frozenset({FOREIGN})), 2, "tcp/198.51.100.10:80"),
        ("dead run", with_state(daemons=frozenset({Daemon("backup", "eth0", 0)})), 1, "sync"),
        (
            "dead run's VIP",
            lambda f: with_state(addresses=(*f.state.addresses, Address(VIPS[0], "eth0")))(f),
            2,
            "still takes",
        ),
    ],
)
def test_each_mistake_is_the_finding_that_names_it(
    name: str, change: Callable[[Facts], Facts], level: int, words: str
) -> None:
    findings = evaluate(change(good()))
    bad = [f for f in findings if f.level is not Level.OK]
    assert len(bad) == 1, [f.line() for f in bad]
    assert bad[0].level == level and words in bad[0].text, bad[0].line()
    assert bad[0].fix  # every finding that is not OK says what to do
    assert status(findings) == level


def test_a_running_helpers_state_is_its_own() -> None:
    live = with_state(
        services=frozenset(OURS),
        daemons=frozenset({Daemon("master", "eth0", 0)}),
        addresses=(*good().state.addresses, Address(VIPS[0], "eth0")),
    )(good())
    assert status(evaluate(attrs.evolve(live, helpers=((42, "python3"),)))) == 0
    assert status(evaluate(live)) == 2  # the same, with no helper: a dead run's VIP on -i


def test_the_arp_settings_count_as_the_kernel_takes_them_the_larger_of_all_and_the_device() -> None:
    facts = with_sysctl("net/ipv4/conf/all/arp_ignore", "0")(good())
    facts = with_sysctl("net/ipv4/conf/eth0/arp_ignore", "1")(facts)
    assert status(evaluate(facts)) == 0


@pytest.mark.parametrize(
    ("argv", "helper"),
    [
        (["/usr/bin/python3.11", "-s", "/opt/CommuniGate/Services/IPVSHelper.py", "-p", "0"], True),
        (["python", "-m", "cgp_ipvs_helper", "-i", "eth0"], True),
        (["/usr/bin/python3.9", "-s", "/usr/sbin/cgp-ipvs-helper"], True),
        (["/usr/bin/python3.9", "-s", "/usr/sbin/cgp-ipvs-helper", "check", "-i", "eth1"], False),
        (["/usr/bin/python3", "/opt/CommuniGate/Services/IPVSHelper.py", "check"], False),
        (["python", "-m", "cgp_ipvs_helper", "check"], False),
        (["vim", "IPVSHelper.py.orig"], False),
    ],
)
def test_which_processes_are_helpers(argv: list[str], helper: bool) -> None:
    assert _is_helper(argv) is helper
