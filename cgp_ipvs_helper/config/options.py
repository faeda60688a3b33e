"""The helper's command-line options, as CGP's `Helper` setting passes them: each value parsed
strictly (ASCII digits, interface-name rules, PROTO:PORT lists) into one `Settings`.

A bad option is a UsageError (exit status 2 at start): the helper never starts on a value that
Python's int() or float() would have bent into something else.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Callable, NoReturn

from cgp_ipvs_helper import __version__
from cgp_ipvs_helper.errors import UsageError
from cgp_ipvs_helper.plan.model import Settings
from cgp_ipvs_helper.shown import quoted

_IFNAMSIZ = 15
_DIGITS = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,10}(\.[0-9]{0,9})?|\.[0-9]{1,9}")
DAY = 86400.0
# Each refresh reads the whole kernel state and, while active, re-announces every VIP, which
# Linux ignores within 1 s of the last announcement anyway: a shorter period only burns CPU.
MIN_REFRESH = 1.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """ASCII digits only: int() would also take `1_0`, `+5`, ` 5` and an Arabic-Indic 5."""

    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a whole number: {quoted(text)}")
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value

    return parse


def _seconds_in(lo: float, hi: float) -> Callable[[str], float]:
    """ASCII decimal seconds (`2`, `2.5`, `.5`): float() would also take `1_0`, `1e3`, `inf`."""

    def parse(text: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a number of seconds: {quoted(text)}")
        value = float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is not in {lo:g}..{hi:g} seconds")
        return value

    return parse


def _iface(text: str) -> str:
    if (
        not 0 < len(text) <= _IFNAMSIZ
        or any(c in text for c in "/:% \t\n")
        or not text.isprintable()
        or text in (".", "..")
    ):
        raise argparse.ArgumentTypeError(f"not an interface name: {quoted(text)}")
    return text


def _ports(text: str) -> tuple[tuple[str, int], ...]:
    """`tcp:25,tcp:587,udp:5060`: the per-port services used with -p 0."""
    ports = []
    for item in text.split(","):
        proto, _, port = item.strip(" \t").partition(":")
        if proto not in ("tcp", "udp") or not _DIGITS.fullmatch(port) or not 0 < int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"not PROTO:PORT (tcp:25, udp:5060): {quoted(item)}")
        if (proto, int(port)) not in ports:
            ports.append((proto, int(port)))
    return tuple(ports)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="IPVSHelper.py",
        description="CommuniGate Pro load-balancer helper (IPVS, "
        "direct routing). Speaks CGP's helper protocol on stdin/stdout.",
        epilog="IPVSHelper.py check [OPTIONS] checks this frontend's set-up for the helper run "
        "with these options, one line per check, and changes nothing (exit 0 OK, 1 WARN, "
        "2 FAIL).",
    )
    p.add_argument(
        "-p",
        dest="persistence",
        type=_int_in(0, 2**31 - 1),
        default=15,
        metavar="N",
        help="persistence seconds; 0 = off (default 15)",
    )
    p.add_argument(
        "-i",
        dest="iface",
        type=_iface,
        default="eth0",
        metavar="IFACE",
        help="LAN interface for VIPs, ARP and sync (default eth0)",
    )
    p.add_argument(
        "-s",
        dest="syncid",
        type=_int_in(0, 255),
        default=0,
        metavar="N",
        help="SyncID of the sync daemons, 0-255 (default 0)",
    )
    p.add_argument(
        "-t",
        dest="timeout",
        type=_seconds_in(MIN_REFRESH, DAY),
        default=15.0,
        metavar="N",
        help=f"refresh after N seconds without a request, at least {MIN_REFRESH:g} (default 15)",
    )
    p.add_argument(
        "-f",
        dest="vipfile",
        default="/etc/sysconfig/vipaddrs",
        metavar="PATH",
        help="VIP list file (default /etc/sysconfig/vipaddrs)",
    )
    p.add_argument(
        "-r",
        dest="weight",
        type=_int_in(0, 65535),
        default=100,
        metavar="N",
        help="weight of this server when active, others 100 (default 100)",
    )
    p.add_argument(
        "-m",
        dest="dry_run",
        action="store_true",
        help="change nothing; log the equivalent shell commands",
    )
    p.add_argument(
        "--ports",
        type=_ports,
        default=(),
        metavar="LIST",
        help="with -p 0: services as tcp:25,udp:5060,... (default: CGP's port set)",
    )
    p.add_argument(
        "--drain",
        type=_seconds_in(0.0, DAY),
        default=5.0,
        metavar="SECONDS",
        help="keep forwarding this long after DEACTIVATE (default 5)",
    )
    p.add_argument(
        "--member-map",
        default="/etc/sysconfig/cgp-ipvs-members",
        metavar="PATH",
        help="source-port range of each member, for replies to connections opened from a VIP "
        "(default /etc/sysconfig/cgp-ipvs-members; missing: not steered)",
    )
    p.add_argument("--version", action="version", version=f"cgp-ipvs-helper {__version__}")
    return p


def parse_settings(argv: Sequence[str]) -> Settings:
    ns = parser().parse_args(list(argv))
    return Settings(
        persistence=ns.persistence,
        iface=ns.iface,
        syncid=ns.syncid,
        timeout=ns.timeout,
        vipfile=ns.vipfile,
        weight=ns.weight,
        dry_run=ns.dry_run,
        ports=ns.ports,
        drain=ns.drain,
        member_map=ns.member_map,
    )
