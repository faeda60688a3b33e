"""What -m prints is what real mode does: replayed by a shell, it builds the same kernel state.

Three identical single-frontend LANs: one helper in real mode, one in -m mode, and a third
namespace where a shell runs the commands the -m helper printed. Run inside user-mode Linux.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.core.session import HANDOVER_S
from lab.driver import HelperProcess, write_vipfile
from lab.lan import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.20/30"]
MEMBERS = "192.0.2.11 50000-54999\n192.0.2.12 55000-59999\n192.0.2.14 60000-64999\n"
SCRIPT = ["INTF 1", "ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13", "ACTIVATE 192.0.2.11 192.0.2.13"]


def frontend(lan: Lan, members: tuple[str, ...] = ("192.0.2.12", "192.0.2.14")) -> Host:
    """The frontend under test, with the other members on its LAN (each LAN's hosts get the
    same MACs) and in its neighbour table: the filters name their MACs, read by the real
    helper as by the -m one at its start."""
    fe = lan.add_host("fe", "192.0.2.11")
    others = [lan.add_host(f"m{ip.rsplit('.', 1)[1]}", ip) for ip in members]
    for ip in [m.ip for m in others] + [m.ip6 for m in others if m.ip6]:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with fe.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (ip, 9))
        deadline = time.monotonic() + 5
        while fe.neigh(ip) is None:
            assert time.monotonic() < deadline, f"{ip} not resolved"
            time.sleep(0.01)
    return fe


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    with Lan("fidreal") as a, Lan("fiddry") as b, Lan("fidsh") as c:
        yield {"real": frontend(a), "dry": frontend(b), "shell": c.add_host("fe", "192.0.2.11")}


def state(host: Host) -> dict[str, object]:
    sysctls = {}
    for name in (
        "conf.all.arp_ignore",
        "conf.eth0.arp_ignore",
        "conf.all.arp_announce",
        "conf.eth0.arp_announce",
        "vs.backup_only",
        "vs.expire_nodest_conn",
        "ip_local_port_range",
    ):
        sysctls[name] = host.sysctl(f"net.ipv4.{name}")
    return {
        "ipvs": sorted(ipvsadm(host, "-S", "-n").splitlines()),
        "daemons": ipvsadm(host, "-L", "-n", "--daemon"),
        "lo": sorted(host.addresses("lo")),
        "eth0": sorted(host.addresses("eth0")),
        "sysctls": sysctls,
        "tc": host.run(["tc", "-d", "filter", "show", "dev", "eth0", "ingress"]).stdout,
        "egress": host.run(["tc", "-d", "filter", "show", "dev", "eth0", "egress"]).stdout,
        "qdisc": host.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout,
    }


def taken_over(helper: HelperProcess) -> None:
    """Wait for the end of the takeover the script's first ACTIVATE started."""
    deadline = time.monotonic() + HANDOVER_S + 10
    while not any(line.startswith("* takeover over") for line in helper.log):
        assert time.monotonic() < deadline, helper.log[-10:]
        helper.lines(0.5)


def run_script(helper: HelperProcess) -> list[str]:
    return [helper.request(line) for line in SCRIPT]


def replayed(
    hosts: dict[str, Host], tmp_path, entries: list[str], member_map: str, read=state
) -> list[str]:
    """The script run by a real-mode and a -m helper (same answers, same commands), and the
    -m commands replayed by a shell: the shell's kernel state must equal real mode's. Returns
    the commands."""
    vipfile = write_vipfile(str(tmp_path / "vipaddrs"), entries)
    members = tmp_path / "cgp-ipvs-members"
    members.write_text(member_map)
    args = ("-i", "eth0", "-f", vipfile, "--member-map", str(members))
    real = HelperProcess(hosts["real"], *args)
    dry = HelperProcess(hosts["dry"], *args, "-m")
    try:
        assert run_script(real) == run_script(dry)
        for helper in (real, dry):  # the state to compare is the one after the takeover
            taken_over(helper)
        commands = dry.commands()
        assert commands == real.commands()
        assert state(hosts["dry"])["ipvs"] == [] and state(hosts["dry"])["eth0"] == [
            "192.0.2.11/24"
        ]
        script = "set -e\n" + "\n".join(commands) + "\n"
        hosts["shell"].run(["sh", "-c", script], timeout=300)
        assert read(hosts["shell"]) == read(hosts["real"])
        return commands
    finally:
        real.kill()
        dry.kill()


