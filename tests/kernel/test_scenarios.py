"""The helper in a real kernel: three frontends and a client on a LAN, real TCP and UDP, for
IPv4 VIPs and for IPv6 ones (a dual-stack VIP file and a member map with each frontend's IPv6
address, as an operator adds IPv6).

Each frontend runs `python -m cgp_ipvs_helper` in its own namespace, driven over stdin/stdout
as CommuniGate Pro drives it. Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_scenarios.py
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from lab.driver import HelperProcess, write_vipfile
from lab.group import TCP, UDP, Group, expand
from lab.lan import Host, ipvsadm
from lab.traffic import LongLived, tcp_ask, udp_ask
from tests.kernel.groups import BOTH, IPV4, ONLY_IPV6, Family, helper_args, member_map

VIPS = list(IPV4.vips)
SOURCES = list(IPV4.sources)
DRAIN = "2"
HELPER = ("-t", "3", "--drain", DRAIN)


def options(group: Group, family: Family, tmp: Path, **kw: tuple[str, ...]) -> tuple[str, ...]:
    """The helpers' options: with IPv6 VIPs a member map giving each frontend's IPv6 address
    (unless `without_ipv6`)."""
    if not family.ipv6:
        return HELPER
    return helper_args(tmp / "members", member_map(group, **kw))


def balancing(group: Group, family: Family, tmp: Path) -> list[HelperProcess]:
    """A helper on every frontend, fe1's the active balancer of all three."""
    helpers = group.start_all(*options(group, family, tmp))
    reply = helpers[0].request(f"ACTIVATE {group.members()}")
    assert reply.endswith(f"OK active vips={len(group.vips)} members=3"), reply
    return helpers


def held(host: Host, dev: str) -> set[str]:
    """Every address on `dev`, both families, as 'addr/len'."""
    return set(host.addresses(dev)) | set(host.addresses6(dev))


def as_held(vips: list[str]) -> set[str]:
    return {f"{v}/128" if ":" in v else f"{v}/32" for v in vips}


