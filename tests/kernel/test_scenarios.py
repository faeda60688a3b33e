"""The helper in a real kernel: three frontends and a client on a LAN, real TCP and UDP.

Each frontend runs `python -m cgp_ipvs_helper` in its own namespace, driven over stdin/stdout
as CommuniGate Pro drives it. Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_scenarios.py
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from lab.driver import write_vipfile
from lab.group import TCP, UDP, Group
from lab.lan import Host, ipvsadm
from lab.traffic import tcp_ask, udp_ask

VIPS = ["198.51.100.10", "198.51.100.11"]
SOURCES = [f"192.0.2.{n}" for n in range(64, 100)]
DRAIN = "2"
HELPER = ("-t", "3", "--drain", DRAIN)


@pytest.fixture
def group() -> Iterator[Group]:
    prefix = f"g{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with Group(prefix[:8], VIPS, sources=SOURCES, server=True) as g:
        yield g


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
    group.start_all(*HELPER)
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
    h1, _, _ = group.start_all(*HELPER)
    fe1, fe2, fe3 = group.fe
    reply = h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}")
    assert reply.endswith("OK active vips=2 members=3")
    assert saved_table(fe1) == expected_table({fe1.ip: 100, fe2.ip: 100, fe3.ip: 100})
    assert re.search(r"master sync daemon \(mcast=eth0, syncid=0", daemons(fe1))
    assert "backup sync daemon" in daemons(fe1)  # until the takeover ends (test_handover.py)
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
    h1, _, _ = group.start_all(*HELPER, "-r", "0")
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    assert saved_table(fe1) == expected_table({fe1.ip: 0, fe2.ip: 100, fe3.ip: 100})
    spread = Counter(tcp_ask(group.client, VIPS[0], TCP, src=src) for src in SOURCES[:20])
    assert "fe1" not in spread and set(spread) == {"fe2", "fe3"}, spread


def test_planned_failover_keeps_every_connection(group: Group) -> None:
    h1, h2, _ = group.start_all(*HELPER)
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    # new connections while the old balancer drains, from fresh client addresses
    move = group.switch(h1, h2, fresh=SOURCES[12:24], window=float(DRAIN) + 1.5)
    after = group.spread(SOURCES[24:30])
    stats = move.stats
    assert set(move.before) == {"fe1", "fe2", "fe3"}, move.summary()
    assert move.old_reply is not None and move.old_reply.endswith("OK standby")
    assert move.new_reply.endswith("OK active vips=2 members=3")
    assert stats.broken == [], stats.summary()
    assert stats.max_gap < 1.0, stats.summary()
    # every connection was answered by one frontend only: nothing bounced or got re-scheduled
    assert move.one_server_each, stats.summary()
    assert sum(move.fresh.values()) == 12 and set(move.fresh) <= {"fe1", "fe2", "fe3"}
    assert set(after) <= {"fe1", "fe2", "fe3"}
    assert group.client.neigh(VIPS[0]) == fe2.mac
    assert saved_table(fe1) == set() and "backup sync daemon" in daemons(fe1)
    assert saved_table(fe2) == expected_table({fe1.ip: 100, fe2.ip: 100, fe3.ip: 100})
    assert _in_packets(fe2) < 4 * sum(sum(c.answers.values()) for c in stats.conns) + 500


def _in_packets(host: Host) -> int:
    out = ipvsadm(host, "-L", "-n", "--stats", "--exact")
    return sum(int(m.group(1)) for m in re.finditer(r"^(?:TCP|UDP)\s+\S+\s+\d+\s+(\d+)", out, re.M))


def test_abrupt_loss_of_the_balancer(group: Group) -> None:
    h1, h2, _ = group.start_all(*HELPER)
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    move = group.crash(h1, h2, window=2.5, broken_after=2.0)
    assert move.new_reply.endswith("members=2"), move.new_reply
    survivors = move.survivors
    assert survivors and all(not c.broken for c in survivors), move.summary()
    assert move.max_gap < 1.0 + move.new_ok_s, move.summary()
    assert group.client.neigh(VIPS[0]) == fe2.mac
    spread = group.spread(SOURCES[12:24])
    assert set(spread) == {"fe2", "fe3"}, spread


def test_outgoing_from_a_vip_today_reaches_one_member_only(group: Group) -> None:
    """Without steering (issue 9), every reply to a VIP is scheduled by the active balancer's
    port-0 service: persistence sends all replies from the server to one member, so only that
    frontend's connections and exchanges from the VIP are answered (kernel-notes, last part)."""
    h1, _, _ = group.start_all(*HELPER)
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    answered = group.outgoing(VIPS[0], count=12)
    assert sorted(a.tcp for a in answered.values()) == [0, 0, 12], answered
    assert sorted(a.udp for a in answered.values()) == [0, 0, 12], answered


def test_restart_after_kill_converges_and_spares_foreign_state(group: Group, tmp_path) -> None:
    fe1 = group.fe[0]
    ipvsadm(fe1, "-A", "-t", "203.0.113.80:80", "-s", "rr")
    ipvsadm(fe1, "-a", "-t", "203.0.113.80:80", "-r", "192.0.2.50", "-g", "-w", "3")
    fe1.add_address("203.0.113.9", dev="eth0")
    fe1.add_address("203.0.113.10", dev="lo")
    foreign = saved_table(fe1)
    big = write_vipfile(str(tmp_path / "vip24"), ["198.51.100.0/24"])
    h = group.start(fe1, "-t", "3", vipfile=big)
    h.wait_started()
    h.send(f"00009 ACTIVATE {fe1.ip} 192.0.2.12 192.0.2.13")
    time.sleep(0.3)
    h.proc.send_signal(signal.SIGKILL)
    h.wait()
    h = group.start(fe1, "-t", "3", vipfile=big)
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
    h1 = group.start(fe1, *HELPER)
    h2 = group.start(fe2, *HELPER, "--drain", "0.5")
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
    h1 = group.start(fe1, *HELPER)
    h1.wait_started()
    assert h1.request(f"ACTIVATE {fe1.ip} {fe2.ip}").endswith("members=2")
    answers = {tcp_ask(group.client, VIPS[0], TCP, src=s) for s in SOURCES[:12]}
    assert answers == {"fe1", "fe2"}


def test_sigterm_is_quit_and_sighup_reloads(group: Group, tmp_path) -> None:
    fe1 = group.fe[0]
    h = group.start(fe1, *HELPER, "--drain", "0.3")
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
        f"OK role=active vips=2 members={fe1.ip} persistence=15 syncid=0 weight=100 conflicts=0"
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
    missing = group.start(fe1, *HELPER, "-i", "eth9")
    missing.wait_started()
    # an -i that does not exist (yet): refused before anything is changed
    assert missing.request(f"ACTIVATE {fe1.ip}").endswith(" ERROR -i eth9: no such interface")
    assert not any(c.startswith("ipvsadm -A") for c in missing.commands())
    assert missing.request("QUIT").endswith(" OK")
    h = group.start(fe1, *HELPER)
    h.wait_started()
    fe1.link_down()  # the interface is there, the kernel refuses to send on it
    try:
        reply = h.request(f"ACTIVATE {fe1.ip}")
    finally:
        fe1.link_up()
    assert " ERROR " in reply, reply
    failed = [line for line in h.log if line.startswith("* FAILED ")]
    assert failed and failed[0][len("* FAILED ") :] in reply, (failed, reply)  # with its reason
    assert any(line.endswith(": Network is down") for line in failed), failed
    assert h.request("STATUS").split()[1] == "OK"
    assert h.request("QUIT").endswith(" OK")
