"""IPv6 VIPs in a real kernel: the operator's case of issue 11, end to end.

A dual-stack group: the VIP file holds `2001:db8:10::/124` beside an IPv4 VIP, the member map
gives each frontend's IPv6 address (third column), the helpers are started as CGP starts them,
and an IPv6 client (many source addresses in 2001:db8::/64) is balanced over all members and
keeps its connections through a planned switch and a crash. Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_ipv6_scenarios.py
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.group import TCP, UDP, Group
from lab.lan import Host, ipvsadm
from lab.traffic import LongLived, tcp_ask, udp_ask

ENTRIES = ["2001:db8:10::/124", "198.51.100.10"]  # the IPv6 VIPs first: moves use the first
VIP6, VIP4 = "2001:db8:10::", "198.51.100.10"
SOURCES = [f"2001:db8::1:{n}" for n in range(1, 49)]
DRAIN = "2"


@pytest.fixture
def group() -> Iterator[Group]:
    prefix = f"v{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with Group(prefix[:8], ENTRIES, sources=SOURCES, ipv6=True) as g:
        yield g


def member_map(g: Group, tmp: Path, without_ipv6: tuple[str, ...] = ()) -> str:
    """The member map: every frontend's LAN address, port range and IPv6 address."""
    path = tmp / "cgp-ipvs-members"
    lines = []
    for i, fe in enumerate(g.fe):
        ip6 = "" if fe.name in without_ipv6 else f" {fe.ip6}"
        lines.append(f"{fe.ip} {50000 + i * 5000}-{54999 + i * 5000}{ip6}\n")
    path.write_text("".join(lines))
    return str(path)


def helper_args(g: Group, tmp: Path, **kw: tuple[str, ...]) -> tuple[str, ...]:
    return ("-t", "3", "--drain", DRAIN, "--member-map", member_map(g, tmp, **kw))


def table6(host: Host) -> set[str]:
    """`ipvsadm -Sn` lines of IPv6 services and their real servers (not the steering's
    firewall-mark services: tests/kernel/test_outgoing.py)."""
    lines = ipvsadm(host, "-S", "-n").splitlines()
    return {ln.strip() for ln in lines if "[" in ln and " -f " not in ln}


def expected6(weights: dict[str, int]) -> set[str]:
    lines = set()
    for n in range(16):
        vip = f"2001:db8:10::{n:x}" if n else VIP6
        for flag in ("-t", "-u"):
            lines.add(f"-A {flag} [{vip}]:0 -s wlc -p 15")
            lines |= {f"-a {flag} [{vip}]:0 -r [{ip}]:0 -g -w {w}" for ip, w in weights.items()}
    return lines


def test_every_member_holds_the_ipv6_vips_on_lo_and_stays_silent(
    group: Group, tmp_path: Path
) -> None:
    group.start_all(*helper_args(group, tmp_path))
    for fe in group.fe:
        on_lo = fe.addresses6("lo")
        assert len(on_lo) == 16 and f"{VIP6}/128" in on_lo
        assert not [a for a in fe.addresses6("eth0") if a.startswith("2001:db8:10:")]
        assert table6(fe) == set()
    with pytest.raises(OSError):
        tcp_ask(group.client, VIP6, TCP, timeout=2)
    assert group.client.neigh(VIP6) is None  # nobody answered the neighbour solicitation


def test_an_ipv6_client_is_balanced_over_all_members_with_persistence(
    group: Group, tmp_path: Path
) -> None:
    h1, _, _ = group.start_all(*helper_args(group, tmp_path))
    fe1, fe2, fe3 = group.fe
    reply = h1.request(f"ACTIVATE {group.members()}")
    assert reply.endswith("OK active vips=17 members=3"), reply
    assert table6(fe1) == expected6({fe1.ip6: 100, fe2.ip6: 100, fe3.ip6: 100})
    steering6 = [ln for ln in ipvsadm(fe1, "-S", "-n").splitlines() if " -f " in ln and " -6" in ln]
    assert len(steering6) == 2, steering6  # fe1's own range: its IPv6 service, fe1 in it
    assert f"{VIP6}/128" in fe1.addresses6("eth0")
    assert tcp_ask(group.client, VIP6, TCP) in ("fe1", "fe2", "fe3")
    assert group.client.neigh(VIP6) == fe1.mac
    spread = Counter(tcp_ask(group.client, VIP6, TCP, src=src) for src in SOURCES[:30])
    assert set(spread) == {"fe1", "fe2", "fe3"} and min(spread.values()) >= 5, spread
    udp = Counter(udp_ask(group.client, VIP6, UDP, src=src) for src in SOURCES[30:45])
    assert set(udp) == {"fe1", "fe2", "fe3"}, udp
    # persistence: one client address stays on one frontend (per /128)
    src = SOURCES[45]
    assert len({tcp_ask(group.client, "2001:db8:10::5", TCP, src=src) for _ in range(6)}) == 1
    assert len({udp_ask(group.client, "2001:db8:10::5", UDP, src=src) for _ in range(6)}) == 1
    # the standbys' backup sync daemons learn the IPv6 connections (sync_version 1 carries
    # IPv6; version 0 is IPv4 only)
    assert fe2.sysctl("net.ipv4.vs.sync_version") == "1"
    with LongLived(group.client, VIP6, TCP, 4, SOURCES[46:48]):
        deadline = time.monotonic() + 10
        while f"[{VIP6}]:25" not in ipvsadm(fe2, "-L", "-n", "-c"):
            assert time.monotonic() < deadline, ipvsadm(fe2, "-L", "-n", "-c")
            time.sleep(0.2)
    # the IPv4 VIP of the same file is balanced as before
    assert tcp_ask(group.client, VIP4, TCP) in ("fe1", "fe2", "fe3")
    assert h1.request("STATUS").split(" ", 1)[1].startswith("OK role=active vips=17")


