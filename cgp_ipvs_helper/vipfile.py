"""The VIP list file (/etc/sysconfig/vipaddrs): parsed whole, or rejected whole.

One entry per line: an IPv4 address, or a subnet a.b.c.d/m (m >= 24) standing for every address
in it. `#` starts a comment. A bad line is reported with file, line number and text, and nothing
is returned, so a half-valid file can never be half applied.

The file is read as bytes and split on LF (CRLF) only: a form feed, vertical tab, NEL or U+2028
in a comment is part of the comment, not a line break that would turn the rest into an entry and
shift every later line number. A comment may hold any bytes; an entry is ASCII, and one that is
not is an error naming its line, with the text shown escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import netaddr

from .errors import VipFileError
from .shown import decode

MIN_PREFIXLEN = 24
_DOTTED = re.compile(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", re.ASCII)


def is_unicast(ip: int) -> bool:
    """Neither 0.0.0.0/8, loopback, multicast, class E nor broadcast: a host can hold it."""
    first = ip >> 24
    return first not in (0, 127) and first < 224


def _entry(path: str, lineno: int, text: str) -> netaddr.IPNetwork:
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
    seen: dict[int, tuple[int, str]] = {}
    vips: list[str] = []
    for lineno, line in _lines(data):
        net = _entry(path, lineno, line)
        for addr in net:
            first = seen.get(int(addr))
            if first is not None:
                raise VipFileError(
                    path, lineno, line, f"{addr} overlaps line {first[0]} ({first[1]})"
                )
            seen[int(addr)] = (lineno, line)
            vips.append(str(addr))
    return tuple(vips)


def load_vips(path: str) -> tuple[str, ...]:
    """Read and parse `path`; an unreadable file is a VipFileError too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise VipFileError(path, None, "", f"cannot read: {exc.strerror or exc}") from None
    return parse_vips(data, path)
