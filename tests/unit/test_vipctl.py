"""`cgp-ipvs-vip`: the VIPs of the file onto lo and off it, through the Kernel interface.

The kernel here is the recording fake; tests/kernel/test_network_scripts.py runs the same
command through ifup-lo/ifdown-lo against a real kernel.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from cgp_ipvs_helper import vipctl
from cgp_ipvs_helper.config.vipfile import load_vips
from cgp_ipvs_helper.errors import KernelError, VipFileError
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, KernelState
from cgp_ipvs_helper.plan.operations import AddAddress, DelAddress, Operation

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sysconfig" / "vipaddrs"

LOOPBACK = Address("127.0.0.1", "lo", 8)
LAN = Address("192.0.2.11", "eth0", 24)
OTHER_ON_LO = Address("198.51.100.200", "lo", 32)  # on lo, but not a VIP of the file


class BatchKernel(FakeKernel):
    """A fake that records each batch apply_many is given."""

    def __init__(self, state: KernelState | None = None) -> None:
        super().__init__(state)
        self.batches: list[list[Operation]] = []

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        batch = list(ops)
        self.batches.append(batch)
        return super().apply_many(batch)


class Run:
    """One command run: exit status, stdout and stderr lines, and whether a kernel was opened."""

    def __init__(self, kernel: FakeKernel, argv: Sequence[str]) -> None:
        self.opened = 0

        def factory() -> FakeKernel:
            self.opened += 1
            return kernel

        out, err = io.StringIO(), io.StringIO()
        self.status = vipctl.run(argv, factory, out, err)
        self.out = out.getvalue().splitlines()
        self.err = err.getvalue().splitlines()


def vipfile(tmp_path: Path, text: str, name: str = "vipaddrs") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def state(*addresses: Address) -> KernelState:
    return KernelState(addresses=(LOOPBACK, LAN, *addresses))


def on(kernel: FakeKernel, dev: str) -> list[tuple[str, int]]:
    return [(a.ip, a.prefixlen) for a in kernel.addresses if a.dev == dev]


FILE = "198.51.100.10\n198.51.100.11  # SIP\n203.0.113.0/30\n"
FILE_VIPS = [
    "198.51.100.10",
    "198.51.100.11",
    "203.0.113.0",
    "203.0.113.1",
    "203.0.113.2",
    "203.0.113.3",
]


def test_up_adds_every_vip_as_32_on_lo_in_file_order(tmp_path: Path) -> None:
    kernel = FakeKernel(state())
    run = Run(kernel, ["-f", vipfile(tmp_path, FILE), "up"])
    assert (run.status, run.out, run.err) == (0, [], [])
    assert kernel.take() == [AddAddress(Address(ip, "lo", 32)) for ip in FILE_VIPS]
    assert on(kernel, "lo") == [("127.0.0.1", 8)] + [(ip, 32) for ip in FILE_VIPS]
    assert on(kernel, "eth0") == [("192.0.2.11", 24)]


def test_up_skips_vips_present_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    # .11 is there already, even with another prefix: it is skipped, never duplicated
    kernel = FakeKernel(state(Address("198.51.100.11", "lo", 24)))
    path = vipfile(tmp_path, FILE)
    assert Run(kernel, ["-f", path, "up"]).status == 0
    added = [op.address.ip for op in kernel.take()]
    assert added == [ip for ip in FILE_VIPS if ip != "198.51.100.11"]
    again = Run(kernel, ["-f", path, "-v", "up"])
    assert again.status == 0
    assert kernel.take() == []
    assert again.out == [f"cgp-ipvs-vip: {path}: 6 VIPs; 0 added to lo, 6 already there, 0 failed"]
    ips = [ip for ip, _ in on(kernel, "lo")]
    assert len(ips) == len(set(ips))


def test_a_vip_on_the_lan_interface_does_not_count_as_on_lo(tmp_path: Path) -> None:
    # the active balancer holds its VIPs on eth0 too; lo must still get them
    kernel = FakeKernel(state(Address("198.51.100.10", "eth0", 32)))
    Run(kernel, ["-f", vipfile(tmp_path, "198.51.100.10\n"), "up"])
    assert kernel.take() == [AddAddress(Address("198.51.100.10", "lo", 32))]


def test_up_sends_all_additions_as_one_batch(tmp_path: Path) -> None:
    kernel = BatchKernel(state())
    run = Run(kernel, ["-f", vipfile(tmp_path, "203.0.113.0/24\n"), "up"])
    assert run.status == 0
    assert len(kernel.batches) == 1
    assert len(kernel.batches[0]) == 256
    assert len(on(kernel, "lo")) == 257


def test_down_removes_only_the_files_vips_from_lo(tmp_path: Path) -> None:
    vip_on_eth0 = Address("198.51.100.10", "eth0", 32)
    kernel = FakeKernel(
        state(
            OTHER_ON_LO,
            vip_on_eth0,
            *(Address(ip, "lo", 32) for ip in FILE_VIPS if ip != "203.0.113.2"),
        )
    )
    run = Run(kernel, ["-f", vipfile(tmp_path, FILE), "-v", "down"])
    assert run.status == 0, run.err
    removed = kernel.take()
    assert all(isinstance(op, DelAddress) and op.address.dev == "lo" for op in removed)
    assert [op.address.ip for op in removed] == [ip for ip in FILE_VIPS if ip != "203.0.113.2"]
    assert on(kernel, "lo") == [("127.0.0.1", 8), ("198.51.100.200", 32)]
    assert vip_on_eth0 in kernel.addresses
    assert run.out == [
        f"cgp-ipvs-vip: {tmp_path / 'vipaddrs'}: 6 VIPs; 5 removed from lo, 1 not there, 0 failed"
    ]


def test_down_uses_the_prefix_lo_has(tmp_path: Path) -> None:
    kernel = FakeKernel(state(Address("198.51.100.10", "lo", 24)))
    Run(kernel, ["-f", vipfile(tmp_path, "198.51.100.10\n"), "down"])
    assert kernel.take() == [DelAddress(Address("198.51.100.10", "lo", 24))]


@pytest.mark.parametrize(
    ("text", "lineno", "entry", "reason"),
    [
        ("198.51.100.10\n203.0.113.0/23\n", 2, "203.0.113.0/23", "mask /23 is below /24"),
        ("198.51.100.10\n\n203.0.113.5/24 # x\n", 3, "203.0.113.5/24", "host bits set"),
        ("203.0.113.0/30\n203.0.113.2\n", 2, "203.0.113.2", "overlaps line 1"),
        ("198.51.100.10\nmail.example.com\n", 2, "mail.example.com", "not an IPv4 address"),
    ],
)
@pytest.mark.parametrize("command", ["up", "down", "check", "list"])
def test_a_bad_file_is_one_line_with_the_helpers_message_and_nothing_applied(
    tmp_path: Path, text: str, lineno: int, entry: str, reason: str, command: str
) -> None:
    path = vipfile(tmp_path, text)
    kernel = FakeKernel(state())
    run = Run(kernel, ["-f", path, command])
    with pytest.raises(VipFileError) as helper_says:
        load_vips(path)
    assert run.status == 1
    assert run.out == []
    assert run.err == [f"cgp-ipvs-vip: {helper_says.value}"]
    assert run.err[0].startswith(f"cgp-ipvs-vip: {path}:{lineno}: {entry!r}: ")
    assert reason in run.err[0]
    assert run.opened == 0  # the kernel was not even opened
    assert kernel.applied == []


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    run = Run(FakeKernel(state()), ["-f", str(tmp_path / "nope"), "up"])
    assert run.status == 1
    assert run.err[0].startswith(f"cgp-ipvs-vip: {tmp_path / 'nope'}: cannot read: ")
    assert run.opened == 0


def test_dry_run_prints_the_ip_commands_and_changes_nothing(tmp_path: Path) -> None:
    kernel = FakeKernel(state(Address("198.51.100.11", "lo", 32)))
    path = vipfile(tmp_path, FILE)
    up = Run(kernel, ["-n", "-f", path, "up"])
    assert up.status == 0
    assert up.out == [f"ip address add {ip}/32 dev lo" for ip in FILE_VIPS if ip != "198.51.100.11"]
    down = Run(kernel, ["-f", path, "-n", "down"])
    assert down.out == ["ip address del 198.51.100.11/32 dev lo"]
    assert kernel.applied == []


def test_list_and_check_need_no_kernel(tmp_path: Path) -> None:
    path = vipfile(tmp_path, FILE)
    listed = Run(FakeKernel(), ["-f", path, "list"])
    assert (listed.status, listed.out, listed.opened) == (0, FILE_VIPS, 0)
    checked = Run(FakeKernel(), ["-f", path, "-v", "check"])
    assert (checked.status, checked.out, checked.opened) == (0, [f"{path}: 6 VIPs"], 0)
    assert Run(FakeKernel(), ["-f", path, "check"]).out == []


def test_kernel_failures_are_reported_one_line_each_and_fail(tmp_path: Path) -> None:
    kernel = FakeKernel(state())
    kernel.fail[AddAddress] = "Operation not permitted"
    run = Run(kernel, ["-f", vipfile(tmp_path, "198.51.100.10\n198.51.100.11\n"), "up"])
    assert run.status == 1
    assert run.err == [
        "cgp-ipvs-vip: ip address add 198.51.100.10/32 dev lo: Operation not permitted",
        "cgp-ipvs-vip: ip address add 198.51.100.11/32 dev lo: Operation not permitted",
    ]


def test_a_kernel_that_cannot_be_opened_or_read_fails_cleanly(tmp_path: Path) -> None:
    path = vipfile(tmp_path, FILE)

    def refuse() -> FakeKernel:
        raise PermissionError(1, "Operation not permitted")

    err = io.StringIO()
    assert vipctl.run(["-f", path, "up"], refuse, io.StringIO(), err) == 1
    assert err.getvalue().startswith("cgp-ipvs-vip: cannot open the kernel interface: ")

    class Blind(FakeKernel):
        def observe(self, sysctls: frozenset[str]) -> KernelState:
            raise KernelError("observe addresses", "Permission denied")

    err = io.StringIO()
    assert vipctl.run(["-f", path, "down"], Blind, io.StringIO(), err) == 1
    assert err.getvalue() == (
        "cgp-ipvs-vip: cannot read the addresses of lo: observe addresses: Permission denied\n"
    )


@pytest.mark.parametrize("argv", [[], ["sideways"], ["-f"], ["-x", "up"], ["up", "down"]])
def test_a_bad_command_line_is_status_2(argv: list[str]) -> None:
    run = Run(FakeKernel(), argv)
    assert run.status == 2
    assert len(run.err) == 1 and run.err[0].startswith("cgp-ipvs-vip: ")
    assert run.opened == 0


def test_the_sample_file_holds_8_vips() -> None:
    run = Run(FakeKernel(), ["-f", str(SAMPLE), "list"])
    assert run.status == 0
    assert len(run.out) == 8
    assert run.out == list(load_vips(str(SAMPLE)))


def test_as_a_process_a_bad_file_is_one_stderr_line_and_status_1(tmp_path: Path) -> None:
    path = vipfile(tmp_path, "198.51.100.10\n198.51.100.0/16\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper.vipctl", "-f", path, "up"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"cgp-ipvs-vip: {path}:2: '198.51.100.0/16': mask /16 is below /24\n"


def test_a_file_name_with_a_line_break_is_shown_on_one_line(tmp_path: Path) -> None:
    path = vipfile(tmp_path, FILE, name="vip\naddrs")
    checked = Run(FakeKernel(), ["-f", path, "-v", "check"])
    assert checked.out == [f"{tmp_path}/vip\\x0aaddrs: 6 VIPs"]
    up = Run(FakeKernel(state()), ["-f", path, "-v", "up"])
    assert len(up.out) == 1 and up.out[0].startswith(f"cgp-ipvs-vip: {tmp_path}/vip\\x0aaddrs: ")


def test_ipv6_vips_go_on_lo_as_128_without_dad_and_come_off_again(tmp_path: Path) -> None:
    kernel = FakeKernel(state())
    path = vipfile(tmp_path, "198.51.100.10\n2001:db8:10::/126\n")
    dry = Run(kernel, ["-n", "-f", path, "up"])
    assert dry.out == ["ip address add 198.51.100.10/32 dev lo"] + [
        f"ip -6 address add 2001:db8:10::{i}/128 dev lo nodad" for i in ("", 1, 2, 3)
    ]
    assert Run(kernel, ["-f", path, "up"]).status == 0
    assert on(kernel, "lo")[-4:] == [(f"2001:db8:10::{i}", 128) for i in ("", 1, 2, 3)]
    down = Run(kernel, ["-f", path, "-v", "down"])
    assert down.status == 0
    assert on(kernel, "lo") == [("127.0.0.1", 8)]