def test_a_planned_switch_keeps_every_ipv6_connection(group: Group, tmp_path: Path) -> None:
    h1, h2, _ = group.start_all(*helper_args(group, tmp_path))
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    move = group.switch(h1, h2, fresh=SOURCES[12:24], window=float(DRAIN) + 1.5)
    stats = move.stats
    assert set(move.before) == {"fe1", "fe2", "fe3"}, move.summary()
    assert move.new_reply.endswith("OK active vips=17 members=3")
    assert stats.broken == [], stats.summary()
    assert stats.max_gap < 1.0, stats.summary()
    assert move.one_server_each, stats.summary()
    assert sum(move.fresh.values()) == 12 and set(move.fresh) <= {"fe1", "fe2", "fe3"}
    assert move.arp_s is not None, "the neighbour advertisement did not reach the client"
    assert group.client.neigh(VIP6) == fe2.mac
    assert table6(fe1) == set()
    assert table6(fe2) == expected6({fe1.ip6: 100, fe2.ip6: 100, fe3.ip6: 100})


def test_a_crash_of_the_balancer_keeps_the_ipv6_connections_of_the_others(
    group: Group, tmp_path: Path
) -> None:
    h1, h2, _ = group.start_all(*helper_args(group, tmp_path))
    fe2 = group.fe[1]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    move = group.crash(h1, h2, window=2.5, broken_after=2.0)
    assert move.new_reply.endswith("members=2"), move.new_reply
    survivors = move.survivors
    assert survivors and all(not c.broken for c in survivors), move.summary()
    assert move.max_gap < 1.0 + move.new_ok_s, move.summary()
    assert group.client.neigh(VIP6) == fe2.mac
    spread = Counter(tcp_ask(group.client, VIP6, TCP, src=src) for src in SOURCES[24:36])
    assert set(spread) == {"fe2", "fe3"}, spread


def test_a_member_without_an_ipv6_address_is_left_out_and_said_once(
    group: Group, tmp_path: Path
) -> None:
    h1, _, _ = group.start_all(*helper_args(group, tmp_path, without_ipv6=("fe3",)))
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert table6(fe1) == expected6({fe1.ip6: 100, fe2.ip6: 100})
    said = [ln for ln in h1.log if fe3.ip in ln and "IPv6" in ln]
    assert len(said) == 1, said
    spread = Counter(tcp_ask(group.client, VIP6, TCP, src=src) for src in SOURCES[:20])
    assert set(spread) == {"fe1", "fe2"}, spread
    assert tcp_ask(group.client, VIP4, TCP, src="192.0.2.100") in ("fe1", "fe2", "fe3")


def test_restart_after_kill_spares_foreign_ipv6_state(group: Group, tmp_path: Path) -> None:
    fe1 = group.fe[0]
    ipvsadm(fe1, "-A", "-t", "[2001:db8:99::80]:80", "-s", "rr")
    ipvsadm(fe1, "-a", "-t", "[2001:db8:99::80]:80", "-r", "[2001:db8::50]:80", "-g", "-w", "3")
    fe1.run(["ip", "-6", "address", "add", "2001:db8:99::9/128", "dev", "eth0", "nodad"])
    fe1.run(["ip", "-6", "address", "add", "2001:db8:99::10/128", "dev", "lo", "nodad"])
    foreign = table6(fe1)
    args = helper_args(group, tmp_path)
    h = group.start(fe1, *args)
    h.wait_started()
    h.send(f"00009 ACTIVATE {group.members()}")
    time.sleep(0.5)
    h.proc.send_signal(signal.SIGKILL)
    h.wait()
    assert f"{VIP6}/128" in fe1.addresses6("eth0")  # what the dead run left behind
    h = group.start(fe1, *args)
    h.wait_started()
    assert table6(fe1) == foreign
    assert sorted(fe1.addresses6("eth0")) == sorted([f"{fe1.ip6}/64", "2001:db8:99::9/128"])
    assert "2001:db8:99::10/128" in fe1.addresses6("lo")
    assert h.request("QUIT", timeout=30).endswith(" OK")
    assert table6(fe1) == foreign
    assert re.search(r"2001:db8:99::10/128", " ".join(fe1.addresses6("lo")))
