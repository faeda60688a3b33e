"""ifup-lo / ifdown-lo against a real kernel: the VIPs of the file land on lo as /32, once.

Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_network_scripts.py

Each test gets a fresh network namespace and a private copy of the network scripts next to stub
ifup-eth/ifdown-eth (which log their call and only set lo up or down), and runs the scripts
through `ip netns exec` as the RHEL ifup/ifdown would. cgp-ipvs-vip is the RPM's launcher run
with this checkout as its private directory. Addresses come from 198.51.100.0/24 and
203.0.113.0/24 only.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgp_ipvs_helper.config.vipfile import load_vips
from cgp_ipvs_helper.errors import VipFileError
from lab import netscripts

LOOPBACK = "127.0.0.1/8"
UNRELATED = "198.51.100.200/32"  # on lo, not in any VIP file here: never touched
SINGLES = ["198.51.100.10", "198.51.100.11"]
SUBNET = netscripts.SUBNET
GOOD = "# test VIPs\n198.51.100.10\n198.51.100.11   # SIP\n\n203.0.113.0/24\n"
_names = itertools.count()


def sh(*argv: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=300, check=False, **kw
    )  # type: ignore[call-overload]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"vip{os.getpid()}-{next(_names)}"
    assert sh("ip", "netns", "add", name).returncode == 0
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name)


class Scripts(netscripts.Scripts):
    """The lab's private network-scripts, run in the namespace `ns`."""

    def __init__(self, base: Path, ns: str) -> None:
        super().__init__(base)
        self.ns = ns

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess:
        """As ifup/ifdown run it: the script's absolute path, the config name as argument."""
        return sh("ip", "netns", "exec", self.ns, str(self.dir / script), *args, env=self.env())

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def addresses(self, dev: str = "lo") -> list[str]:
        out = sh("ip", "-n", self.ns, "-4", "-o", "address", "show", "dev", dev)
        assert out.returncode == 0, out.stderr
        return re.findall(r"\binet (\S+)", out.stdout)

    def lo_is_up(self) -> bool:
        out = sh("ip", "-n", self.ns, "-o", "link", "show", "dev", "lo").stdout
        return bool(re.search(r"<[^>]*\bUP\b", out))

    def ip(self, *args: str) -> None:
        out = sh("ip", "-n", self.ns, *args)
        assert out.returncode == 0, out.stderr


@pytest.fixture
def scripts(tmp_path: Path, netns: str) -> Scripts:
    s = Scripts(tmp_path, netns)
    s.ip("address", "add", UNRELATED, "dev", "lo")
    return s


def as32(ips: list[str]) -> list[str]:
    return [f"{ip}/32" for ip in ips]


def test_ifup_lo_adds_singles_and_a_24_once_each(scripts: Scripts) -> None:
    scripts.file.write_text(GOOD)
    first = scripts.run("ifup-lo", "ifcfg-lo", "boot")
    assert (first.returncode, first.stderr) == (0, ""), first.stderr
    assert scripts.calls() == ["ifup-eth ifcfg-lo boot"]  # lo itself first, as ifup-eth does
    assert scripts.lo_is_up()
    expected = sorted([LOOPBACK, UNRELATED, *as32(SINGLES + SUBNET)])
    assert sorted(scripts.addresses()) == expected

    again = scripts.run("ifup-lo", "ifcfg-lo", "boot")
    assert (again.returncode, again.stderr) == (0, ""), again.stderr
    on_lo = scripts.addresses()
    assert sorted(on_lo) == expected
    assert Counter(a.split("/")[0] for a in on_lo).most_common(1)[0][1] == 1  # no duplicate
    assert scripts.calls() == ["ifup-eth ifcfg-lo boot"] * 2


def test_ifdown_lo_removes_the_vips_of_the_file_and_nothing_else(scripts: Scripts) -> None:
    scripts.file.write_text(GOOD)
    assert scripts.run("ifup-lo", "ifcfg-lo").returncode == 0
    # as on the active balancer: a VIP also on its LAN interface, which lo's going must not touch
    scripts.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    scripts.ip("address", "add", "198.51.100.10/32", "dev", "v0")

    down = scripts.run("ifdown-lo", "ifcfg-lo")
    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    assert scripts.calls() == ["ifup-eth ifcfg-lo", "ifdown-eth ifcfg-lo"]
    assert not scripts.lo_is_up()  # the stub ifdown-eth ran after the VIPs were removed
    assert sorted(scripts.addresses()) == sorted([LOOPBACK, UNRELATED])
    assert scripts.addresses("v0") == ["198.51.100.10/32"]

    again = scripts.run("ifdown-lo", "ifcfg-lo")
    assert (again.returncode, again.stderr) == (0, "")
    assert sorted(scripts.addresses()) == sorted([LOOPBACK, UNRELATED])