def bracketed(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def saved_table(host: Host) -> set[str]:
    """`ipvsadm -Sn` lines of services and real servers by address (not the steering's
    firewall-mark ones: test_outgoing.py)."""
    lines = ipvsadm(host, "-S", "-n").splitlines()
    return {ln.strip() for ln in lines if ln.strip() and " -f " not in ln}


def expected_table(
    vips: list[str], weights: dict[Host, int], without_ipv6: tuple[str, ...] = ()
) -> set[str]:
    """Per VIP a TCP and a UDP service, each with every member of the VIP's family."""
    lines = set()
    for vip in vips:
        six = ":" in vip
        for flag in ("-t", "-u"):
            lines.add(f"-A {flag} {bracketed(vip)}:0 -s wlc -p 15")
            for fe, weight in weights.items():
                if six and fe.name in without_ipv6:
                    continue
                ip = bracketed(fe.ip6) if six else fe.ip
                lines.add(f"-a {flag} {bracketed(vip)}:0 -r {ip}:0 -g -w {weight}")
    return lines


def daemons(host: Host) -> str:
    return ipvsadm(host, "-L", "-n", "--daemon")


@BOTH
def test_start_every_member_is_a_silent_standby(
    group: Group, family: Family, tmp_path: Path
) -> None:
    group.start_all(*options(group, family, tmp_path))
    vips = as_held(group.vips)
    for fe in group.fe:
        assert vips <= held(fe, "lo") and not vips & held(fe, "eth0")
        for scope in ("all", "eth0"):
            assert fe.sysctl(f"net.ipv4.conf.{scope}.arp_ignore") == "1"
            assert fe.sysctl(f"net.ipv4.conf.{scope}.arp_announce") == "2"
        assert fe.sysctl("net.ipv4.vs.backup_only") == "1"
        assert re.search(r"backup sync daemon \(mcast=eth0, syncid=0", daemons(fe))
        assert "master" not in daemons(fe)
        assert saved_table(fe) == set()
    with pytest.raises(OSError):
        tcp_ask(group.client, family.vips[0], TCP, timeout=2)
    assert group.client.neigh(family.vips[0]) is None  # nobody answered ARP or ND for it


@BOTH
def test_activate_balances_tcp_and_udp_over_all_members(
    group: Group, family: Family, tmp_path: Path
) -> None:
    fe1, fe2, fe3 = group.fe
    vip, sources = family.vips[0], family.sources
    h1, _, _ = balancing(group, family, tmp_path)
    assert saved_table(fe1) == expected_table(group.vips, {fe1: 100, fe2: 100, fe3: 100})
    assert as_held(group.vips) <= held(fe1, "eth0")
    assert re.search(r"master sync daemon \(mcast=eth0, syncid=0", daemons(fe1))
    assert "backup sync daemon" in daemons(fe1)  # until the takeover ends (test_handover.py)
    assert group.client.neigh(vip) in (None, fe1.mac)
    for each in {*family.vips, group.vips[-1]}:  # with IPv6, the IPv4 VIP of the file too
        assert tcp_ask(group.client, each, TCP) in ("fe1", "fe2", "fe3")
        assert udp_ask(group.client, each, UDP) in ("fe1", "fe2", "fe3")
    assert group.client.neigh(vip) == fe1.mac
    spread = Counter(tcp_ask(group.client, vip, TCP, src=src) for src in sources[:30])
    assert set(spread) == {"fe1", "fe2", "fe3"} and min(spread.values()) >= 5, spread
    udp = Counter(udp_ask(group.client, vip, UDP, src=src) for src in sources[30:45])
    assert set(udp) == {"fe1", "fe2", "fe3"}, udp
    # persistence: one client address stays on one frontend
    src, other = sources[45], family.vips[1]
    assert len({tcp_ask(group.client, other, TCP, src=src) for _ in range(6)}) == 1
    assert len({udp_ask(group.client, other, UDP, src=src) for _ in range(6)}) == 1
    # the standbys' backup sync daemons learn the connections (sync_version 1 carries IPv6)
    assert fe2.sysctl("net.ipv4.vs.sync_version") == "1"
    with LongLived(group.client, vip, TCP, 4, sources[46:48]):
        deadline = time.monotonic() + 10
        while f"{bracketed(vip)}:25" not in ipvsadm(fe2, "-L", "-n", "-c"):
            assert time.monotonic() < deadline, ipvsadm(fe2, "-L", "-n", "-c")
            time.sleep(0.2)
    status = h1.request("STATUS").split(" ", 1)[1]
    assert status.startswith(f"OK role=active vips={len(group.vips)} "), status


def test_weight_zero_only_balances(group: Group) -> None:
    fe1, fe2, fe3 = group.fe
    h1, _, _ = group.start_all(*HELPER, "-r", "0")
    assert h1.request(f"ACTIVATE {group.members(fe1, fe2, fe3)}").endswith("members=3")
    assert saved_table(fe1) == expected_table(VIPS, {fe1: 0, fe2: 100, fe3: 100})
    spread = Counter(tcp_ask(group.client, VIPS[0], TCP, src=src) for src in SOURCES[:20])
    assert "fe1" not in spread and set(spread) == {"fe2", "fe3"}, spread


@BOTH
def test_planned_failover_keeps_every_connection(
    group: Group, family: Family, tmp_path: Path
) -> None:
    h1, h2, _ = balancing(group, family, tmp_path)
    fe1, fe2, fe3 = group.fe
    # new connections while the old balancer drains, from fresh client addresses
    move = group.switch(h1, h2, fresh=family.sources[12:24], window=float(DRAIN) + 1.5)
    after = group.spread(family.sources[24:30])
    stats = move.stats
    assert set(move.before) == {"fe1", "fe2", "fe3"}, move.summary()
    assert move.old_reply is not None and move.old_reply.endswith("OK standby")
    assert move.new_reply.endswith(f"OK active vips={len(group.vips)} members=3")
    assert stats.broken == [], stats.summary()
    assert stats.max_gap < 1.0, stats.summary()
    # every connection was answered by one frontend only: nothing bounced or got re-scheduled
    assert move.one_server_each, stats.summary()
    assert sum(move.fresh.values()) == 12 and set(move.fresh) <= {"fe1", "fe2", "fe3"}
    assert set(after) <= {"fe1", "fe2", "fe3"}
    assert move.arp_s is not None, "the announcement (ARP or ND) did not reach the client"
    assert group.client.neigh(family.vips[0]) == fe2.mac
    assert saved_table(fe1) == set() and "backup sync daemon" in daemons(fe1)
    assert saved_table(fe2) == expected_table(group.vips, {fe1: 100, fe2: 100, fe3: 100})
    assert _in_packets(fe2) < 4 * sum(sum(c.answers.values()) for c in stats.conns) + 500


def _in_packets(host: Host) -> int:
    out = ipvsadm(host, "-L", "-n", "--stats", "--exact")
    return sum(int(m.group(1)) for m in re.finditer(r"^(?:TCP|UDP)\s+\S+\s+\d+\s+(\d+)", out, re.M))


@BOTH
def test_abrupt_loss_of_the_balancer(group: Group, family: Family, tmp_path: Path) -> None:
    h1, h2, _ = balancing(group, family, tmp_path)
    move = group.crash(h1, h2, window=2.5, broken_after=2.0)
    assert move.new_reply.endswith("members=2"), move.new_reply
    survivors = move.survivors
    assert survivors and all(not c.broken for c in survivors), move.summary()
    assert move.max_gap < 1.0 + move.new_ok_s, move.summary()
    assert group.client.neigh(family.vips[0]) == group.fe[1].mac
    spread = group.spread(family.sources[12:24])
    assert set(spread) == {"fe2", "fe3"}, spread


@ONLY_IPV6
def test_a_member_without_an_ipv6_address_is_left_out_and_said_once(
    group: Group, family: Family, tmp_path: Path
) -> None:
    h1, _, _ = group.start_all(*options(group, family, tmp_path, without_ipv6=("fe3",)))
    fe1, fe2, fe3 = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    weights = {fe1: 100, fe2: 100, fe3: 100}
    assert saved_table(fe1) == expected_table(group.vips, weights, without_ipv6=("fe3",))
    said = [ln for ln in h1.log if fe3.ip in ln and "IPv6" in ln]
    assert len(said) == 1, said
    assert set(group.spread(family.sources[:20])) == {"fe1", "fe2"}
    assert tcp_ask(group.client, group.vips[-1], TCP, src="192.0.2.100") in ("fe1", "fe2", "fe3")


def test_outgoing_from_a_vip_without_a_member_map_reaches_one_member_only(group: Group) -> None:
    """Without steering, every reply to a VIP is scheduled by the active balancer's port-0
    service: persistence sends all replies from the server to one member, so only that
    frontend's connections and exchanges from the VIP are answered (kernel-notes, last part)."""
    h1, _, _ = group.start_all(*HELPER)
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    answered = group.outgoing(VIPS[0], count=12)
    assert sorted(a.tcp for a in answered.values()) == [0, 0, 12], answered
    assert sorted(a.udp for a in answered.values()) == [0, 0, 12], answered


# someone else's service, real server and addresses (on eth0, on lo) per family, and a file of
# 256 VIPs
FOREIGN = {
    "ipv4": ("203.0.113.80:80", "192.0.2.50:80", "203.0.113.9", "203.0.113.10", "198.51.100.0/24"),
    "ipv6": (
        "[2001:db8:99::80]:80",
        "[2001:db8::50]:80",
        "2001:db8:99::9",
        "2001:db8:99::10",
        "2001:db8:10::/120",
    ),
}


@BOTH
def test_restart_after_kill_converges_and_spares_foreign_state(
    group: Group, family: Family, tmp_path: Path
) -> None:
    fe1, fe2 = group.fe[:2]
    service, real, on_eth0, on_lo, block = FOREIGN[family.name]
    ipvsadm(fe1, "-A", "-t", service, "-s", "rr")
    ipvsadm(fe1, "-a", "-t", service, "-r", real, "-g", "-w", "3")
    nodad = ["nodad"] if family.ipv6 else []
    for addr, dev in ((on_eth0, "eth0"), (on_lo, "lo")):
        fe1.run(["ip", "address", "add", *as_held([addr]), "dev", dev, *nodad])
    foreign, lan = saved_table(fe1), {f"{fe1.ip}/24", *([f"{fe1.ip6}/64"] if fe1.ip6 else [])}
    big = write_vipfile(str(tmp_path / "vip256"), [block])
    args = options(group, family, tmp_path)
    h = group.start(fe1, *args, vipfile=big)
    h.wait_started()
    h.send(f"00009 ACTIVATE {group.members()}")
    time.sleep(0.3)
    h.proc.send_signal(signal.SIGKILL)
    h.wait()
    h = group.start(fe1, *args, vipfile=big)
    h.wait_started()
    assert saved_table(fe1) == foreign
    assert held(fe1, "eth0") == lan | as_held([on_eth0])
    assert "master" not in daemons(fe1) and "backup sync daemon" in daemons(fe1)
    assert h.request(f"ACTIVATE {fe1.ip} {fe2.ip}").endswith("OK active vips=256 members=2")
    table = saved_table(fe1) - foreign
    assert len(table) == 256 * 2 * 3
    last = expand([block])[-1]
    peer = bracketed(fe2.ip6) if family.ipv6 else fe2.ip
    assert f"-a -u {bracketed(last)}:0 -r {peer}:0 -g -w 100" in table
    assert foreign <= saved_table(fe1)
    assert len(held(fe1, "eth0")) == len(lan) + 1 + 256
    assert h.request("QUIT", timeout=30).endswith(" OK")
    assert saved_table(fe1) == foreign
    assert as_held([on_lo]) <= held(fe1, "lo")


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
