"""Connections the frontends open from a VIP, in a real kernel: with a member map
every reply reaches the member that opened the connection, through a switch and a crash of the
balancer, for IPv4 VIPs and for IPv6 ones (a dual-stack file); incoming balancing is unchanged;
nobody else's tc filter or IPVS service is touched (a bad map: test_broken_map.py). Run inside
user-mode Linux (lab.uml)."""

from __future__ import annotations

import time
from pathlib import Path

from cgp_ipvs_helper.plan.steering import TC_CHAIN
from lab.group import Group
from lab.lan import Host, ipvsadm
from tests.kernel.groups import BOTH, IPV6, ONLY_IPV6, RANGES, Family, helper_args, member_map

MARKS = {name: 0x43470000 | first for name, (first, _) in RANGES.items()}


def tc_filters(host: Host) -> str:
    return host.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout


def fwmark_lines(host: Host) -> set[str]:
    return {line for line in ipvsadm(host, "-S", "-n").splitlines() if " -f " in line}


def expected_fwmark(group: Group, without_ipv6: tuple[str, ...] = ()) -> set[str]:
    """Per range an IPv4 firewall-mark service, and with IPv6 VIPs an IPv6 one, each with the
    range's owner as its only real server."""
    lines = set()
    for fe in group.fe:
        mark = MARKS[fe.name]
        lines |= {f"-A -f {mark} -s wlc", f"-a -f {mark} -r {fe.ip}:0 -g -w 100"}
        if fe.ip6 and fe.name not in without_ipv6:
            lines |= {f"-A -f {mark} -6 -s wlc", f"-a -f {mark} -6 -r [{fe.ip6}]:0 -g -w 100"}
    return lines


def all_answered(answered: dict) -> bool:
    return all(a.complete for a in answered.values())


@BOTH
def test_every_frontend_gets_every_answer_and_incoming_is_unchanged(
    group: Group, family: Family, tmp_path: Path
) -> None:
    path = tmp_path / "members"
    h1, _, _ = group.start_all(*helper_args(path, member_map(group)))
    fe1, _, fe3 = group.fe
    for fe in group.fe:
        first, last = RANGES[fe.name]
        assert fe.sysctl("net.ipv4.ip_local_port_range").split() == [str(first), str(last)]
        assert fwmark_lines(fe) == set() and tc_filters(fe) == ""
    assert any("this host is 192.0.2.11 in the member map" in line for line in h1.log)
    # fe2 is not in the ACTIVATE list: its range is still its own
    assert h1.request(f"ACTIVATE {group.members(fe1, fe3)}").endswith("members=2")
    assert fwmark_lines(fe1) == expected_fwmark(group)
    assert f"chain {TC_CHAIN}" in tc_filters(fe1) and family.block in tc_filters(fe1)
    for vip in family.vips:
        answered = group.outgoing(vip, count=12)
        assert all_answered(answered), answered  # 36 of 36 TCP and UDP per VIP: 72 of 72
    spread = group.spread(family.sources[:30])
    assert set(spread) == {"fe1", "fe3"} and min(spread.values()) >= 8, spread
    # the control: the map emptied (our filters and services go), replies are scheduled like
    # a new client's, and only the member the persistence entry picks gets them: at most 12 of
    # 36 TCP and 12 of 36 UDP (an IPv6 VIP is not even balanced: 0)
    path.write_text("# nobody\n")
    assert h1.reload().endswith(f"{path}: 0 port ranges")
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""
    unsteered = group.outgoing(family.vips[0], count=12)
    assert sum(a.tcp for a in unsteered.values()) <= 12, unsteered
    assert sum(a.udp for a in unsteered.values()) <= 12, unsteered
    assert h1.request("DEACTIVATE").endswith("OK standby")
    time.sleep(2.5)
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""


@ONLY_IPV6
def test_a_member_without_an_ipv6_address_gets_no_ipv6_steering(
    group: Group, tmp_path: Path
) -> None:
    """The IPv6 control: fe3 has no IPv6 address in the map, so no IPv6 service for its range;
    the replies to its connections from an IPv6 VIP are scheduled to fe1 or fe2 and lost,
    while fe3's IPv4 ones and every IPv6 one of fe1 and fe2 are answered."""
    text = member_map(group, without_ipv6=("fe3",))
    h1, _, _ = group.start_all(*helper_args(tmp_path / "members", text))
    fe1 = group.fe[0]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert fwmark_lines(fe1) == expected_fwmark(group, without_ipv6=("fe3",))
    said = [line for line in h1.log if "192.0.2.13 has no IPv6 address" in line]
    assert len(said) == 1, said
    answered = group.outgoing(IPV6.vips[0], count=12)
    assert all_answered({k: v for k, v in answered.items() if k != "fe3"}), answered
    assert answered["fe3"].tcp == answered["fe3"].udp == 0, answered
    assert all_answered(group.outgoing("198.51.100.10", count=12))