def test_ipv6_vips_go_on_lo_as_128_without_dad_and_off_again(scripts: Scripts) -> None:
    scripts.file.write_text("198.51.100.10\n2001:db8:10::/124  # AAAA\n2001:db8:20::7\n")
    up = scripts.run("ifup-lo", "ifcfg-lo", "boot")
    assert (up.returncode, up.stderr) == (0, ""), up.stderr
    out = sh("ip", "-n", scripts.ns, "-6", "-o", "address", "show", "dev", "lo", "scope", "global")
    lines = out.stdout.splitlines()
    wanted = ["2001:db8:10::" + (f"{i:x}" if i else "") for i in range(16)] + ["2001:db8:20::7"]
    assert sorted(re.findall(r"\binet6 (\S+)", out.stdout)) == sorted(f"{a}/128" for a in wanted)
    assert all(" nodad" in line and "tentative" not in line for line in lines), lines
    assert scripts.run("ifup-lo", "ifcfg-lo").returncode == 0  # again: nothing added twice
    again = sh("ip", "-n", scripts.ns, "-6", "-o", "address", "show", "dev", "lo").stdout
    assert again.count("2001:db8:") == len(wanted)
    down = scripts.run("ifdown-lo", "ifcfg-lo")
    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    out = sh("ip", "-n", scripts.ns, "-6", "-o", "address", "show", "dev", "lo", "scope", "global")
    assert out.stdout == ""
    assert sorted(scripts.addresses()) == sorted([LOOPBACK, UNRELATED])


BAD_FILES = [
    ("198.51.100.10\n203.0.113.0/24\n203.0.113.256\n", 3),  # not an address
    ("198.51.100.10\n2001:db8:10::/119\n", 2),  # IPv6 mask below /120
    ("2001:db8:10::1\nfe80::1\n", 2),  # link-local
    ("198.51.100.10\n203.0.113.0/24\n203.0.112.0/23\n", 3),  # mask below /24
    ("198.51.100.10\n203.0.113.0/24\n\n203.0.113.77  # again\n", 4),  # overlap
    ("203.0.113.0/24\n198.51.100.10/24\n", 2),  # host bits set
]


@pytest.mark.parametrize(("text", "lineno"), BAD_FILES)
def test_a_bad_file_adds_nothing_and_says_what_the_helper_says(
    scripts: Scripts, text: str, lineno: int
) -> None:
    scripts.file.write_text(text)
    with pytest.raises(VipFileError) as helper:
        load_vips(str(scripts.file))
    assert helper.value.lineno == lineno

    up = scripts.run("ifup-lo", "ifcfg-lo", "boot")
    assert up.returncode != 0
    assert up.stderr == f"cgp-ipvs-vip: {helper.value}\n"
    assert up.stderr.startswith(f"cgp-ipvs-vip: {scripts.file}:{lineno}: {helper.value.text!r}: ")
    assert sorted(scripts.addresses()) == sorted([LOOPBACK, UNRELATED])  # nothing applied
    assert scripts.calls() == ["ifup-eth ifcfg-lo boot"]  # lo itself still came up
    assert scripts.lo_is_up()


def test_ifdown_lo_with_a_bad_file_removes_nothing_but_takes_lo_down(scripts: Scripts) -> None:
    scripts.file.write_text(GOOD)
    assert scripts.run("ifup-lo", "ifcfg-lo").returncode == 0
    scripts.file.write_text(GOOD + "198.51.100.300\n")
    down = scripts.run("ifdown-lo", "ifcfg-lo")
    assert down.returncode != 0
    assert down.stderr.startswith(f"cgp-ipvs-vip: {scripts.file}:6: '198.51.100.300': ")
    assert len(scripts.addresses()) == 2 + len(SINGLES) + len(SUBNET)
    assert scripts.calls()[-1] == "ifdown-eth ifcfg-lo"


def test_no_vip_file_is_nothing_to_do(scripts: Scripts) -> None:
    up = scripts.run("ifup-lo", "ifcfg-lo")
    assert (up.returncode, up.stderr) == (0, "")
    assert sorted(scripts.addresses()) == sorted([LOOPBACK, UNRELATED])
    assert scripts.calls() == ["ifup-eth ifcfg-lo"]


def test_a_missing_command_fails_loudly(scripts: Scripts) -> None:
    scripts.file.write_text(GOOD)
    scripts.cmd.unlink()
    up = scripts.run("ifup-lo", "ifcfg-lo")
    assert up.returncode == 1
    assert (
        up.stderr
        == f"ifup-lo: {scripts.cmd} is missing: VIPs of {scripts.file} not changed on lo\n"
    )
    assert scripts.calls() == ["ifup-eth ifcfg-lo"]


def test_a_24_costs_one_run_not_256_processes(scripts: Scripts, tmp_path: Path) -> None:
    """ifup-lo for a /24 against a shell loop of 256 `ip address add`, each in a fresh
    namespace, as the boot-time aliases benchmark times them."""
    ways = scripts.ways()
    check_s, ifup_s, loop_s = (scripts.timed(ways[k]) for k in ("check", "ifup", "loop"))
    report = (
        f"a /24 on lo: ifup-lo (one cgp-ipvs-vip run, one netlink batch) {ifup_s:.2f} s; "
        f"256 x `ip address add` {loop_s:.2f} s; ratio {loop_s / ifup_s:.1f}; "
        f"`cgp-ipvs-vip check` alone (start-up and parsing, no kernel) {check_s:.2f} s"
    )
    print(report)
    (tmp_path / "timing.txt").write_text(report + "\n")
    assert ifup_s < loop_s, report
