"""`cgp-ipvs-vip`: put the VIPs of the VIP file on `lo` at boot, or take them off.

Every frontend of a load-balancer group holds every VIP as a /32 (IPv6: a /128, added without
duplicate address detection) on `lo`, so it accepts the
packets the active balancer forwards to it by MAC (direct routing). The helper adds them when it
starts, but a frontend must hold them from boot on, before CommuniGate Pro starts: the network
scripts (`ifup-lo`, `ifdown-lo`) and the systemd unit run this command for that.

It reads the file with the helper's own parser, so a file the helper would reject is rejected at
boot with the same message, and then nothing at all is applied. It changes the kernel through
the same `Kernel` interface and operations as the helper: a /24 is one netlink batch, not 256
`ip` processes. It touches only `lo` addresses that are VIPs of the file: never the loopback
address, never an address on another device (the active balancer's VIPs on `-i` stay).

Usage::

    cgp-ipvs-vip [-f FILE] [-n] [-v] up|down|list|check

Exit status: 0 done; 1 bad VIP file (one line on stderr, nothing applied) or a kernel operation
failed (one line per failure); 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Callable, NoReturn, TextIO

from cgp_ipvs_helper.config.vipfile import load_vips
from cgp_ipvs_helper.errors import HelperError, KernelError, UsageError
from cgp_ipvs_helper.kernel.executor import execute
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.model import Address
from cgp_ipvs_helper.plan.operations import AddAddress, DelAddress, Operation
from cgp_ipvs_helper.shown import escaped

PROG = "cgp-ipvs-vip"
DEFAULT_FILE = "/etc/sysconfig/vipaddrs"
LO = "lo"
COMMANDS = ("up", "down", "list", "check")

KernelFactory = Callable[[], Kernel]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() decides the message and status."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Add the VIPs of the VIP file to lo as /32 or /128 (up), remove them (down), "
        "print them (list), or only validate the file (check). Used by ifup-lo, ifdown-lo and "
        "cgp-ipvs-vip.service.",
    )
    p.add_argument(
        "-f",
        dest="file",
        default=DEFAULT_FILE,
        metavar="FILE",
        help=f"VIP list file (default {DEFAULT_FILE})",
    )
    p.add_argument(
        "-n",
        dest="dry_run",
        action="store_true",
        help="change nothing; print the `ip address` commands that up/down would run",
    )
    p.add_argument(
        "-v", dest="verbose", action="store_true", help="say what was done (one line on stdout)"
    )
    p.add_argument("command", choices=COMMANDS, help="up, down, list or check")
    return p


def plan_up(vips: Sequence[str], on_lo: Sequence[Address]) -> list[Operation]:
    """A /32 (/128) on lo for every VIP lo does not hold yet (with any prefix): re-running adds
    nothing."""
    present = {a.ip for a in on_lo}
    return [AddAddress(Address(ip, LO)) for ip in vips if ip not in present]


def plan_down(vips: Sequence[str], on_lo: Sequence[Address]) -> list[Operation]:
    """Remove exactly the lo addresses that are VIPs of the file, with the prefix lo has them."""
    wanted = set(vips)
    return [DelAddress(a) for a in on_lo if a.ip in wanted]


def _netlink_kernel() -> Kernel:
    # Imported here so `list`, `check` and a bad file never need pyroute2 or a netlink socket.
    from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel

    return NetlinkKernel()


def run(
    argv: Sequence[str],
    kernel_factory: KernelFactory = _netlink_kernel,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The whole command, with the kernel and the streams injectable for tests; the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        ns = parser().parse_args(list(argv))
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    try:
        vips = load_vips(ns.file)
    except HelperError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    if ns.command == "list":
        for ip in vips:
            print(ip, file=out)
        return 0
    if ns.command == "check":
        if ns.verbose:
            print(f"{escaped(ns.file)}: {len(vips)} VIPs", file=out)
        return 0
    return _change(ns.command, ns.file, vips, ns.dry_run, ns.verbose, kernel_factory, out, err)


def _change(
    command: str,
    path: str,
    vips: Sequence[str],
    dry_run: bool,
    verbose: bool,
    kernel_factory: KernelFactory,
    out: TextIO,
    err: TextIO,
) -> int:
    """up/down: plan against what lo holds now (so a re-run changes nothing), apply in one go."""
    try:
        kernel = kernel_factory()
    except (OSError, HelperError) as exc:
        print(f"{PROG}: cannot open the kernel interface: {exc}", file=err)
        return 1
    try:
        try:
            state = kernel.observe(frozenset())
        except (OSError, HelperError) as exc:
            print(f"{PROG}: cannot read the addresses of {LO}: {exc}", file=err)
            return 1
        on_lo = state.addresses_on(LO)
        plan = plan_up if command == "up" else plan_down
        ops = plan(vips, on_lo)
        if dry_run:
            for op in ops:
                print(op, file=out)
            return 0
        failures: list[KernelError] = execute(ops, kernel) if ops else []
    finally:
        kernel.close()
    for failure in failures:
        print(f"{PROG}: {failure}", file=err)
    if verbose:
        done = "added to" if command == "up" else "removed from"
        untouched = max(0, len(vips) - len(ops))
        state_word = "already there" if command == "up" else "not there"
        print(
            f"{PROG}: {escaped(path)}: {len(vips)} VIPs; {len(ops) - len(failures)} {done} {LO}, "
            f"{untouched} {state_word}, {len(failures)} failed",
            file=out,
        )
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (`cgp-ipvs-vip`, and the RPM's /usr/sbin launcher)."""
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
