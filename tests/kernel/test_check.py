"""`IPVSHelper.py check` on a frontend in the lab kernel: a correct one is all OK (idle, and with
its helper active), and each mistake of the set-up, made for real, is the FAIL (or WARN) that
names it.

Runs INSIDE user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_check.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.driver import HelperProcess, helper_argv, write_vipfile
from lab.lan import Host, Lan, ipvsadm

VIPS = ["198.51.100.10", "198.51.100.11", "2001:db8:10::10"]
MAP = "192.0.2.11 40000-44999 2001:db8::11\n192.0.2.12 45000-49999 2001:db8::12\n"


class Frontend:
    """fe1 set up as the README says: VIPs on lo, ARP settings, its port range; and its files."""

    def __init__(self, host: Host, tmp: Path) -> None:
        self.host, self.tmp = host, tmp
        self.vipfile = write_vipfile(str(tmp / "vipaddrs"), VIPS)
        self.member_map = tmp / "cgp-ipvs-members"
        self.member_map.write_text(MAP)
        host.dr_real_server(VIPS[:2])
        host.run(["ip", "-6", "address", "add", f"{VIPS[2]}/128", "dev", "lo"])
        host.set_sysctl("net.ipv4.ip_local_port_range", "40000 44999")
        for scope in ("all", "eth0"):
            host.set_sysctl(f"net.ipv4.conf.{scope}.rp_filter", 0)

    def options(self, *extra: str) -> list[str]:
        return ["-i", "eth0", "-f", self.vipfile, "--member-map", str(self.member_map), *extra]

    def check(self, *extra: str) -> tuple[int, list[str]]:
        argv = helper_argv("check", *self.options(*extra))
        proc = self.host.run(argv, check=False, timeout=120, cwd=str(Path(__file__).parents[2]))
        assert proc.stderr == ""
        lines = proc.stdout.splitlines()
        assert lines[-1].startswith("check: "), proc.stdout
        return proc.returncode, lines[:-1]


@pytest.fixture
def fe(tmp_path: Path) -> Iterator[Frontend]:
    with Lan(f"ck{os.getpid() % 10000}", ipv6=True) as lan:
        host = lan.add_host("fe1", "192.0.2.11")
        yield Frontend(host, tmp_path)


def not_ok(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("OK ")]


def test_a_correct_frontend_is_all_ok_idle_and_with_its_helper_active(fe: Frontend) -> None:
    status, lines = fe.check()
    assert (status, not_ok(lines)) == (0, []), lines
    assert any(line.startswith("OK   all 3 VIPs on lo") for line in lines)
    h = HelperProcess(fe.host, *fe.options("-t", "1"))
    try:
        h.wait_started()
        assert h.request("ACTIVATE 192.0.2.11 192.0.2.12").endswith("OK active vips=3 members=2")
        status, lines = fe.check()
        assert (status, not_ok(lines)) == (0, []), lines
        assert any("a helper runs here" in line for line in lines), lines
    finally:
        h.kill()
    # killed while active: its VIPs stay on eth0 and it still takes their traffic
    status, lines = fe.check()
    assert status == 2
    bad = not_ok(lines)
    assert len(bad) == 1 and bad[0].startswith(
        "FAIL no helper runs, yet VIP 198.51.100.10 is on eth0"
    ), lines


def _vip_off_lo(fe: Frontend) -> None:
    fe.host.del_address(VIPS[1], dev="lo")


def _arp_ignore(fe: Frontend) -> None:
    fe.host.set_sysctl("net.ipv4.conf.all.arp_ignore", 0)
    fe.host.set_sysctl("net.ipv4.conf.eth0.arp_ignore", 0)


def _bad_vipfile(fe: Frontend) -> None:
    Path(fe.vipfile).write_text("198.51.100.10\n198.51.100.300\n")


def _not_in_map(fe: Frontend) -> None:
    fe.member_map.write_text(MAP.splitlines()[1] + "\n")


def _ipv6_off_eth0(fe: Frontend) -> None:
    fe.host.run(["ip", "-6", "address", "del", "2001:db8::11/64", "dev", "eth0"])


def _foreign_service(fe: Frontend) -> None:
    ipvsadm(fe.host, "-A", "-t", f"{VIPS[0]}:80", "-s", "rr")


def _rp_filter(fe: Frontend) -> None:
    fe.host.set_sysctl("net.ipv4.conf.eth0.rp_filter", 1)


@pytest.mark.parametrize(
    ("break_it", "extra", "status", "line"),
    [
        (_bad_vipfile, (), 2, "FAIL VIP file: {vipfile}:2: '198.51.100.300'"),
        (_vip_off_lo, (), 2, "FAIL VIP 198.51.100.11 not on lo"),
        (_arp_ignore, (), 2, "FAIL ARP on eth0: arp_ignore 0, arp_announce 2"),
        (lambda fe: None, ("-i", "eth9"), 2, "FAIL -i eth9: no such interface"),
        (_not_in_map, (), 2, "FAIL no address of this host is in the member map"),
        (_ipv6_off_eth0, (), 2, "FAIL -i eth0 does not hold 2001:db8::11"),
        (_foreign_service, (), 2, "FAIL 1 IPVS services on our VIPs are not the helper's"),
        (_rp_filter, (), 1, "WARN strict reverse-path filter on eth0 (rp_filter 1)"),
    ],
    ids=["vipfile", "lo", "arp", "iface", "map", "ipv6", "foreign", "rp_filter"],
)
def test_each_mistake_is_its_finding(
    fe: Frontend, break_it: object, extra: tuple[str, ...], status: int, line: str
) -> None:
    break_it(fe)  # type: ignore[operator]
    got, lines = fe.check(*extra)
    expected = line.format(vipfile=fe.vipfile)
    bad = not_ok(lines)
    assert got == status and len(bad) == 1 and bad[0].startswith(expected), lines


def test_another_manager_running_is_a_warning(fe: Frontend, tmp_path: Path) -> None:
    keepalived = tmp_path / "keepalived"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", keepalived)
    proc = fe.host.call(subprocess.Popen, [str(keepalived), "60"])
    try:
        status, lines = fe.check()
    finally:
        proc.kill()
        proc.wait()
    assert status == 1 and not_ok(lines) == [
        f"WARN another IPVS/VRRP manager runs: keepalived ({proc.pid}) -> make sure it manages "
        "none of the VIPs, or stop it"
    ], lines


def test_nothing_is_changed(fe: Frontend) -> None:
    _arp_ignore(fe)
    _vip_off_lo(fe)
    fe.host.set_sysctl("net.ipv4.ip_local_port_range", "32768 60999")
    before = [fe.host.run(["ip", "address"]).stdout, ipvsadm(fe.host, "-Ln")]
    status, lines = fe.check()
    assert status == 2
    assert any(
        x.startswith("WARN ip_local_port_range is 32768-60999, not 40000-44999") for x in lines
    )
    assert [fe.host.run(["ip", "address"]).stdout, ipvsadm(fe.host, "-Ln")] == before
    assert fe.host.sysctl("net.ipv4.conf.all.arp_ignore") == "0"
    assert fe.host.sysctl("net.ipv4.ip_local_port_range").split() == ["32768", "60999"]
