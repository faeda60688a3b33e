"""Connections the frontends open from a VIP, in a real kernel: with a member map every reply
reaches the member that opened the connection, through a switch and a crash of the balancer,
however young the connection (nothing the sync daemon sends is needed), for IPv4 VIPs and for
IPv6 ones (a dual-stack file), TCP and UDP; what IPVS remembered from before the map does not
misdirect them; a flood to the ranges leaves IPVS and memory as they were; incoming balancing
is unchanged; nobody else's tc filter or IPVS service is touched (a bad map:
test_broken_map.py). Run inside user-mode Linux (lab.uml)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from cgp_ipvs_helper.plan.steering import TC_CHAIN
from lab.group import Group
from lab.lan import Host, ipvsadm
from tests.kernel.groups import (
    BOTH,
    IPV4,
    IPV6,
    ONLY_IPV6,
    RANGES,
    Family,
    helper_args,
    member_map,
)

MARKS = {name: 0x43470000 | first for name, (first, _) in RANGES.items()}


def tc_filters(host: Host) -> str:
    return host.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout


def fwmark_lines(host: Host) -> set[str]:
    return {line for line in ipvsadm(host, "-S", "-n").splitlines() if " -f " in line}


def own_fwmark(fe: Host, ipv6: bool) -> set[str]:
    """The balancer's own range's firewall-mark service (with IPv6 VIPs an IPv6 one too), with
    the balancer as its only real server: the only services the steering makes."""
    mark = MARKS[fe.name]
    lines = {f"-A -f {mark} -s wlc", f"-a -f {mark} -r {fe.ip}:0 -g -w 100"}
    if ipv6 and fe.ip6:
        lines |= {f"-A -f {mark} -6 -s wlc", f"-a -f {mark} -6 -r [{fe.ip6}]:0 -g -w 100"}
    return lines


def wait_steered(fe: Host, timeout: float = 5.0) -> str:
    """The balancer's filters once every owner's MAC is known (right after a start, a range
    whose owner was not resolved yet is dropped for up to a second); its filters."""
    deadline = time.monotonic() + timeout
    while True:
        shown = tc_filters(fe)
        if "Egress Redirect" in shown and "action drop" not in shown:
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)


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
    assert fwmark_lines(fe1) == own_fwmark(fe1, family.ipv6)
    shown = wait_steered(fe1)
    assert f"chain {TC_CHAIN}" in shown and family.block in shown
    for fe in group.fe[1:]:  # fe2 and fe3, by their MACs (IPv6 VIPs: their IPv6 neighbours')
        assert shown.count(f"set dmac {fe.mac}") == (4 if family.ipv6 else 2), shown
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
    assert fwmark_lines(fe1) == own_fwmark(fe1, ipv6=True)
    wait_steered(fe1)
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
    wait_steered(fe1)
    switch = group.switch(h1, h2, outgoing=4)  # 4 from each frontend's first VIP: 12
    assert switch.kept == len(switch.survivors) and switch.max_gap < 1.0, switch.summary()
    assert sum(len(stats.conns) for stats in switch.outgoing.values()) == 12
    for name, stats in switch.outgoing.items():
        assert stats.broken == [] and stats.max_gap < 1.0, (name, switch.summary())
    assert fwmark_lines(fe1) == set() and tc_filters(fe1) == ""  # the drain is over
    assert fwmark_lines(fe2) == own_fwmark(fe2, family.ipv6)
    wait_steered(fe2)
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
    assert fwmark_lines(fe1) == foreign_ipvs | own_fwmark(fe1, ipv6=True)
    shown = tc_filters(fe1)
    assert "pref 100 flower" in shown and "pref 101 flower" in shown
    assert "pref 65000" in shown and "protocol ipv6 pref 65001" in shown
    assert "clsact" not in fe1.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert h1.request("QUIT", timeout=30).endswith(" OK")
    assert tc_filters(fe1) == foreign_tc and fwmark_lines(fe1) == foreign_ipvs


@BOTH
@pytest.mark.parametrize("age", [0.3, 1.0], ids=lambda age: f"{age}s")
def test_young_outgoing_connections_survive_a_switch_and_a_crash(
    group: Group, family: Family, tmp_path: Path, age: float
) -> None:
    """TCP connections and UDP flows from the VIP, `age` s old when the balancer moves (the
    sync daemon sends its table about every 2 s: their entries have not reached the new
    balancer), are all kept on every frontend that lives, the balancers' own included: the
    filters of any balancer holding the map send each reply home from its first packet."""
    h1, h2, h3 = group.start_all(*helper_args(tmp_path / "members", member_map(group)))
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    wait_steered(group.fe[0])
    switch = group.switch(h1, h2, outgoing=4, outgoing_udp=2, settle=age)
    assert switch.kept == len(switch.survivors), switch.summary()
    assert len(switch.outgoing) == 6, switch.summary()  # fe1..fe3, TCP and UDP
    for name, stats in switch.outgoing.items():
        assert len(stats.conns) == (2 if name.endswith("/udp") else 4), name
        assert stats.broken == [], (name, switch.summary())
    crash = group.crash(h2, h3, outgoing=4, outgoing_udp=2, settle=age, broken_after=2.0)
    assert crash.kept == len(crash.survivors), crash.summary()
    for name, stats in crash.outgoing.items():
        if not name.startswith("fe2"):  # fe2's own die with it
            assert stats.broken == [], (name, crash.summary())


def conn_entries(host: Host) -> int:
    """The balancer's IPVS connection entries (templates included)."""
    return len(ipvsadm(host, "-L", "-n", "-c").splitlines()) - 2  # two heading lines


