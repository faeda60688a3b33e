"""The member port-range map (/etc/sysconfig/cgp-ipvs-members): parsed whole, or rejected whole.

Each member of the group opens its outgoing connections from a VIP with source ports from its
own range (net.ipv4.ip_local_port_range, and the same range in CGP's Port Allocation); replies
to a VIP whose destination port lies in a range belong to that member alone. One member per
line: `<LAN IPv4 address> <first>-<last> [<IPv6 address>]`; `#` starts a comment. The third
column is the member's IPv6 address on the LAN interface's link: CGP names members by IPv4, and
IPv6 direct routing to the group's IPv6 VIPs needs each member's IPv6 address. Lines are split as
the VIP file's (lines.py), fields on spaces and tabs only. A bad line is reported with file, line
number and text, and nothing is returned, so a half-valid map can never be half applied. Not to
be confused with `--ports`, the list of services balanced with `-p 0`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

import netaddr

from cgp_ipvs_helper.config.lines import BLANKS, as_bytes, entries
from cgp_ipvs_helper.config.vipfile import canonical, is_unicast, not_unicast6
from cgp_ipvs_helper.errors import MemberFileError
from cgp_ipvs_helper.plan.steering import MemberRange

DEFAULT_PATH = "/etc/sysconfig/cgp-ipvs-members"
MIN_PORT = 1024  # below: well-known ports a service listens on, never a source-port range
_ADDRESS = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})", re.ASCII)
_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})", re.ASCII)
_FIELDS = re.compile(f"[{BLANKS.decode()}]+")


def _address(path: str, lineno: int, line: str, text: str) -> str:
    m = _ADDRESS.fullmatch(text)
    if m is None or any(int(part) > 255 for part in m.groups()):
        raise MemberFileError(path, lineno, line, f"'{text}' is not an IPv4 address")
    octets = [int(part) for part in m.groups()]
    if not is_unicast(octets[0] << 24):
        raise MemberFileError(path, lineno, line, f"{text} is not a unicast address")
    return ".".join(map(str, octets))


def _address6(path: str, lineno: int, line: str, text: str) -> str:
    """The third column: one unicast IPv6 address (no prefix), in the kernel's spelling."""
    try:
        if ":" not in text or "/" in text or "%" in text:
            raise ValueError
        ip = netaddr.IPAddress(text, version=6)
    except (netaddr.AddrFormatError, ValueError):
        raise MemberFileError(path, lineno, line, f"'{text}' is not an IPv6 address") from None
    problem = not_unicast6(netaddr.IPNetwork(ip))
    if problem:
        raise MemberFileError(path, lineno, line, f"{text}: {problem}")
    return canonical(str(ip))


def _range(path: str, lineno: int, line: str, text: str) -> tuple[int, int]:
    m = _RANGE.fullmatch(text)
    if m is None:
        raise MemberFileError(path, lineno, line, f"'{text}' is not a port range FIRST-LAST")
    first, last = int(m.group(1)), int(m.group(2))
    if last > 65535:
        raise MemberFileError(path, lineno, line, f"port {last} is above 65535")
    if first < MIN_PORT:
        raise MemberFileError(path, lineno, line, f"range {text} starts below {MIN_PORT}")
    if first > last:
        raise MemberFileError(path, lineno, line, f"range {text}: first port above last")
    return first, last


def parse_members(
    text: str | bytes, path: str, service_ports: Iterable[int] = (), vips: Collection[str] = ()
) -> tuple[MemberRange, ...]:
    """Every member in file order; raise MemberFileError on the first bad line.

    `service_ports` are the ports balanced as services (a range holding one would steer new
    clients to one member); `vips` may not be members (a VIP is never a member's LAN address).
    """
    ports = sorted(set(service_ports))
    vipset = frozenset(vips)
    seen_ip: dict[str, int] = {}
    taken: list[tuple[int, int, int]] = []  # (first, last, line)
    members: list[MemberRange] = []
    for lineno, line in entries(as_bytes(text)):
        fields = _FIELDS.split(line)
        if not 2 <= len(fields) <= 3:
            raise MemberFileError(
                path, lineno, line, "expected '<LAN IPv4 address> FIRST-LAST [IPv6 address]'"
            )
        ip = _address(path, lineno, line, fields[0])
        first, last = _range(path, lineno, line, fields[1])
        ip6 = _address6(path, lineno, line, fields[2]) if len(fields) == 3 else None
        for addr in (ip, ip6):
            if addr in vipset:
                raise MemberFileError(
                    path, lineno, line, f"{addr} is a VIP, not a member's address"
                )
            if addr in seen_ip:
                raise MemberFileError(
                    path, lineno, line, f"{addr} is already on line {seen_ip[addr]}"
                )
        for f, la, at in taken:
            if first <= la and f <= last:
                raise MemberFileError(
                    path, lineno, line, f"range {first}-{last} overlaps {f}-{la} on line {at}"
                )
        inside = [p for p in ports if first <= p <= last]
        if inside:
            raise MemberFileError(
                path, lineno, line, f"range {first}-{last} holds service port {inside[0]}"
            )
        seen_ip[ip] = lineno
        if ip6 is not None:
            seen_ip[ip6] = lineno
        taken.append((first, last, lineno))
        members.append(MemberRange(ip, first, last, ip6))
    return tuple(members)


def read_members(path: str) -> bytes:
    """The file's bytes; a missing file is no map (empty), an unreadable one an error."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise MemberFileError(path, None, "", f"cannot read: {exc.strerror or exc}") from None


def load_members(
    path: str, service_ports: Iterable[int] = (), vips: Collection[str] = ()
) -> tuple[MemberRange, ...]:
    """Read and parse `path` (see read_members)."""
    return parse_members(read_members(path), path, service_ports, vips)
