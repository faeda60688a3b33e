"""The helper in a real kernel: three frontends and a client on a LAN, real TCP and UDP.

Each frontend runs `python -m cgp_ipvs_helper` in its own namespace, driven over stdin/stdout
as CommuniGate Pro drives it. Run inside user-mode Linux:
    python -m tests.lab.uml -- python -m pytest tests/kernel/test_scenarios.py
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.lab.driver import HelperProcess, write_vipfile
from tests.lab.net import EchoService, Host, Lan, LongLived, ipvsadm, tcp_ask, udp_ask

VIPS = ["198.51.100.10", "198.51.100.11"]
SOURCES = [f"192.0.2.{n}" for n in range(64, 100)]
TCP, UDP = 25, 5060
DRAIN = "2"


class Group:
    """A LAN with fe1..fe3 (echo servers on the VIPs) and a client; helpers started on demand."""

    def __init__(self, lan: Lan, vipfile: str) -> None:
        self.lan, self.vipfile = lan, vipfile
        self.fe = [lan.add_host(f"fe{i}", f"192.0.2.{10 + i}") for i in (1, 2, 3)]
        self.client = lan.add_host("client", "192.0.2.100", extra_ips=SOURCES)
        self.helpers: dict[str, HelperProcess] = {}

    def start(self, fe: Host, *args: str) -> HelperProcess:
        h = HelperProcess(fe, self.vipfile, "-t", "3", "--drain", DRAIN, *args)
        self.helpers[fe.name] = h
        return h

    def start_all(self, *args: str) -> list[HelperProcess]:
        helpers = [self.start(fe, *args) for fe in self.fe]
        for h in helpers:
            h.wait_started()
        return helpers

    def members(self, *hosts: Host) -> str:
        return " ".join(h.ip for h in hosts)

    def close(self) -> None:
        for h in self.helpers.values():
            h.kill()


@pytest.fixture
def group() -> Iterator[Group]:
    prefix = f"g{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with tempfile.TemporaryDirectory() as tmp, Lan(prefix[:8]) as lan:
        g = Group(lan, write_vipfile(f"{tmp}/vipaddrs", VIPS))
        echo = EchoService(g.fe, VIPS, tcp_ports=[TCP], udp_ports=[UDP]).start()
        try:
            yield g
        finally:
            g.close()
            echo.stop()


def saved_table(host: Host) -> set[str]:
    return {line.strip() for line in ipvsadm(host, "-S", "-n").splitlines() if line.strip()}


def expected_table(members: dict[str, int], persistence: int = 15) -> set[str]:
    lines = set()
    for vip in VIPS:
        for flag in ("-t", "-u"):
            lines.add(f"-A {flag} {vip}:0 -s wlc -p {persistence}")
            for ip, weight in members.items():
                lines.add(f"-a {flag} {vip}:0 -r {ip}:0 -g -w {weight}")
    return lines


def daemons(host: Host) -> str:
    return ipvsadm(host, "-L", "-n", "--daemon")


def test_start_every_member_is_a_silent_standby(group: Group) -> None:
    group.start_all()
    for fe in group.fe:
        assert {f"{v}/32" for v in VIPS} <= set(fe.addresses("lo"))
        assert not set(fe.addresses("eth0")) & {f"{v}/32" for v in VIPS}
        for scope in ("all", "eth0"):
            assert fe.sysctl(f"net.ipv4.conf.{scope}.arp_ignore") == "1"
            assert fe.sysctl(f"net.ipv4.conf.{scope}.arp_announce") == "2"
        assert fe.sysctl("net.ipv4.vs.backup_only") == "1"
        assert re.search(r"backup sync daemon \(mcast=eth0, syncid=0", daemons(fe))
        assert "master" not in daemons(fe)
        assert saved_table(fe) == set()
    with pytest.raises(OSError):
        tcp_ask(group.client, VIPS[0], TCP, timeout=2)
    assert group.client.neigh(VIPS[0]) is None


def test_activate_balances_tcp_and_udp_over_all_members(group: Group) -> None:
    h1, _, _ = group.start_all()
    fe1, fe2, fe3 = group.fe
    reply = h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}")
    assert reply.endswith("OK active vips=2 members=3")
    assert saved_table(fe1) == expected_table({fe1.ip: 100, fe2.ip: 100, fe3.ip: 100})
    assert re.search(r"master sync daemon \(mcast=eth0, syncid=0", daemons(fe1))
    assert "backup sync daemon" not in daemons(fe1)
    assert group.client.neigh(VIPS[0]) in (None, fe1.mac)
    for vip in VIPS:
        assert tcp_ask(group.client, vip, TCP) in ("fe1", "fe2", "fe3")
        assert udp_ask(group.client, vip, UDP) in ("fe1", "fe2", "fe3")
    assert group.client.neigh(VIPS[0]) == fe1.mac
    spread = Counter(tcp_ask(group.client, VIPS[0], TCP, src=src) for src in SOURCES[:30])
    assert set(spread) == {"fe1", "fe2", "fe3"} and min(spread.values()) >= 5, spread
    # persistence: one client address stays on one frontend
    src = SOURCES[30]
    assert len({tcp_ask(group.client, VIPS[1], TCP, src=src) for _ in range(6)}) == 1
    assert len({udp_ask(group.client, VIPS[1], UDP, src=src) for _ in range(6)}) == 1


def test_weight_zero_only_balances(group: Group) -> None:
    fe1, fe2, fe3 = group.fe
    h1, _, _ = group.start_all("-r", "0")
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    assert saved_table(fe1) == expected_table({fe1.ip: 0, fe2.ip: 100, fe3.ip: 100})
    spread = Counter(tcp_ask(group.client, VIPS[0], TCP, src=src) for src in SOURCES[:20])
    assert "fe1" not in spread and set(spread) == {"fe2", "fe3"}, spread


def _sync_settle() -> None:
    # the master sync daemon sends its buffer about every 2 s
    time.sleep(3.0)


def test_planned_failover_keeps_every_connection(group: Group) -> None:
    h1, h2, _ = group.start_all()
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    with LongLived(group.client, VIPS[0], TCP, count=12, sources=SOURCES[:12]) as ll:
        assert set(ll.snapshot().by_frontend) == {"fe1", "fe2", "fe3"}
        _sync_settle()
        h1.send("00100 DEACTIVATE")
        h2.send(f"00100 ACTIVATE {group.members(fe1, fe2, fe3)}")
        assert h1.wait_response("00100").endswith("OK standby")
        assert h2.wait_response("00100").endswith("OK active vips=2 members=3")
        # new connections while the old balancer drains, from fresh client addresses
        fresh = [tcp_ask(group.client, VIPS[0], TCP, src=s) for s in SOURCES[12:24]]
        time.sleep(float(DRAIN) + 1.5)
        after = [tcp_ask(group.client, VIPS[0], TCP, src=s) for s in SOURCES[24:30]]
        stats = ll.stop()
    assert stats.broken == [], stats.summary()
    assert stats.max_gap < 1.0, stats.summary()
    # every connection was answered by one frontend only: nothing bounced or got re-scheduled
    assert all(set(c.answers) == {c.frontend} for c in stats.conns), stats.summary()
    assert set(fresh) <= {"fe1", "fe2", "fe3"} and set(after) <= {"fe1", "fe2", "fe3"}
    assert group.client.neigh(VIPS[0]) == fe2.mac
    assert saved_table(fe1) == set() and "backup sync daemon" in daemons(fe1)
    assert saved_table(fe2) == expected_table({fe1.ip: 100, fe2.ip: 100, fe3.ip: 100})
    assert _in_packets(fe2) < 4 * sum(sum(c.answers.values()) for c in stats.conns) + 500


def _in_packets(host: Host) -> int:
    out = ipvsadm(host, "-L", "-n", "--stats", "--exact")
    return sum(int(m.group(1)) for m in re.finditer(r"^(?:TCP|UDP)\s+\S+\s+\d+\s+(\d+)", out, re.M))


def test_abrupt_loss_of_the_balancer(group: Group) -> None:
    h1, h2, _ = group.start_all()
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    with LongLived(
        group.client, VIPS[0], TCP, count=12, sources=SOURCES[:12], broken_after=2.0
    ) as ll:
        _sync_settle()
        fe1.link_down()
        h1.proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        assert h2.request(f"ACTIVATE {group.members(fe2, fe3)}").endswith("members=2")
        activated = time.monotonic() - t0
        time.sleep(2.5)
        stats = ll.stop()
    survivors = [c for c in stats.conns if c.frontend != "fe1"]
    assert survivors and all(not c.broken for c in survivors), stats.summary()
    assert max(c.max_gap for c in survivors) < 1.0 + activated, stats.summary()
    assert group.client.neigh(VIPS[0]) == fe2.mac
    spread = Counter(tcp_ask(group.client, VIPS[0], TCP, src=s) for s in SOURCES[12:24])
    assert set(spread) == {"fe2", "fe3"}, spread


def test_restart_after_kill_converges_and_spares_foreign_state(group: Group, tmp_path) -> None:
    fe1 = group.fe[0]
    ipvsadm(fe1, "-A", "-t", "203.0.113.80:80", "-s", "rr")
    ipvsadm(fe1, "-a", "-t", "203.0.113.80:80", "-r", "192.0.2.50", "-g", "-w", "3")
    fe1.add_address("203.0.113.9", dev="eth0")
    fe1.add_address("203.0.113.10", dev="lo")
    foreign = saved_table(fe1)
    big = write_vipfile(str(tmp_path / "vip24"), ["198.51.100.0/24"])
    h = HelperProcess(fe1, big, "-t", "3")
    h.wait_started()
    h.send(f"00009 ACTIVATE {fe1.ip} 192.0.2.12 192.0.2.13")
    time.sleep(0.3)
    h.proc.send_signal(signal.SIGKILL)
    h.wait()
    h = HelperProcess(fe1, big, "-t", "3")
    group.helpers["fe1"] = h
    h.wait_started()
    assert saved_table(fe1) == foreign
    assert set(fe1.addresses("eth0")) == {f"{fe1.ip}/24", "203.0.113.9/32"}
    assert "master" not in daemons(fe1) and "backup sync daemon" in daemons(fe1)
    assert h.request(f"ACTIVATE {fe1.ip} 192.0.2.12").endswith("OK active vips=256 members=2")
    table = saved_table(fe1) - foreign
    assert len(table) == 256 * 2 * 3
    assert "-a -u 198.51.100.255:0 -r 192.0.2.12:0 -g -w 100" in table
    assert foreign <= saved_table(fe1)
    assert len(fe1.addresses("eth0")) == 2 + 256
    assert h.request("QUIT", timeout=30).endswith(" OK")
    assert saved_table(fe1) == foreign
    assert "203.0.113.10/32" in fe1.addresses("lo")


def test_quit_and_end_of_input_leave_a_clean_standby(group: Group) -> None:
    fe1, fe2, _ = group.fe
    h1 = group.start(fe1)
    h2 = group.start(fe2, "--drain", "0.5")
    h1.wait_started()
    h2.wait_started()
    t0 = time.monotonic()
    assert h1.request("QUIT").endswith(" OK")
    assert h1.wait(5) == 0 and time.monotonic() - t0 < 1.0
    assert daemons(fe1).strip() == "" and saved_table(fe1) == set()
    assert {f"{v}/32" for v in VIPS} <= set(fe1.addresses("lo"))
    assert h2.request(f"ACTIVATE {fe2.ip} {fe1.ip}").endswith("members=2")
    t0 = time.monotonic()
    h2.close_stdin()
    assert h2.wait(10) == 0 and time.monotonic() - t0 < 0.5 + 1.0
    assert saved_table(fe2) == set() and daemons(fe2).strip() == ""
    assert not set(fe2.addresses("eth0")) & {f"{v}/32" for v in VIPS}
    assert {f"{v}/32" for v in VIPS} <= set(fe2.addresses("lo"))
    assert fe2.sysctl("net.ipv4.conf.eth0.arp_ignore") == "1"
    # still a working real server: fe1 balances to it
    h1 = group.start(fe1)
    h1.wait_started()
    assert h1.request(f"ACTIVATE {fe1.ip} {fe2.ip}").endswith("members=2")
    answers = {tcp_ask(group.client, VIPS[0], TCP, src=s) for s in SOURCES[:12]}
    assert answers == {"fe1", "fe2"}


def test_sigterm_is_quit_and_sighup_reloads(group: Group, tmp_path) -> None:
    fe1 = group.fe[0]
    h = group.start(fe1, "--drain", "0.3")
    h.wait_started()
    assert h.request(f"ACTIVATE {fe1.ip}").endswith("members=1")
    write_vipfile(group.vipfile, [VIPS[1], "198.51.100.12"])
    h.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "198.51.100.12/32" not in fe1.addresses("eth0") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(fe1.addresses("eth0")) == {f"{fe1.ip}/24", f"{VIPS[1]}/32", "198.51.100.12/32"}
    assert f"{VIPS[0]}/32" not in fe1.addresses("lo")
    assert h.request("STATUS").endswith(
        f"OK role=active vips=2 members={fe1.ip} persistence=15 syncid=0 weight=100"
    )
    write_vipfile(group.vipfile, ["198.51.100.0/16"])
    h.proc.send_signal(signal.SIGHUP)
    assert h.request("STATUS").split()[3] == "vips=2"
    assert any("mask /16 is below /24" in line for line in h.log)
    h.proc.send_signal(signal.SIGTERM)
    assert h.wait(10) == 0
    assert saved_table(fe1) == set() and daemons(fe1).strip() == ""


def test_kernel_errors_are_answered_and_the_helper_stays(group: Group) -> None:
    fe1 = group.fe[0]
    h = group.start(fe1, "-i", "eth9")
    h.wait_started()
    reply = h.request(f"ACTIVATE {fe1.ip}")
    assert " ERROR " in reply and "No such device" in reply, reply
    assert any(line.startswith("* FAILED ") for line in h.log)
    assert h.request("STATUS").split()[1] == "OK"
    assert h.request("QUIT").endswith(" OK")
