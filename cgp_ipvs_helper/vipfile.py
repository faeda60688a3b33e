"""The VIP list file (/etc/sysconfig/vipaddrs): parsed whole, or rejected whole.

One entry per line: an IPv4 address or subnet a.b.c.d/m (m >= 24), or an IPv6 address or subnet
(/120 or longer: at most 256 addresses, like a /24); a subnet stands for every address in it.
`#` starts a comment. A bad line is reported with file, line number and text, and nothing
is returned, so a half-valid file can never be half applied.

The file is read as bytes and split on LF (CRLF) only: a form feed, vertical tab, NEL or U+2028
in a comment is part of the comment, not a line break that would turn the rest into an entry and
shift every later line number. A comment may hold any bytes; an entry is ASCII, and one that is
not is an error naming its line, with the text shown escaped.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import netaddr

from .errors import VipFileError
from .shown import decode

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


def _entry6(path: str, lineno: int, text: str) -> netaddr.IPNetwork:
    if not _COLONS.fullmatch(text):
        raise VipFileError(path, lineno, text, "not an IPv6 address or subnet")
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise VipFileError(path, lineno, text, f"not a valid IPv6 address: {exc}") from None
    if net.version != 6:
        raise VipFileError(path, lineno, text, "not an IPv6 address or subnet")
    if net.prefixlen < MIN_PREFIXLEN6:
        raise VipFileError(path, lineno, text, f"mask /{net.prefixlen} is below /{MIN_PREFIXLEN6}")
    if net.ip != net.network:
        raise VipFileError(path, lineno, text, f"host bits set (the subnet is {net.cidr})")
    problem = not_unicast6(net)
    if problem:
        raise VipFileError(path, lineno, text, problem)
    return net


def not_unicast6(net: netaddr.IPNetwork) -> str | None:
    """Why an IPv6 address or subnet cannot be a VIP or a member's address; None if it can."""
    for bad, what in _NOT_VIP6:
        if net.network in bad or bad.network in net:
            return f"not a unicast address: {what}"
    return None


def _entry(path: str, lineno: int, text: str) -> netaddr.IPNetwork:
    if ":" in text:
        return _entry6(path, lineno, text)
    if not _DOTTED.fullmatch(text):
        raise VipFileError(path, lineno, text, "not an IPv4 address or a.b.c.d/m subnet")
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise VipFileError(path, lineno, text, f"not a valid IPv4 address: {exc}") from None
    if net.prefixlen < MIN_PREFIXLEN:
        raise VipFileError(path, lineno, text, f"mask /{net.prefixlen} is below /{MIN_PREFIXLEN}")
    if net.ip != net.network:
        raise VipFileError(path, lineno, text, f"host bits set (the subnet is {net.cidr})")
    if not is_unicast(int(net.network)) or not is_unicast(int(net.broadcast or net.network)):
        raise VipFileError(path, lineno, text, "not a unicast address")
    return net


def _lines(data: bytes) -> Iterator[tuple[int, str]]:
    """(line number, entry text) for each line holding an entry: LF or CRLF ends a line, `#`
    starts a comment, spaces and tabs around the entry do not count."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        entry = line.split(b"#", 1)[0].strip(b" \t")
        if entry:
            yield lineno, decode(entry)


def parse_vips(text: str | bytes, path: str) -> tuple[str, ...]:
    """Every VIP the file names, in file order; raise VipFileError on the first bad line."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    seen: dict[tuple[int, int], tuple[int, str]] = {}  # (version, address) -> where
    vips: list[str] = []
    for lineno, line in _lines(data):
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
        for lineno, line in _lines(_read(path)):
            entry = _DOTTED.fullmatch(line) or _COLONS.fullmatch(line)
            if entry and netaddr.IPAddress(ip) in netaddr.IPNetwork(line):
                return VipFileError(path, lineno, line, reason)
    except (VipFileError, netaddr.AddrFormatError, ValueError):
        pass  # changed or gone since it was loaded: the error still names the file
    return VipFileError(path, None, ip, reason)