def test_entries_made_before_the_map_no_longer_misdirect_steered_replies(
    group: Group, tmp_path: Path
) -> None:
    """Without a map, the replies to fe2's and fe3's outgoing connections are scheduled by the
    VIP's persistent port-0 service: a persistence template for the server sends every later
    one to the same member, and connection entries remember each. Once the map is loaded the
    filters act before IPVS looks anything up: every reply reaches its owner at once."""
    path = tmp_path / "members"
    h1, _, _ = group.start_all(*helper_args(path, "# nobody yet\n"))
    fe1, fe2, fe3 = group.fe
    for fe in group.fe:  # the ranges the map will give, already in use
        first, last = RANGES[fe.name]
        fe.set_sysctl("net.ipv4.ip_local_port_range", f"{first} {last}")
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    unsteered = group.outgoing("198.51.100.10", count=12, hosts=[fe2, fe3])
    assert sum(a.tcp for a in unsteered.values()) <= 12, unsteered  # one member got them all
    assert conn_entries(fe1) >= 12  # what IPVS remembers now
    path.write_text(member_map(group))
    assert h1.reload().endswith(f"{path}: 3 port ranges")
    wait_steered(fe1)
    assert conn_entries(fe1) >= 12  # still there: nothing is flushed
    assert all_answered(group.outgoing("198.51.100.10", count=12)), "misdirected"


def slab(host: Host) -> int:
    """The lab kernel's slab memory in kB, where IPVS keeps its connection entries (not
    MemAvailable: this test's own process, which built the flood, counts there; nor the
    ip_vs_conn cache's line of /proc/slabinfo: SLUB merges it into another cache)."""
    return int(host.run(["grep", "^Slab:", "/proc/meminfo"]).stdout.split()[1])