@BOTH
def test_outgoing_connections_survive_a_switch_and_a_crash(
    group: Group, family: Family, tmp_path: Path
) -> None:
    h1, h2, h3 = group.start_all(*helper_args(tmp_path / "members", member_map(group)))
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    switch = group.switch(h1, h2, outgoing=4)  # 4 from each frontend's first VIP: 12
    assert switch.kept == len(switch.survivors) and switch.max_gap < 1.0, switch.summary()
    assert sum(len(stats.conns) for stats in switch.outgoing.values()) == 12
    for name, stats in switch.outgoing.items():
        assert stats.broken == [] and stats.max_gap < 1.0, (name, switch.summary())
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""  # the drain is over
    assert fwmark_lines(fe2) == expected_fwmark(group)
    assert all_answered(group.outgoing(family.vips[0], count=12))
    crash = group.crash(h2, h3, outgoing=4, broken_after=2.0)
    assert crash.kept == len(crash.survivors), crash.summary()
    for name, stats in crash.outgoing.items():
        if name != "fe2":  # fe2's own connections die with it: 8 survivors on fe1 and fe3
            assert len(stats.conns) == 4 and stats.broken == [], (name, crash.summary())
    answered = group.outgoing(family.vips[0], count=12, hosts=[fe1, fe3])
    assert all_answered(answered), answered


@ONLY_IPV6  # dual stack: both kinds
def test_foreign_filters_and_services_are_kept_leftovers_are_removed(
    group: Group, tmp_path: Path
) -> None:
    fe1 = group.fe[0]
    fe1.run(["tc", "qdisc", "add", "dev", "eth0", "ingress"])
    fe1.run(["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ip", "pref", "100",
             "flower", "dst_ip", "203.0.113.1", "action", "drop"])  # fmt: skip
    fe1.run(["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ipv6", "pref", "101",
             "flower", "dst_ip", "2001:db8:99::1", "action", "drop"])  # fmt: skip
    for six in ([], ["-6"]):
        ipvsadm(fe1, "-A", "-f", "7", *six, "-s", "rr")
    ipvsadm(fe1, "-a", "-f", "7", "-r", "192.0.2.50", "-g", "-w", "1")
    ipvsadm(fe1, "-a", "-f", "7", "-6", "-r", "[2001:db8::50]:0", "-g", "-w", "1")
    foreign_tc, foreign_ipvs = tc_filters(fe1), fwmark_lines(fe1)
    # what a dead run left: range filters and firewall-mark services with our marks, per family
    leftover = str(0x43470000 | 40000)
    for six, proto, pref in (([], "ip", "65000"), (["-6"], "ipv6", "65001")):
        ipvsadm(fe1, "-A", "-f", leftover, *six, "-s", "wlc")
        fe1.run(["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", proto, "pref",
                 pref, "chain", str(TC_CHAIN), "handle", "0x69c40", "flower", "skip_hw",
                 "ip_proto", "tcp", "dst_port", "40000-44999", "action", "skbedit", "mark",
                 leftover])  # fmt: skip
    h1 = group.start(fe1, *helper_args(tmp_path / "members", member_map(group)))
    h1.wait_started()
    assert tc_filters(fe1) == foreign_tc and fwmark_lines(fe1) == foreign_ipvs
    assert h1.request(f"ACTIVATE {fe1.ip}").endswith("members=1")
    assert fwmark_lines(fe1) == foreign_ipvs | expected_fwmark(group)
    shown = tc_filters(fe1)
    assert "pref 100 flower" in shown and "pref 101 flower" in shown
    assert "pref 65000" in shown and "protocol ipv6 pref 65001" in shown
    assert "clsact" not in fe1.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert h1.request("QUIT", timeout=30).endswith(" OK")
    assert tc_filters(fe1) == foreign_tc and fwmark_lines(fe1) == foreign_ipvs
