"""Connections the frontends open from a VIP, in a real kernel (issue 9): with a member map every
reply reaches the member that opened the connection, through a switch and a crash of the
balancer; incoming balancing is unchanged; nobody else's tc filter or IPVS service is touched;
a bad map changes nothing. Run inside user-mode Linux (tests.lab.uml)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgp_ipvs_helper.steering import TC_CHAIN
from tests.lab.group import TCP, UDP, Group
from tests.lab.lan import Host, ipvsadm
from tests.lab.traffic import outgoing

VIPS = ["198.51.100.10", "198.51.100.11"]
SOURCES = [f"192.0.2.{n}" for n in range(64, 100)]
RANGES = {"fe1": (50000, 54999), "fe2": (55000, 59999), "fe3": (60000, 64999)}
MAP = "".join(f"192.0.2.{10 + i} {a}-{b}\n" for i, (a, b) in enumerate(RANGES.values(), 1))
MARKS = {name: 0x43470000 | first for name, (first, _) in RANGES.items()}


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    prefix = f"o{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with Group(prefix[:8], VIPS, sources=SOURCES, server=True) as g:
        yield g


def helper_args(path: Path, text: str = MAP) -> tuple[str, ...]:
    path.write_text(text)
    return ("-t", "3", "--drain", "2", "--member-map", str(path))


def tc_filters(host: Host) -> str:
    return host.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout


def fwmark_lines(host: Host) -> set[str]:
    return {line for line in ipvsadm(host, "-S", "-n").splitlines() if " -f " in line}


def expected_fwmark() -> set[str]:
    lines = set()
    for i, name in enumerate(RANGES, 1):
        lines |= {
            f"-A -f {MARKS[name]} -s wlc",
            f"-a -f {MARKS[name]} -r 192.0.2.{10 + i}:0 -g -w 100",
        }
    return lines


def all_answered(answered: dict) -> bool:
    return all(a.complete for a in answered.values())


def test_every_frontend_gets_every_answer_and_incoming_is_unchanged(
    group: Group, tmp_path: Path
) -> None:
    h1, _, _ = group.start_all(*helper_args(tmp_path / "members"))
    for fe in group.fe:
        first, last = RANGES[fe.name]
        assert fe.sysctl("net.ipv4.ip_local_port_range").split() == [str(first), str(last)]
        assert fwmark_lines(fe) == set() and tc_filters(fe) == ""
    assert any("this host is 192.0.2.11 in the member map" in line for line in h1.log)
    # fe2 is not in the ACTIVATE list: its range is still its own
    assert h1.request(f"ACTIVATE {group.members(group.fe[0], group.fe[2])}").endswith("members=2")
    fe1 = group.fe[0]
    assert fwmark_lines(fe1) == expected_fwmark()
    assert f"chain {TC_CHAIN}" in tc_filters(fe1) and "198.51.100.10/31" in tc_filters(fe1)
    for vip in VIPS:
        answered = group.outgoing(vip, count=12)
        assert all_answered(answered), answered  # 36 of 36 TCP and UDP per VIP: 72 of 72
    spread = group.spread(SOURCES[:30])
    assert set(spread) == {"fe1", "fe3"} and min(spread.values()) >= 8, spread
    assert h1.request("DEACTIVATE").endswith("OK standby")
    time.sleep(2.5)
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""


def test_outgoing_connections_survive_a_switch_and_a_crash(group: Group, tmp_path: Path) -> None:
    h1, h2, h3 = group.start_all(*helper_args(tmp_path / "members"))
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    switch = group.switch(h1, h2, outgoing=4)
    assert switch.kept == len(switch.survivors) and switch.max_gap < 1.0, switch.summary()
    for name, stats in switch.outgoing.items():
        assert stats.broken == [] and stats.max_gap < 1.0, (name, switch.summary())
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""  # the drain is over
    assert fwmark_lines(fe2) == expected_fwmark()
    assert all_answered(group.outgoing(VIPS[0], count=12))
    crash = group.crash(h2, h3, outgoing=4, broken_after=2.0)
    assert crash.kept == len(crash.survivors), crash.summary()
    for name, stats in crash.outgoing.items():
        if name != "fe2":  # fe2's own connections die with it
            assert stats.broken == [], (name, crash.summary())
    answered = outgoing([fe1, fe3], VIPS[0], group.server.ip, TCP, UDP, 12)
    assert all_answered(answered), answered


def test_foreign_filters_and_services_are_kept_leftovers_are_removed(
    group: Group, tmp_path: Path
) -> None:
    fe1 = group.fe[0]
    fe1.run(["tc", "qdisc", "add", "dev", "eth0", "ingress"])
    fe1.run(["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ip", "pref", "100",
             "flower", "dst_ip", "203.0.113.1", "action", "drop"])  # fmt: skip
    ipvsadm(fe1, "-A", "-f", "7", "-s", "rr")
    ipvsadm(fe1, "-a", "-f", "7", "-r", "192.0.2.50", "-g", "-w", "1")
    foreign_tc, foreign_ipvs = tc_filters(fe1), fwmark_lines(fe1)
    # what a dead run left: a range filter and a firewall-mark service with our marks
    leftover = str(0x43470000 | 40000)
    ipvsadm(fe1, "-A", "-f", leftover, "-s", "wlc")
    fe1.run(["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ip", "pref", "65000",
             "chain", str(TC_CHAIN), "handle", "0x69c40", "flower", "skip_hw", "ip_proto", "tcp",
             "dst_port", "40000-44999", "action", "skbedit", "mark", leftover])  # fmt: skip
    h1 = group.start(fe1, *helper_args(tmp_path / "members"))
    h1.wait_started()
    assert tc_filters(fe1) == foreign_tc and fwmark_lines(fe1) == foreign_ipvs
    assert h1.request(f"ACTIVATE {fe1.ip}").endswith("members=1")
    assert fwmark_lines(fe1) == foreign_ipvs | expected_fwmark()
    assert "pref 100 flower" in tc_filters(fe1) and "pref 65000" in tc_filters(fe1)
    assert "clsact" not in fe1.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert h1.request("QUIT", timeout=30).endswith(" OK")
    assert tc_filters(fe1) == foreign_tc and fwmark_lines(fe1) == foreign_ipvs


def test_bad_maps_change_nothing_until_fixed(group: Group, tmp_path: Path) -> None:
    fe1 = group.fe[0]
    before = fe1.sysctl("net.ipv4.ip_local_port_range")
    path = tmp_path / "members"
    bad = {
        "192.0.2.11 50000-54999\n192.0.2.12 54000-59999\n": ":2: '192.0.2.12 54000-59999': range",
        "192.0.2.11 1000-2000\n": ":1: '192.0.2.11 1000-2000': range 1000-2000 starts below 1024",
        "192.0.2.11 5000-6000\n": "holds service port 5060",
        "198.51.100.10 50000-54999\n": "198.51.100.10 is a VIP",
        "192.0.2.11 50000-54999 fe80::11\n": "fe80::11: not a unicast address: a link-local",
    }
    for text, reason in bad.items():
        h = group.start(fe1, *helper_args(path, text))
        h.wait_started()
        assert any(line.startswith(f"* ERROR {path}") and reason in line for line in h.log), h.log
        reply = h.request(f"ACTIVATE {fe1.ip}")
        assert f" ERROR {path}" in reply
        assert fe1.addresses("lo") == ["127.0.0.1/8"] and ipvsadm(fe1, "-S", "-n") == ""
        assert fe1.sysctl("net.ipv4.ip_local_port_range") == before
        h.kill()
    h = group.start(fe1, *helper_args(path))  # fixed
    assert h.request(f"ACTIVATE {fe1.ip}").endswith("members=1")
    assert fe1.sysctl("net.ipv4.ip_local_port_range").split() == ["50000", "54999"]
