"""`IPVSHelper.py check [OPTIONS]`: the preflight check of a frontend, with the helper's options.

The facts are gathered here, read-only: the VIP file and the member map through the helper's
own parsers, addresses, IPVS and our tc filters over netlink (dumps only), settings from
/proc/sys, and the processes of this network namespace from /proc. What they mean is
core/preflight.py's. One line per check on stdout; exit status 0 all OK, 1 a warning, 2 a
failure (and 2 for a bad option, as the helper).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from cgp_ipvs_helper.config.memberfile import load_members
from cgp_ipvs_helper.config.options import parse_settings
from cgp_ipvs_helper.config.vipfile import load_vips
from cgp_ipvs_helper.core.hostaddrs import interface_exists
from cgp_ipvs_helper.core.preflight import (
    OTHER_MANAGERS,
    Facts,
    Finding,
    Level,
    evaluate,
    status,
    sysctl_paths,
)
from cgp_ipvs_helper.errors import UsageError, VipFileError
from cgp_ipvs_helper.plan.model import KernelState, Settings
from cgp_ipvs_helper.plan.planner import DEFAULT_PORTS

LAUNCHERS = ("IPVSHelper.py", "cgp-ipvs-helper")  # the RPM's launchers of the helper
MODULE = "cgp_ipvs_helper"  # a helper started as python -m cgp_ipvs_helper


def gather(settings: Settings) -> Facts:
    """Everything the checks need, read without changing anything."""
    vips: tuple[str, ...] | None = None
    vip_error = member_error = None
    members = None
    try:
        vips = load_vips(settings.vipfile)
    except VipFileError as exc:
        vip_error = str(exc)
    try:
        ports = [port for _, port in settings.ports or DEFAULT_PORTS]
        members = load_members(settings.member_map, ports, vips or ())
    except VipFileError as exc:
        member_error = str(exc)
    state, problem = _kernel_state(settings)
    helpers, managers = _processes()
    return Facts(
        settings=settings,
        vips=vips,
        vip_error=vip_error,
        members=members,
        member_error=member_error,
        map_exists=os.path.exists(settings.member_map),
        iface_exists=interface_exists(settings.iface),
        state=state,
        ipvs_problem=problem,
        helpers=helpers,
        managers=managers,
    )


def _kernel_state(settings: Settings) -> tuple[KernelState, str | None]:
    from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel

    kernel = NetlinkKernel()
    try:
        tc_dev = settings.iface if interface_exists(settings.iface) else None
        return kernel.observe(sysctl_paths(settings.iface), tc_dev), kernel.ipvs_problem
    finally:
        kernel.close()


def _processes() -> tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]:
    """Helpers and other IPVS managers running in this network namespace (not this process)."""
    helpers, managers = [], []
    for pid, comm, argv in _neighbours():
        if comm in OTHER_MANAGERS:
            managers.append((pid, comm))
        elif _is_helper(argv):
            helpers.append((pid, comm))
    return tuple(helpers), tuple(managers)


def _is_helper(argv: Sequence[str]) -> bool:
    """A helper serving CGP (not another `check`): its launcher, or python -m of the package."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) in LAUNCHERS or (arg == MODULE and argv[i - 1] == "-m"):
            return argv[i + 1 : i + 2] != ["check"]
    return False


def _neighbours() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, name, argv) of every other process in this network namespace that can be read."""
    try:
        mine = os.readlink("/proc/self/ns/net")
    except OSError:
        mine = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if mine is not None and os.readlink(f"/proc/{entry}/ns/net") != mine:
                continue
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:  # gone, or not ours to read
            continue
        yield int(entry), comm, argv


def report(findings: Sequence[Finding]) -> str:
    counts = {level: sum(f.level is level for f in findings) for level in Level}
    summary = ", ".join(f"{n} {level.name}" for level, n in counts.items())
    verdict = Level(status(findings)).name
    return "\n".join([*(f.line() for f in findings), f"check: {verdict} ({summary})"]) + "\n"


def main(argv: Sequence[str]) -> int:
    try:
        settings = parse_settings(argv)
    except UsageError as exc:
        print(f"IPVSHelper.py check: {exc}", file=sys.stderr)
        return 2
    findings = evaluate(gather(settings))
    sys.stdout.write(report(findings))
    return status(findings)