def test_an_ack_flood_to_the_ranges_leaves_ipvs_and_memory_where_they_were(
    group: Group, tmp_path: Path
) -> None:
    """100,000 TCP ACKs of no connection to the VIP, to ports in all three ranges (the
    balancer's own included), from 36 addresses: no connection entry, no memory. The control,
    without the map and with sloppy_tcp (what would keep young connections the other way):
    10,000 of them leave an entry each."""
    from lab.flood import ack_flood

    path = tmp_path / "members"
    h1, _, _ = group.start_all(*helper_args(path, member_map(group)))
    fe1 = group.fe[0]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    wait_steered(fe1)
    vip, sources = IPV4.vips[0], list(IPV4.sources)
    ports = [port for first, last in RANGES.values() for port in range(first, last + 1, 97)]
    entries, kb = conn_entries(fe1), slab(fe1)
    started = time.monotonic()
    assert ack_flood(group.client, fe1.mac, vip, ports, sources, 100_000) == 100_000
    took = time.monotonic() - started
    after_entries, after_kb = conn_entries(fe1), slab(fe1)
    stats = fe1.run(["tc", "-s", "filter", "show", "dev", "eth0", "ingress", "chain",
                     str(TC_CHAIN)]).stdout  # fmt: skip
    seen = sum(int(n) for n in re.findall(r"action order 1: .*?\n.*?Sent \d+ bytes (\d+) pkt",
                                          stats, re.S))  # fmt: skip
    print(
        f"flood: 100,000 ACKs sent in {took:.2f} s, {seen} through the filters; "
        f"entries {entries} -> {after_entries}, kernel slab {kb} -> {after_kb} kB"
    )
    assert seen >= 90_000, stats
    assert after_entries == entries
    assert after_kb - kb < 1024  # 100,000 entries would be tens of MB (the control's 10,000)
    # the control: the rejected way (no filters, sloppy_tcp=1)
    path.write_text("# nobody\n")
    assert h1.reload().endswith(f"{path}: 0 port ranges")
    fe1.set_sysctl("net.ipv4.vs.sloppy_tcp", 1)
    try:
        entries, kb = conn_entries(fe1), slab(fe1)
        assert ack_flood(group.client, fe1.mac, vip, ports, sources, 10_000) == 10_000
        grown, after_kb = conn_entries(fe1) - entries, slab(fe1)
    finally:
        fe1.set_sysctl("net.ipv4.vs.sloppy_tcp", 0)
    print(
        f"control (sloppy_tcp=1, no filters): 10,000 ACKs left {grown} entries, kernel slab "
        f"{kb} -> {after_kb} kB"
    )
    assert grown >= 9_000 and after_kb - kb > 2048


def test_a_flood_to_the_ranges_costs_no_more_than_ipvs_forwarding(
    group: Group, tmp_path: Path
) -> None:
    """The same 20,000 UDP datagrams from 36 flows (one per client address) to the VIP, sent to
    ports in fe2's and fe3's ranges (steered by the filters) and to port 40000 (no range: the
    VIP's port-0 service schedules each flow once and forwards by its connection entry), in
    turn, 3 times: steered they take no longer. No socket listens on either port, so each
    member answers either with the same ICMP error."""
    from lab.flood import ack_flood, datagram

    h1, _, _ = group.start_all(*helper_args(tmp_path / "members", member_map(group)))
    fe1 = group.fe[0]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    wait_steered(fe1)
    vip, sources = IPV4.vips[0], list(IPV4.sources)
    spent: dict[str, list[float]] = {"steered": [], "IPVS": []}
    for _ in range(3):
        for case, ports in (("steered", [55001, 60001]), ("IPVS", [40000])):
            started = time.monotonic()
            sent = ack_flood(group.client, fe1.mac, vip, ports, sources, 20_000, datagram, 1)
            spent[case].append(time.monotonic() - started)
            assert sent == 20_000
    steered, forwarded = sorted(spent["steered"])[1], sorted(spent["IPVS"])[1]
    print(f"20,000 datagrams: steered {spent['steered']}, by IPVS {spent['IPVS']} (s)")
    assert steered <= forwarded * 1.25, spent


def test_a_members_new_mac_is_followed_within_a_refresh(group: Group, tmp_path: Path) -> None:
    """fe3's NIC is replaced (a new MAC) and it announces itself, as a bond failing over does:
    the kernel's entry takes the new MAC, and the balancer's next read (-t 3) replaces fe3's
    filters; fe3's outgoing connections are answered again."""
    h1, _, _ = group.start_all(*helper_args(tmp_path / "members", member_map(group)))
    fe1, fe3 = group.fe[0], group.fe[2]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert f"set dmac {fe3.mac}" in wait_steered(fe1)
    new = "02:00:00:00:99:0d"
    fe3.run(["ip", "link", "set", "eth0", "address", new])
    time.sleep(1.1)  # the kernel takes no new MAC within 1 s of the last update (locktime)
    fe3.run(["arping", "-U", "-c", "1", "-I", "eth0", fe3.ip])
    deadline = time.monotonic() + 3 + 2
    while f"set dmac {new}" not in tc_filters(fe1):
        assert time.monotonic() < deadline, tc_filters(fe1)
        time.sleep(0.1)
    assert f"set dmac {fe3.mac}" not in tc_filters(fe1)
    assert any(f"set dmac {new}" in line for line in h1.log), "logged as tc commands"
    assert all_answered(group.outgoing(IPV4.vips[0], count=12, hosts=[fe3]))
