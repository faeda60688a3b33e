"""A broken member map degrades the group, never silences it, in a real kernel: three frontends
start with a broken map; the elected one balances incoming TCP and UDP over every member, the
connections the frontends open from a VIP fare as without a map, and the log and STATUS say
why; the file fixed and SIGHUP sent, replies are steered without a switch. Every kind of mistake
is balanced through with nothing steered. Run inside user-mode Linux (lab.uml)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.group import TCP, UDP, Group
from lab.lan import Host, ipvsadm
from lab.traffic import tcp_ask, udp_ask

VIPS = ("198.51.100.10", "198.51.100.11")
SOURCES = tuple(f"192.0.2.{n}" for n in range(64, 100))
GOOD = "192.0.2.11 50000-54999\n192.0.2.12 55000-59999\n192.0.2.13 60000-64999\n"
OVERLAP = b"192.0.2.11 50000-54999\n192.0.2.12 54000-59999\n192.0.2.13 60000-64999\n"
NOT_STEERED = "balancing goes on without the member map: replies to outgoing connections from " \
    "VIPs are not steered until it is fixed (then send SIGHUP)"  # fmt: skip
PORT_RANGE = "net.ipv4.ip_local_port_range"


@pytest.fixture
def group() -> Iterator[Group]:
    prefix = f"m{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with Group(prefix[:8], VIPS, SOURCES, server=True) as g:
        yield g


def args(path: Path) -> tuple[str, ...]:
    return ("-t", "3", "--drain", "2", "--member-map", str(path))


def steering(host: Host) -> tuple[set[str], str]:
    """The steering on `host`: its firewall-mark services and its ingress tc filters."""
    fwmark = {line for line in ipvsadm(host, "-S", "-n").splitlines() if " -f " in line}
    return fwmark, host.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout


def said(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def test_three_frontends_balance_through_a_broken_map_and_steer_once_it_is_fixed(
    group: Group, tmp_path: Path
) -> None:
    path = tmp_path / "members"
    path.write_bytes(OVERLAP)
    ranges = {fe.name: fe.sysctl(PORT_RANGE) for fe in group.fe}
    helpers = group.start_all(*args(path))
    h1 = helpers[0]
    error = f"* ERROR {path}:2: '192.0.2.12 54000-59999': range 54000-59999 overlaps 50000-54999"
    for h in helpers:
        assert said(h.log, error) == 1 and said(h.log, NOT_STEERED) == 1, h.log
    assert h1.request(f"ACTIVATE {group.members()}").endswith("OK active vips=2 members=3")
    status = h1.request("STATUS")
    assert status.endswith(" conflicts=0 map=error"), status
    for fe in group.fe:
        assert steering(fe) == (set(), "") and fe.sysctl(PORT_RANGE) == ranges[fe.name]
    # incoming: TCP and UDP spread over every member
    tcp = Counter(tcp_ask(group.client, VIPS[0], TCP, src=src) for src in SOURCES[:30])
    udp = Counter(udp_ask(group.client, VIPS[1], UDP, src=src) for src in SOURCES[:30])
    for spread in (tcp, udp):
        assert set(spread) == {"fe1", "fe2", "fe3"} and min(spread.values()) >= 5, spread
    # outgoing from a VIP, as without a map: every reply goes where the server's persistence
    # entry points, so only that member's are answered: at most 12 of 36 per protocol
    unsteered = group.outgoing(VIPS[0], count=12)
    assert sum(a.tcp for a in unsteered.values()) <= 12, unsteered
    assert sum(a.udp for a in unsteered.values()) <= 12, unsteered
    # the refresh (-t 3, no request since) says it again
    deadline = time.monotonic() + 30
    while said(h1.log, NOT_STEERED) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert said(h1.log, error) >= 2, h1.log[-10:]
    # fixed, SIGHUP on every frontend: steering on, no DEACTIVATE or ACTIVATE sent
    path.write_text(GOOD)
    for h in helpers:
        assert h.reload().endswith(f"{path}: 3 port ranges"), h.log[-5:]
    assert h1.request("STATUS").endswith(" conflicts=0"), h1.log[-5:]
    deadline = time.monotonic() + 5  # each owner's MAC resolved (a range is dropped till then)
    while "action drop" in steering(group.fe[0])[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    fwmark, filters = steering(group.fe[0])
    assert len(fwmark) == 2, fwmark  # the balancer's own range: its service, itself in it
    assert filters.count("Egress Redirect") == 4 and "action drop" not in filters, filters
    for fe, first in zip(group.fe, ("50000", "55000", "60000")):
        assert fe.sysctl(PORT_RANGE).split()[0] == first
    for vip in VIPS:
        answered = group.outgoing(vip, count=12)
        assert all(a.complete for a in answered.values()), answered  # 72 of 72 per VIP
    spread = Counter(tcp_ask(group.client, VIPS[1], TCP, src=src) for src in SOURCES[:30])
    assert set(spread) == {"fe1", "fe2", "fe3"} and min(spread.values()) >= 5, spread


BAD = {  # a map with each kind of mistake: what its error says
    b"192.0.2.11 1000-2000\n": ":1: '192.0.2.11 1000-2000': range 1000-2000 starts below 1024",
    b"192.0.2.11 54999-50000\n": ":1: '192.0.2.11 54999-50000': range 54999-50000: first port",
    b"192.0.2.11 5000-6000\n": "range 5000-6000 holds service port 5060",
    b"192.0.2.11 50000-54999\n192.0.2.11 55000-59999\n": ":2: '192.0.2.11 55000-59999': "
    "192.0.2.11 is already on line 1",
    b"198.51.100.10 50000-54999\n": "198.51.100.10 is a VIP",
    b"192.0.2.11 50000-54999 fe80::11\n": "fe80::11: not a unicast address: a link-local",
    b"192.0.2.11\x00 50000-54999\n": ":1: '192.0.2.11\\x00 50000-54999': '192.0.2.11\\x00' is",
    b"# caf\xe9\n192.0.2.11 50000-5499\xff\n": ":2: '192.0.2.11 50000-5499\\xff': '50000-5499",
}


def test_every_kind_of_bad_map_is_balanced_through_with_nothing_steered(
    group: Group, tmp_path: Path
) -> None:
    fe1 = group.fe[0]
    before = fe1.sysctl(PORT_RANGE)
    path = tmp_path / "members"
    for text, reason in BAD.items():
        path.write_bytes(text)
        h = group.start(fe1, *args(path))
        h.wait_started()
        assert any(line.startswith(f"* ERROR {path}") and reason in line for line in h.log), h.log
        assert h.request(f"ACTIVATE {fe1.ip}").endswith("OK active vips=2 members=1")
        assert tcp_ask(group.client, VIPS[0], TCP) == "fe1"
        assert steering(fe1) == (set(), "") and fe1.sysctl(PORT_RANGE) == before
        assert h.request("QUIT", timeout=30).endswith(" OK")
        h.wait()
