"""The VIP list file (/etc/sysconfig/vipaddrs): parsed whole, or rejected whole.

One entry per line: an IPv4 address or subnet a.b.c.d/m (m >= 24), or an IPv6 address or subnet
(/120 or longer: at most 256 addresses, like a /24); a subnet stands for every address in it.
`#` starts a comment. A bad line is reported with file, line number and text, and nothing
is returned, so a half-valid file can never be half applied. Lines are split as lines.py does:
an entry is ASCII, and one that is not is an error naming its line, with the text shown escaped.
"""

from __future__ import annotations

import re
import socket
from typing import Callable

import netaddr
from attrs import frozen

from cgp_ipvs_helper.config.lines import as_bytes, entries
from cgp_ipvs_helper.errors import VipFileError

MIN_PREFIXLEN = 24
MIN_PREFIXLEN6 = 120
_DOTTED = re.compile(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", re.ASCII)
_COLONS = re.compile(r"[0-9a-f:.]*:[0-9a-f:.]*(/\d{1,3})?", re.ASCII | re.IGNORECASE)
# What a host cannot hold as a VIP another host reaches: the address, and why not.
_NOT_VIP6 = (
    (netaddr.IPNetwork("::/128"), "the unspecified address"),
    (netaddr.IPNetwork("::1/128"), "the loopback address"),
    (netaddr.IPNetwork("::ffff:0:0/96"), "an IPv4-mapped address"),
    (netaddr.IPNetwork("::/96"), "an IPv4-compatible address (deprecated)"),
    (netaddr.IPNetwork("fe80::/10"), "a link-local address"),
    (netaddr.IPNetwork("ff00::/8"), "a multicast address"),
)


def is_unicast(ip: int) -> bool:
    """Neither 0.0.0.0/8, loopback, multicast, class E nor broadcast: a host can hold it."""
    first = ip >> 24
    return first not in (0, 127) and first < 224


def canonical(ip: str) -> str:
    """The kernel's spelling of an address (IPv6 as inet_ntop writes it: lower case, the
    longest run of zero groups as ::), so a VIP from the file equals one read back."""
    if ":" not in ip:
        return ip
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip))


def not_unicast6(net: netaddr.IPNetwork) -> str | None:
    """Why an IPv6 address or subnet cannot be a VIP or a member's address; None if it can."""
    for bad, what in _NOT_VIP6:
        if net.network in bad or bad.network in net:
            return f"not a unicast address: {what}"
    return None


def _not_unicast4(net: netaddr.IPNetwork) -> str | None:
    if is_unicast(int(net.network)) and is_unicast(int(net.broadcast or net.network)):
        return None
    return "not a unicast address"


@frozen
class _Family:
    """What an entry of one address family must be, and how its errors are worded."""

    version: int
    name: str  # "IPv4": in "not a valid IPv4 address"
    form: re.Pattern[str]  # the spelling accepted, before netaddr parses it
    spelling: str  # what the text is not, if it does not match `form`
    min_prefixlen: int  # at most 256 addresses
    not_unicast: Callable[[netaddr.IPNetwork], str | None]


_IPV4 = _Family(
    4, "IPv4", _DOTTED, "an IPv4 address or a.b.c.d/m subnet", MIN_PREFIXLEN, _not_unicast4
)
_IPV6 = _Family(6, "IPv6", _COLONS, "an IPv6 address or subnet", MIN_PREFIXLEN6, not_unicast6)


def _entry(path: str, lineno: int, text: str) -> netaddr.IPNetwork:
    family = _IPV6 if ":" in text else _IPV4

    def error(reason: str) -> VipFileError:
        return VipFileError(path, lineno, text, reason)

    if not family.form.fullmatch(text):
        raise error(f"not {family.spelling}")
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise error(f"not a valid {family.name} address: {exc}") from None
    if net.version != family.version:
        raise error(f"not {family.spelling}")
    if net.prefixlen < family.min_prefixlen:
        raise error(f"mask /{net.prefixlen} is below /{family.min_prefixlen}")
    if net.ip != net.network:
        raise error(f"host bits set (the subnet is {net.cidr})")
    problem = family.not_unicast(net)
    if problem:
        raise error(problem)
    return net


def parse_vips(text: str | bytes, path: str) -> tuple[str, ...]:
    """Every VIP the file names, in file order; raise VipFileError on the first bad line."""
    seen: dict[tuple[int, int], tuple[int, str]] = {}  # (version, address) -> where
    vips: list[str] = []
    for lineno, line in entries(as_bytes(text)):
        net = _entry(path, lineno, line)
        for addr in net:
            ip = canonical(str(addr))
            first = seen.get((addr.version, int(addr)))
            if first is not None:
                raise VipFileError(
                    path, lineno, line, f"{ip} overlaps line {first[0]} ({first[1]})"
                )
            seen[(addr.version, int(addr))] = (lineno, line)
            vips.append(ip)
    return tuple(vips)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise VipFileError(path, None, "", f"cannot read: {exc.strerror or exc}") from None


def load_vips(path: str) -> tuple[str, ...]:
    """Read and parse `path`; an unreadable file is a VipFileError too."""
    return parse_vips(_read(path), path)


def vip_error(path: str, ip: str, reason: str) -> VipFileError:
    """An error about VIP `ip` of a file that parsed, found later (against this host's
    addresses): it names the line that lists `ip`, as a parse error would."""
    try:
        for lineno, line in entries(_read(path)):
            entry = (_IPV6 if ":" in line else _IPV4).form.fullmatch(line)
            if entry and netaddr.IPAddress(ip) in netaddr.IPNetwork(line):
                return VipFileError(path, lineno, line, reason)
    except (VipFileError, netaddr.AddrFormatError, ValueError):
        pass  # changed or gone since it was loaded: the error still names the file
    return VipFileError(path, None, ip, reason)