def test_replayed_dry_run_equals_real_mode(hosts: dict[str, Host], tmp_path) -> None:
    commands = replayed(hosts, tmp_path, VIPS, MEMBERS)
    assert any(c.startswith("arping -U -c 1 -I eth0 198.51.100.23") for c in commands)
    # the steering: this member's port range, its range's firewall-mark service, and the tc
    # filters, the other members' to their MACs
    assert "sysctl -w 'net.ipv4.ip_local_port_range=50000 54999'" in commands
    assert "ipvsadm -a -f 1128776528 -r 192.0.2.11 -g -w 100" in commands
    assert not [c for c in commands if "-f 1128786528" in c]
    assert "tc qdisc add dev eth0 clsact" in commands
    assert (
        "tc filter add dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x6ea60 flower "
        "skip_hw ip_proto tcp dst_port 60000-64999 action skbmod set dmac 02:00:00:00:02:0e "
        "set smac 02:00:00:00:00:0b action mirred egress redirect dev eth0"
    ) in commands
    shown = state(hosts["real"])["tc"]
    assert (
        "skbedit  mark 1128776528" in shown and shown.count("Egress Redirect to device eth0") == 4
    )
    # the takeover's reset guard, there and gone
    guard = "egress protocol ip pref 65002 chain 0 handle 0xc6336414 flower"
    assert (
        f"tc filter add dev eth0 {guard} skip_hw ip_proto tcp src_ip 198.51.100.20/30 "
        in (" ".join(commands) + " ")
        and f"tc filter del dev eth0 {guard}" in commands
    )


VIPS6 = ["198.51.100.10", "2001:db8:10::/126"]
MEMBER_MAP6 = (
    "192.0.2.11 50000-54999 2001:db8::11\n"
    "192.0.2.12 55000-59999 2001:db8::12\n"
    "192.0.2.13 60000-64999\n"  # no IPv6 address: left out of the IPv6 services
)


@pytest.fixture
def hosts6() -> Iterator[dict[str, Host]]:
    with Lan("fid6r", ipv6=True) as a, Lan("fid6d", ipv6=True) as b, Lan("fid6s", ipv6=True) as c:
        members = ("192.0.2.12", "192.0.2.13")
        yield {
            "real": frontend(a, members),
            "dry": frontend(b, members),
            "shell": c.add_host("fe", "192.0.2.11"),
        }


def state6(host: Host) -> dict[str, object]:
    return {
        **state(host),
        "lo6": sorted(host.addresses6("lo")),
        "eth06": sorted(host.addresses6("eth0")),
    }


def test_replayed_dry_run_equals_real_mode_with_ipv6_vips(
    hosts6: dict[str, Host], tmp_path
) -> None:
    commands = replayed(hosts6, tmp_path, VIPS6, MEMBER_MAP6, state6)
    real_state = state6(hosts6["real"])
    assert "2001:db8:10::3/128" in real_state["eth06"]
    # the last ACTIVATE lists .11 and .13: .11 alone has an IPv6 address
    assert [r for r in real_state["ipvs"] if r.startswith("-a -t [2001:db8:10::3]")] == [
        "-a -t [2001:db8:10::3]:0 -r [2001:db8::11]:0 -g -w 100"
    ]
    assert "ipvsadm -d -t '[2001:db8:10::3]:0' -r '[2001:db8::12]:0'" in commands
    assert "ip -6 address add 2001:db8:10::3/128 dev eth0 nodad" in commands
    assert "ndptool -t na -U -i eth0 -T 2001:db8:10::3 send" in commands
    assert not [c for c in commands if "2001:db8::13" in c]
    # the steering of IPv6 VIPs: the same ranges, to the IPv6 neighbours of the members that
    # have an IPv6 address (not .13), IPv6 filters at their own preference; this host's range
    # through its IPv6 firewall-mark service
    assert (
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 17223 handle 0x11d6d8 "
        "flower skip_hw ip_proto udp dst_port 55000-59999 action skbmod set dmac "
        "02:00:00:00:01:0c set smac 02:00:00:00:00:0b action mirred egress redirect dev eth0"
    ) in commands
    assert "-a -f 1128776528 -6 -r [2001:db8::11]:0 -g -w 100" in real_state["ipvs"]
    assert not [r for r in real_state["ipvs"] if r.startswith("-A -f 1128781528")]
    assert (
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower "
        "skip_hw dst_ip 2001:db8:10::/126 action goto chain 17223"
    ) in commands
    assert real_state["tc"].count("eth_type ipv6") == 5  # 1 VIP block, 2 ranges x TCP/UDP
